"""ReIDModule pieces: schedule, loss terms per loss config, metric wrapper, distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from reid_attn.losses import CircleSoftmax
from reid_attn.metrics import ReIDMetric, compute_distance, evaluate_rank
from reid_attn.module import ReIDModule, warmup_step_factor


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, 0.1),
        (1, 0.1 + 0.9 / 4),
        (3, 0.1 + 0.9 * 3 / 4),
        (4, 1.0),
        (9, 1.0),
        (10, 0.1),
        (19, 0.1),
        (20, 0.01),
        (100, 0.01),
    ],
)
def test_warmup_step_factor(epoch: int, expected: float) -> None:
    # warm-up over 4 epochs from 0.1, decay x0.1 at epochs 10 and 20
    assert warmup_step_factor(epoch, 4, 0.1, [20, 10], 0.1) == pytest.approx(expected)


def _module(compose_cfg, attention: str, loss: str, num_classes: int = 5) -> ReIDModule:
    cfg = compose_cfg("train", [f"attention={attention}", f"loss={loss}", "output_dir=unused"])
    return ReIDModule(
        num_classes=num_classes,
        **{
            k: OmegaConf.to_container(cfg[k])
            for k in ("model", "loss", "optimizer", "scheduler", "evaluation")
        },
    )


EXPECTED_TERMS = {
    "ce": {"loss_ce", "loss"},
    "ce_tri": {"loss_ce", "loss_triplet", "loss"},
    "joint_circle": {"loss_ce", "loss_triplet", "loss"},
}


@pytest.mark.parametrize("attention", ["none", "se", "eca", "cbam"])
@pytest.mark.parametrize("loss", ["ce", "ce_tri", "joint_circle"])
def test_every_attention_loss_combination_trains_one_step(
    compose_cfg, attention: str, loss: str
) -> None:
    torch.manual_seed(0)
    module = _module(compose_cfg, attention, loss)
    assert (
        module.net.backbone.layer1[0].attn.__class__.__name__
        == {
            "none": "Identity",
            "se": "SqueezeExcite",
            "eca": "EfficientChannelAttention",
            "cbam": "CBAM",
        }[attention]
    )
    assert isinstance(module.net.head.classifier, CircleSoftmax) == (loss == "joint_circle")
    images = torch.randn(8, 3, 64, 32)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    outputs = module.net(images, pids)
    terms = module.compute_losses(outputs, pids)
    assert set(terms) == EXPECTED_TERMS[loss]
    parts = sum(v for k, v in terms.items() if k != "loss")
    assert torch.allclose(terms["loss"], parts)
    terms["loss"].backward()
    grad = module.net.backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_attention_cbam_bn_from_config_trains_its_spatial_bn(compose_cfg) -> None:
    from reid_attn.models.attention import CBAMSpatialBN

    torch.manual_seed(0)
    module = _module(compose_cfg, "cbam_bn", "joint_circle")
    blocks = module.net.backbone.bottlenecks()
    assert all(type(b.attn) is CBAMSpatialBN for b in blocks) and len(blocks) == 16
    bn = blocks[0].attn.spatial.norm
    assert (bn.eps, bn.momentum) == (1e-5, 0.01)  # conf/attention/cbam_bn.yaml
    module.train()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = module.compute_losses(module.net(torch.randn(8, 3, 64, 32), pids), pids)
    terms["loss"].backward()
    for block in blocks:
        norm = block.attn.spatial.norm
        assert norm.num_batches_tracked.item() == 1 and norm.running_mean.item() != 0.0
        assert norm.weight.grad is not None and norm.weight.grad.abs().item() > 0


def test_optimizer_and_schedule_come_from_config(compose_cfg) -> None:
    module = _module(compose_cfg, "none", "ce")
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["weight_decay"] == pytest.approx(5e-4)
    # LambdaLR already applied the epoch-0 warm-up factor 0.1 to the default lr 1e-3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


@pytest.mark.numerics
def test_compute_distance_matches_cdist() -> None:
    torch.manual_seed(0)
    q, g = torch.randn(7, 16), torch.randn(11, 16)
    assert torch.allclose(compute_distance(q, g), torch.cdist(q, g).pow(2), atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(q[:, None], g[None], dim=2)
    assert torch.allclose(compute_distance(q, g, "cosine"), 1 - cos, atol=1e-5)
    with pytest.raises(ValueError, match="euclidean, cosine"):
        compute_distance(q, g, "manhattan")


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_reid_metric_equals_evaluate_rank(distance: str) -> None:
    rng = np.random.default_rng(0)
    num_q, num_g = 12, 40
    pids = torch.as_tensor(rng.integers(0, 6, num_q + num_g))
    camids = torch.as_tensor(rng.integers(0, 3, num_q + num_g))
    feats = torch.as_tensor(rng.normal(size=(num_q + num_g, 8)), dtype=torch.float32)
    is_query = torch.arange(num_q + num_g) < num_q
    metric = ReIDMetric(distance, max_rank=10)
    for chunk in torch.arange(num_q + num_g).split(9):  # several batches, mixed q/g
        metric.update(feats[chunk], pids[chunk], camids[chunk], is_query[chunk])
    result = metric.compute()
    dist = compute_distance(feats[:num_q], feats[num_q:], distance)
    ref = evaluate_rank(dist, pids[:num_q], pids[num_q:], camids[:num_q], camids[num_q:], 10)
    assert result["mAP"].item() == pytest.approx(ref["mAP"])
    assert result["mINP"].item() == pytest.approx(ref["mINP"])
    assert result["rank1"].item() == pytest.approx(ref["cmc"][0])
    assert result["rank5"].item() == pytest.approx(ref["cmc"][4])
    assert result["rank10"].item() == pytest.approx(ref["cmc"][9])
    np.testing.assert_allclose(result["cmc"].numpy(), ref["cmc"])


def test_reid_metric_rejects_unknown_distance() -> None:
    with pytest.raises(ValueError, match="valid names: euclidean, cosine"):
        ReIDMetric("hamming")
