"""Tests for reid_attn.losses with hand-computed and brute-force reference values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reid_attn.losses import CircleSoftmax, cross_entropy_loss, pairwise_circle_loss, triplet_loss


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_manual_log_softmax(eps: float) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    targets = torch.tensor([0, 4, 2, 2, 1, 3])
    num_classes = logits.shape[1]
    log_p = logits - logits.logsumexp(dim=1, keepdim=True)
    # target distribution: (1 - eps) on the true class + eps / K spread on every class
    q = torch.full_like(log_p, eps / num_classes)
    q[torch.arange(6), targets] += 1.0 - eps
    expected = -(q * log_p).sum(dim=1).mean()
    got = cross_entropy_loss(logits, targets, label_smoothing=eps)
    assert got.dim() == 0
    torch.testing.assert_close(got, expected)


def test_cross_entropy_hand_value() -> None:
    # Two classes, logits (0, 0): p = (0.5, 0.5) -> loss = log 2 whatever the smoothing.
    # Logits (log 3, 0): p = (0.75, 0.25); eps = 0.2 -> q = (0.9, 0.1) for target 0.
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    expected = -(0.9 * math.log(0.75) + 0.1 * math.log(0.25))
    got = cross_entropy_loss(logits, torch.tensor([0]), label_smoothing=0.2)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_cross_entropy_rejects_bad_smoothing(eps: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy_loss(torch.zeros(2, 3), torch.tensor([0, 1]), label_smoothing=eps)


# --------------------------------------------------------------------------- triplet


def _triplet_reference(
    features: torch.Tensor, labels: torch.Tensor, margin: float, soft: bool
) -> torch.Tensor:
    """Loop over anchors with explicit norms of differences."""
    losses = []
    n = features.shape[0]
    for a in range(n):
        pos = [
            torch.linalg.norm(features[a] - features[j])
            for j in range(n)
            if j != a and labels[j] == labels[a]
        ]
        neg = [
            torch.linalg.norm(features[a] - features[j]) for j in range(n) if labels[j] != labels[a]
        ]
        if not pos or not neg:
            continue
        d_ap = torch.stack(pos).max()
        d_an = torch.stack(neg).min()
        losses.append(F.softplus(d_ap - d_an) if soft else F.relu(d_ap - d_an + margin))
    return torch.stack(losses).mean()


def test_triplet_hand_built_1d() -> None:
    # 1-D points x = (0, 2 | 3, 6) with labels (0, 0 | 1, 1).
    # anchor x=0: d_ap = |0-2| = 2, d_an = min(|0-3|, |0-6|) = 3  -> d_ap - d_an = -1
    # anchor x=2: d_ap = 2,         d_an = min(1, 4) = 1           -> +1
    # anchor x=3: d_ap = |3-6| = 3, d_an = min(3, 1) = 1           -> +2
    # anchor x=6: d_ap = 3,         d_an = min(6, 4) = 4           -> -1
    x = torch.tensor([[0.0], [2.0], [3.0], [6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # margin 0.3: relu(-0.7) + relu(1.3) + relu(2.3) + relu(-0.7) = 3.6 -> mean 0.9
    assert triplet_loss(x, y, margin=0.3).item() == pytest.approx(0.9, abs=1e-6)
    # margin 1.5: 0.5 + 2.5 + 3.5 + 0.5 = 7 -> mean 1.75
    assert triplet_loss(x, y, margin=1.5).item() == pytest.approx(1.75, abs=1e-6)
    # soft margin: softplus(-1) + softplus(1) + softplus(2) + softplus(-1), / 4
    soft = (2 * _softplus(-1.0) + _softplus(1.0) + _softplus(2.0)) / 4
    assert triplet_loss(x, y, soft_margin=True).item() == pytest.approx(soft, abs=1e-6)


def test_triplet_hand_built_2d() -> None:
    # Rectangle 3 x 4: a=(0,0) b=(3,4) label 0; c=(0,4) d=(3,0) label 1.
    # |ab| = |cd| = 5 (diagonals), |ad| = |bc| = 3, |ac| = |bd| = 4.
    # every anchor: d_ap = 5 (its diagonal partner), d_an = min(3, 4) = 3 -> d_ap - d_an = 2.
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0], [3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    assert triplet_loss(x, y, margin=0.3).item() == pytest.approx(2.3, abs=1e-6)
    assert triplet_loss(x, y, margin=0.0).item() == pytest.approx(2.0, abs=1e-6)
    assert triplet_loss(x, y, soft_margin=True).item() == pytest.approx(_softplus(2.0), abs=1e-6)


def test_triplet_skips_anchors_without_positive() -> None:
    # labels (0, 0, 1, 2): anchors 2 and 3 have no positive and are ignored.
    # anchor x=0: d_ap = 1, d_an = min(5, 10) = 5 ; anchor x=1: d_ap = 1, d_an = 4
    x = torch.tensor([[0.0], [1.0], [5.0], [10.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2])
    # margin 4.5: relu(1 - 5 + 4.5) = 0.5 and relu(1 - 4 + 4.5) = 1.5 -> mean 1.0
    assert triplet_loss(x, y, margin=4.5).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("soft", [False, True])
def test_triplet_matches_bruteforce_on_random_data(soft: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (16,), generator=gen)
    y[-1] = 99  # one singleton identity: no positives
    got = triplet_loss(x, y, margin=0.5, soft_margin=soft)
    ref = _triplet_reference(x, y, margin=0.5, soft=soft)
    torch.testing.assert_close(got, ref)
    (g_got,) = torch.autograd.grad(got, x)
    (g_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(g_got, g_ref)


@pytest.mark.parametrize("soft", [False, True])
def test_triplet_gradients_finite_with_duplicate_points(soft: bool) -> None:
    base = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.5, -1.0], [0.5, -1.0]])
    x = base.clone().requires_grad_(True)
    # duplicates both inside a class and across classes (zero positive and negative distance)
    y = torch.tensor([0, 0, 1, 1, 1])
    loss = triplet_loss(x, y, margin=0.3, soft_margin=soft)
    loss.backward()
    assert torch.isfinite(loss)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_triplet_no_valid_anchor_returns_attached_zero() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    loss = triplet_loss(x, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


def test_triplet_rejects_negative_margin() -> None:
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(torch.zeros(2, 2), torch.tensor([0, 1]), margin=-0.1)


# --------------------------------------------------------------------------- pairwise circle


def _circle_reference(
    features: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    gamma: float,
    detach_alpha: bool = True,
) -> torch.Tensor:
    """Per-anchor loop of the paper's formula.

    L = log(1 + sum_j exp(gamma a_n_j (s_n_j - d_n)) * sum_i exp(-gamma a_p_i (s_p_i - d_p)))
    """
    n = features.shape[0]
    losses = []
    for a in range(n):
        sum_n = features.new_zeros(())
        sum_p = features.new_zeros(())
        has_p = has_n = False
        for j in range(n):
            if j == a:
                continue
            s = features[a] @ features[j] / (features[a].norm() * features[j].norm())
            s_w = s.detach() if detach_alpha else s
            if labels[j] == labels[a]:
                alpha = torch.clamp(1 + margin - s_w, min=0)
                sum_p = sum_p + torch.exp(-gamma * alpha * (s - (1 - margin)))
                has_p = True
            else:
                alpha = torch.clamp(s_w + margin, min=0)
                sum_n = sum_n + torch.exp(gamma * alpha * (s - margin))
                has_n = True
        if has_p and has_n:
            losses.append(torch.log(1 + sum_n * sum_p))
    return torch.stack(losses).mean()


@pytest.mark.parametrize(("margin", "gamma"), [(0.25, 128.0), (0.4, 16.0), (0.0, 4.0)])
def test_pairwise_circle_matches_paper_formula(margin: float, gamma: float) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 5])  # 4 and 5 are singletons
    got = pairwise_circle_loss(x, y, margin=margin, gamma=gamma)
    ref = _circle_reference(x, y, margin, gamma)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_pairwise_circle_gradient_does_not_flow_through_alpha() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    margin, gamma = 0.25, 8.0
    (g_got,) = torch.autograd.grad(pairwise_circle_loss(x, y, margin, gamma), x)
    (g_ref,) = torch.autograd.grad(_circle_reference(x, y, margin, gamma), x)
    (g_full,) = torch.autograd.grad(_circle_reference(x, y, margin, gamma, detach_alpha=False), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-7, atol=1e-9)
    # sanity: letting gradient through alpha gives a clearly different gradient
    assert (g_got - g_full).abs().max() > 1e-3


def test_pairwise_circle_alpha_constant_numerical_gradient() -> None:
    # Freeze alpha at the values of x0 and check autograd against central differences of
    # the loss with those frozen alphas: d/dx L(x; alpha(x0)) at x0.
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    margin, gamma = 0.25, 4.0
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(6, dtype=torch.bool)
    neg = ~same

    def sim(x: torch.Tensor) -> torch.Tensor:
        u = x / x.norm(dim=1, keepdim=True)
        return u @ u.t()

    s0 = sim(x0)
    a_p = (1 + margin - s0).clamp_min(0)
    a_n = (s0 + margin).clamp_min(0)

    def frozen_loss(x: torch.Tensor) -> float:
        s = sim(x)
        ep = torch.where(pos, torch.exp(-gamma * a_p * (s - 1 + margin)), 0.0).sum(1)
        en = torch.where(neg, torch.exp(gamma * a_n * (s - margin)), 0.0).sum(1)
        return torch.log1p(ep * en).mean().item()

    x = x0.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(pairwise_circle_loss(x, y, margin, gamma), x)
    g_num = torch.zeros_like(x0)
    h = 1e-6
    for idx in range(x0.numel()):
        d = torch.zeros(x0.numel(), dtype=torch.float64)
        d[idx] = h
        d = d.view_as(x0)
        g_num.view(-1)[idx] = (frozen_loss(x0 + d) - frozen_loss(x0 - d)) / (2 * h)
    torch.testing.assert_close(g_auto, g_num, rtol=1e-5, atol=1e-7)


def test_pairwise_circle_no_valid_anchor_and_bad_args() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    loss = pairwise_circle_loss(x, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="gamma"):
        pairwise_circle_loss(x, torch.tensor([0, 0, 1]), gamma=0)
    with pytest.raises(ValueError, match="margin"):
        pairwise_circle_loss(x, torch.tensor([0, 0, 1]), margin=1.0)


def test_pairwise_circle_gradients_finite_with_duplicates_float32() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = pairwise_circle_loss(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- CircleSoftmax


def test_circle_softmax_weight_shape_and_repr() -> None:
    head = CircleSoftmax(16, 7)
    assert isinstance(head.weight, torch.nn.Parameter)
    assert head.weight.shape == (7, 16)
    assert "num_classes=7" in repr(head)


def test_circle_softmax_without_targets_is_scaled_cosine() -> None:
    torch.manual_seed(5)
    head = CircleSoftmax(4, 3, scale=10.0, margin=0.3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    w = head.weight.detach()
    expected = torch.empty(5, 3, dtype=torch.float64)
    for i in range(5):
        for k in range(3):
            expected[i, k] = 10.0 * (x[i] @ w[k]) / (x[i].norm() * w[k].norm())
    out = head(x)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, expected)


def test_circle_softmax_with_targets_hand_example() -> None:
    # Identity prototypes: w_0 = (1, 0), w_1 = (0, 1). scale = 10, m = 0.25
    # => delta_p = 0.75, delta_n = 0.25.
    head = CircleSoftmax(2, 2, scale=10.0, margin=0.25).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(2, dtype=torch.float64))
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([0, 1, 0])
    r = math.sqrt(0.5)
    expected = torch.tensor(
        [
            # x=(0.6, 0.8), target 0: cos = (0.6, 0.8)
            #   target:  alpha_p = 1.25 - 0.6 = 0.65; 10 * 0.65 * (0.6 - 0.75) = -0.975
            #   other:   alpha_n = 0.8 + 0.25 = 1.05; 10 * 1.05 * (0.8 - 0.25) = 5.775
            [-0.975, 5.775],
            # x=(1, 0), target 1: cos = (1, 0)
            #   other:   alpha_n = 1.25;  10 * 1.25 * (1 - 0.25) = 9.375
            #   target:  alpha_p = 1.25;  10 * 1.25 * (0 - 0.75) = -9.375
            [9.375, -9.375],
            # x=(r, -r), target 0: cos = (r, -r), r = 0.7071
            #   target:  10 * (1.25 - r) * (r - 0.75) = -0.2329
            #   other:   alpha_n = max(-r + 0.25, 0) = 0 -> logit 0
            [10 * (1.25 - r) * (r - 0.75), 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(head(x, t), expected)


def test_circle_softmax_gradient_treats_alpha_as_constant() -> None:
    torch.manual_seed(6)
    head = CircleSoftmax(4, 3, scale=8.0, margin=0.35).double()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 1, 0])
    (g_got,) = torch.autograd.grad(head(x, t).sum(), x)
    # d(logit)/d(cos) must be scale * alpha (alpha evaluated but not differentiated)
    cos = F.linear(F.normalize(x, dim=1), F.normalize(head.weight.detach(), dim=1))
    onehot = F.one_hot(t, 3).bool()
    alpha = torch.where(onehot, (1.35 - cos).clamp_min(0), (cos + 0.35).clamp_min(0))
    (g_ref,) = torch.autograd.grad((8.0 * alpha.detach() * cos).sum(), x)
    torch.testing.assert_close(g_got, g_ref)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"margin": 1.0}, "margin"),
        ({"margin": -0.05}, "margin"),
    ],
)
def test_circle_softmax_rejects_bad_args(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CircleSoftmax(8, 4, **kwargs)
