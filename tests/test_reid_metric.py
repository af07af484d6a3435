"""ReIDMetric: DDP de-duplication, re-ranking, flip TTA, and the metric inside Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from reid_attn.evaluate import evaluate, evaluation_overrides
from reid_attn.metrics import METRIC_NAMES, ReIDMetric, compute_distance, evaluate_rank, re_ranking
from reid_attn.module import ReIDModule, eval_sample_order


def _retrieval_set(seed: int, n: int = 60, num_q: int = 15, dim: int = 8, ids: int = 6):
    """Identity-clustered features, pids, camids, is_query (queries first), as tensors."""
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, ids, n)
    centres = rng.standard_normal((ids, dim))
    feats = centres[pids] + 0.8 * rng.standard_normal((n, dim))
    return (
        torch.as_tensor(feats, dtype=torch.float32),
        torch.as_tensor(pids),
        torch.as_tensor(rng.integers(0, 3, n)),
        torch.arange(n) < num_q,
    )


def _direct(feats, pids, camids, is_query, distance="euclidean", max_rank=50, rerank=None):
    """evaluate_rank on the distances computed here (re-ranked with ``rerank=(k1, k2, lam)``)."""
    q, g = feats[is_query], feats[~is_query]
    distmat = compute_distance(q, g, distance)
    if rerank is not None:
        qq, gg = compute_distance(q, q, distance), compute_distance(g, g, distance)
        distmat = re_ranking(distmat, qq, gg, *rerank)
    return evaluate_rank(
        distmat, pids[is_query], pids[~is_query], camids[is_query], camids[~is_query], max_rank
    )


def _assert_result(result: dict, ref: dict) -> None:
    assert result["mAP"].item() == pytest.approx(ref["mAP"], abs=1e-12)
    assert result["mINP"].item() == pytest.approx(ref["mINP"], abs=1e-12)
    np.testing.assert_allclose(result["cmc"].numpy(), ref["cmc"], atol=1e-12)
    assert result["rank1"].item() == pytest.approx(ref["cmc"][0])
    assert result["rank5"].item() == pytest.approx(ref["cmc"][4])
    assert result["rank10"].item() == pytest.approx(ref["cmc"][9])


# ------------------------------------------------------------------ sample order and DDP


def test_eval_sample_order_rule() -> None:
    data = TensorDataset(torch.arange(5))
    assert eval_sample_order(DataLoader(data, batch_size=2)).tolist() == [0, 1, 2, 3, 4]
    # DistributedSampler pads 5 items to 6 with item 0 again; rank r takes every 2nd from r.
    for rank, expected in ((0, [0, 2, 4]), (1, [1, 3, 0])):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False)
        loader = DataLoader(data, batch_size=2, sampler=sampler)
        assert eval_sample_order(loader).tolist() == expected
        assert eval_sample_order([loader]).tolist() == expected
    assert eval_sample_order(DataLoader(data, batch_size=2, sampler=RandomSampler(data))) is None
    assert eval_sample_order(DataLoader(data, batch_sampler=[[0, 1], [2, 3, 4]])) is None
    two = [DataLoader(data, batch_size=2), DataLoader(data, batch_size=2)]
    assert eval_sample_order(two) is None
    assert isinstance(DataLoader(data).sampler, SequentialSampler)


def _rank_shares(n: int, world: int) -> list[torch.Tensor]:
    data = TensorDataset(torch.arange(n))
    return [
        torch.as_tensor(list(DistributedSampler(data, world, r, shuffle=False)))
        for r in range(world)
    ]


def _fill(metric: ReIDMetric, data, order: torch.Tensor, batch: int, with_indices: bool):
    feats, pids, camids, is_query = data
    for idx in order.split(batch):
        indices = idx if with_indices else None
        metric.update(feats[idx], pids[idx], camids[idx], is_query[idx], indices)


@pytest.mark.parametrize("world", [2, 3])
def test_padded_ddp_shares_are_deduplicated(world: int) -> None:
    data = _retrieval_set(0, n=61)  # 61 items: every world size pads
    ref = _direct(*data)
    metrics = [ReIDMetric() for _ in range(world)]
    shares = _rank_shares(61, world)
    assert sum(len(s) for s in shares) > 61  # padded duplicates exist
    for metric, share in zip(metrics, shares, strict=True):
        _fill(metric, data, share, batch=7, with_indices=True)
    merged = metrics[-1]
    for other in metrics[:-1]:  # as gathered: the states concatenated in any rank order
        merged.merge_state(other)
    _assert_result(merged.compute(), ref)

    # Without indices the padded duplicates are counted and the result changes.
    plain = [ReIDMetric() for _ in range(world)]
    for metric, share in zip(plain, shares, strict=True):
        _fill(metric, data, share, batch=7, with_indices=False)
    for other in plain[1:]:
        plain[0].merge_state(other)
    assert plain[0].compute()["mAP"].item() != pytest.approx(ref["mAP"], abs=1e-9)


def test_every_rank_seeing_every_item_counts_each_once() -> None:
    # A loader without a DistributedSampler: each process evaluates the whole set.
    data = _retrieval_set(1)
    a, b = ReIDMetric(), ReIDMetric()
    _fill(a, data, torch.arange(60), batch=16, with_indices=True)
    _fill(b, data, torch.arange(60), batch=9, with_indices=True)
    a.merge_state(b)
    _assert_result(a.compute(), _direct(*data))


def test_indices_must_be_given_for_all_batches() -> None:
    feats, pids, camids, is_query = _retrieval_set(2)
    metric = ReIDMetric()
    metric.update(feats[:30], pids[:30], camids[:30], is_query[:30], torch.arange(30))
    metric.update(feats[30:], pids[30:], camids[30:], is_query[30:])
    with pytest.raises(ValueError, match="30 indices for 60 samples"):
        metric.compute()


# One process of a 2-process gloo group: only torch and reid_attn.metrics are imported.
_DDP_WORKER = """
import json, sys
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler
from reid_attn.metrics import ReIDMetric

