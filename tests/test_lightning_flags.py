"""Lightning's own debugging flags, as plain overrides of a run and of a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_train_cli
from reid_attn.data import ReIDDataModule
from reid_attn.inference import load_module
from reid_attn.metrics import METRIC_NAMES, compute_distance, evaluate_rank
from reid_attn.train import train


def _global_step(run_dir) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def _check_metrics_file(run_dir, results: dict) -> None:
    written = json.loads((run_dir / "metrics.json").read_text())
    for key in METRIC_NAMES:
        assert 0.0 <= written[key] <= 1.0
        assert written[key] == pytest.approx(results[key])


def test_fast_dev_run_trains_one_batch_and_tests_the_weights_in_memory(
    train_cfg_factory, capsys
) -> None:
    cfg = train_cfg_factory("trainer.fast_dev_run=1", "trainer.max_epochs=5")
    results = train(cfg)
    run_dir = Path(cfg.output_dir)
    _check_metrics_file(run_dir, results)
    assert not (run_dir / "checkpoints").exists()  # fast_dev_run writes no checkpoint
    assert "fast_dev_run, weights in memory" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [
        (["trainer.max_steps=3", "trainer.max_epochs=5"], 3),
        (["trainer.limit_train_batches=1", "trainer.max_epochs=2"], 2),
        (["trainer.overfit_batches=1", "trainer.max_epochs=2"], 2),
    ],
)
def test_step_limits_stop_where_asked_and_write_metrics(
    train_cfg_factory, overrides: list[str], steps: int
) -> None:
    cfg = train_cfg_factory(*overrides)
    results = train(cfg)
    run_dir = Path(cfg.output_dir)
    _check_metrics_file(run_dir, results)
    assert _global_step(run_dir) == steps


def test_limit_val_batches_is_honoured(train_cfg_factory) -> None:
    cfg = train_cfg_factory(
        "trainer.limit_val_batches=0", "trainer.max_epochs=2", "trainer.limit_train_batches=1"
    )
    results = train(cfg)
    run_dir = Path(cfg.output_dir)
    _check_metrics_file(run_dir, results)
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/mAP" not in header  # no validation ran


def test_limit_test_batches_evaluates_the_first_batches_of_query_and_gallery(
    train_cfg_factory,
) -> None:
    """With one test batch, the figures equal an independent evaluation of that batch's
    queries against its gallery images."""
    # one training step: the test is about which batches are evaluated, not what was learned
    cfg = train_cfg_factory(
        "trainer.limit_test_batches=1", "data.eval_batch_size=40", "trainer.limit_train_batches=1"
    )
    results = train(cfg)
    run_dir = Path(cfg.output_dir)
    module = load_module(run_dir / "checkpoints" / "last.ckpt").eval()
    dm = ReIDDataModule(**{**module.hparams.data, "num_workers": 0, "eval_batch_size": 40})
    dm.setup("test")
    images, pids, camids, is_query = next(iter(dm.test_dataloader()))
    is_query = is_query.bool()
    assert 0 < int(is_query.sum()) < len(is_query)  # both kinds in the first batch
    with torch.no_grad():
        features = module(images)
    reference = evaluate_rank(
        compute_distance(features[is_query], features[~is_query], "euclidean"),
        pids[is_query].numpy(),
        pids[~is_query].numpy(),
        camids[is_query].numpy(),
        camids[~is_query].numpy(),
    )
    assert results["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)
    assert results["rank1"] == pytest.approx(float(reference["cmc"][0]), abs=1e-6)
    assert np.allclose(results["cmc"], reference["cmc"], atol=1e-6)


def test_too_small_a_test_limit_says_which_setting_to_raise(train_cfg_factory) -> None:
    cfg = train_cfg_factory(
        "trainer.limit_test_batches=1", "data.eval_batch_size=2", "trainer.limit_train_batches=1"
    )
    with pytest.raises(ValueError, match=r"trainer.limit_test_batches=1 evaluated too few"):
        train(cfg)


def test_fast_dev_run_inside_a_multirun(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train_cli(
        [
            "--multirun",
            "debug=fast",
            "trainer.fast_dev_run=1",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job in ("0", "1"):
        written = json.loads((sweep / job / "metrics.json").read_text())
        assert set(METRIC_NAMES) <= set(written)