rank, world, store, out, data_file = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
feats, pids, camids, is_query = torch.load(data_file)
share = torch.as_tensor(list(DistributedSampler(range(len(pids)), world, rank, shuffle=False)))
metric = ReIDMetric(rerank=True, rerank_k1=6, rerank_k2=3)
for idx in share.split(5):
    metric.update(feats[idx], pids[idx], camids[idx], is_query[idx], idx)
result = metric.compute()  # torchmetrics gathers the states of all processes here
with open(out, "w") as f:
    json.dump({k: result[k].tolist() for k in ("mAP", "mINP", "cmc")}, f)
dist.destroy_process_group()
"""


@pytest.mark.slow  # two fresh Python processes (~5-15 s); the merge_state tests above are fast
def test_two_process_gloo_sync_equals_single_process(tmp_path: Path) -> None:
    data = _retrieval_set(3, n=47)  # 47 items over 2 processes: one padded duplicate
    torch.save(data, tmp_path / "data.pt")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DDP_WORKER,
                str(rank),
                "2",
                str(tmp_path / "store"),
                str(tmp_path / f"rank{rank}.json"),
                str(tmp_path / "data.pt"),
            ]
        )
        for rank in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    ref = _direct(*data, rerank=(6, 3, 0.3))
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
        assert got["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)
        np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-12)


# ------------------------------------------------------------------ re-ranking and distance


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_rerank_flag_gives_the_reranked_value(distance: str) -> None:
    data = _retrieval_set(4, n=80, num_q=20)
    metric = ReIDMetric(distance, max_rank=10, rerank=True, rerank_k1=8, rerank_k2=3)
    _fill(metric, data, torch.arange(80), batch=11, with_indices=False)
    result = metric.compute()
    _assert_result(result, _direct(*data, distance, 10, rerank=(8, 3, 0.3)))
    plain = _direct(*data, distance, 10)
    assert result["mAP"].item() != pytest.approx(plain["mAP"], abs=1e-9)


def test_metric_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="k1 must be a positive integer"):
        ReIDMetric(rerank=True, rerank_k1=0)
    with pytest.raises(ValueError, match=r"lambda_value must lie in \[0, 1\]"):
        ReIDMetric(rerank_lambda=-0.1)
    with pytest.raises(ValueError, match="max_rank must be a positive integer"):
        ReIDMetric(max_rank=0)


# ------------------------------------------------------------------ the module


@pytest.fixture(scope="module")
def module() -> ReIDModule:
    """One small-input ReIDModule (plain ResNet50, CE) built from the real config with flip
    and re-ranking switched on; tests switch them off on it where needed."""
    from conftest import compose_config

    overrides = ["evaluation.flip=true", "evaluation.rerank=true", "evaluation.rerank_k1=5"]
    cfg = compose_config("train", ["attention=none", "loss=ce", "output_dir=unused", *overrides])
    sections = ("model", "loss", "optimizer", "scheduler", "evaluation")
    torch.manual_seed(0)
    return ReIDModule(num_classes=4, **{k: OmegaConf.to_container(cfg[k]) for k in sections})


def test_evaluation_config_reaches_the_metrics(module: ReIDModule) -> None:
    assert module.flip is True
    for metric in (module.val_metric, module.test_metric):
        assert metric.rerank is True
        assert (metric.rerank_k1, metric.rerank_k2, metric.rerank_lambda) == (5, 6, 0.3)
        assert (metric.distance, metric.max_rank) == ("euclidean", 50)


def test_flip_embedding_is_the_mean_of_image_and_mirror(module: ReIDModule) -> None:
    module.eval()
    images = torch.randn(3, 3, 64, 32)
    mirrored = images[..., torch.arange(31, -1, -1)]  # width reversed by hand
    with torch.no_grad():
        plain, flipped = module.net.embed(images), module.net.embed(mirrored)
        got = module.embed_for_eval(images)
        module.flip = False
        unflipped = module.embed_for_eval(images)
        module.flip = True
    torch.testing.assert_close(got, (plain + flipped) / 2)
    assert not torch.allclose(got, plain, atol=1e-4)
    torch.testing.assert_close(unflipped, plain)


def _fake_loader(seed: int = 0, n: int = 26, num_q: int = 8) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    pids = torch.arange(n) % 4
    images = torch.randn(n, 3, 64, 32, generator=gen) + pids[:, None, None, None] * 0.5
    camids = torch.arange(n) % 3
    is_query = (torch.arange(n) < num_q).long()
    return DataLoader(TensorDataset(images, pids, camids, is_query), batch_size=5)


@pytest.mark.parametrize("tta_and_rerank", [False, True])
def test_metric_in_a_lightning_test_loop_equals_evaluate_rank(
    module: ReIDModule, tta_and_rerank: bool
) -> None:
    module.flip = tta_and_rerank
    module.test_metric = ReIDMetric(rerank=tta_and_rerank, rerank_k1=5)
    loader = _fake_loader()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.test(module, dataloaders=loader, verbose=False)
    finally:
        module.flip = True
    assert module._eval_order is not None and module._eval_seen == 26  # indices were passed

    images, pids, camids, is_query = loader.dataset.tensors
    module.eval()
    with torch.no_grad():
        feats = module.net.embed(images)
        if tta_and_rerank:
            feats = (feats + module.net.embed(images.flip(3))) / 2
    rerank = (5, 6, 0.3) if tta_and_rerank else None
    ref = _direct(feats, pids, camids, is_query.bool(), rerank=rerank)
    got = module.test_results
    assert got["mAP"] == pytest.approx(ref["mAP"], abs=1e-9)
    assert got["mINP"] == pytest.approx(ref["mINP"], abs=1e-9)
    np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-9)
    assert got["rank1"] == pytest.approx(ref["cmc"][0], abs=1e-9)


# ------------------------------------------------------------------ python -m reid_attn.evaluate


def test_evaluate_overrides_come_from_the_command_line(compose_cfg) -> None:
    cfg = compose_cfg("evaluate", ["ckpt_path=x.ckpt", "output_dir=unused"])
    assert evaluation_overrides(cfg) == {}
    cfg = compose_cfg(
        "evaluate",
        [
            "ckpt_path=x.ckpt",
            "output_dir=unused",
            "rerank=true",
            "flip=false",
            "evaluation.rerank_k1=30",
            "evaluation.distance=cosine",
        ],
    )
    assert evaluation_overrides(cfg) == {
        "rerank": True,
        "flip": False,
        "rerank_k1": 30,
        "distance": "cosine",
    }


def test_evaluate_with_rerank_and_flip(trained_run, compose_cfg, tmp_path) -> None:
    run_dir, results = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(
        "evaluate", [f"ckpt_path={ckpt}", f"output_dir={tmp_path}", "rerank=true", "flip=true"]
    )
    reranked = evaluate(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written) == {*METRIC_NAMES, "cmc"}
    for key in METRIC_NAMES:
        assert 0.0 <= written[key] <= 1.0
        assert written[key] == reranked[key]
    assert reranked["mAP"] != results["mAP"]
