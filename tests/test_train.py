"""End to end: compose real configs, train -> checkpoint -> evaluate, and every bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from reid_attn.config import ConfigError
from reid_attn.data import DatasetError, PKSampler, ReIDDataModule
from reid_attn.data.synthetic import GENERATOR_VERSION
from reid_attn.evaluate import evaluate
from reid_attn.metrics import METRIC_NAMES
from reid_attn.runs.files import CheckpointError, load_checkpoint
from reid_attn.train import train


def test_train_writes_metrics_checkpoints_config_and_logs(trained_run) -> None:
    run_dir, results = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {*METRIC_NAMES, "cmc"}
    for key in METRIC_NAMES:
        assert 0.0 <= metrics[key] <= 1.0
        assert metrics[key] == pytest.approx(results[key])
    assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"]
    assert metrics["rank1"] == metrics["cmc"][0] and len(metrics["cmc"]) == 50
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    assert "attention: cbam" in (run_dir / "config.yaml").read_text()
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in (
        "train/loss_ce_epoch",
        "train/loss_triplet_epoch",
        "train/loss_epoch",
        "val/mAP",
        "test/rank1",
    ):
        assert column in header
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_loads_weights_only_with_plain_hyperparameters(trained_run) -> None:
    run_dir, _ = trained_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["model"]["attention"] == "cbam"
    assert hparams["loss"]["classifier"] == "circle"
    assert hparams["data"]["name"] == "synthetic"
    assert hparams["data"]["synthetic"]["generator_version"] == GENERATOR_VERSION


def test_best_checkpoint_is_weights_only_and_evaluates_last_stays_resumable(
    trained_run, compose_cfg, tmp_path
) -> None:
    """The best-epoch checkpoint drops the optimiser state (a third of last.ckpt's size with
    Adam's two moments) yet evaluates; last.ckpt keeps what a resume restores."""
    run_dir, results = trained_run
    (best_path,) = (run_dir / "checkpoints").glob("best-epoch*.ckpt")
    last_path = run_dir / "checkpoints" / "last.ckpt"
    best = torch.load(best_path, weights_only=True)
    last = torch.load(last_path, weights_only=True)
    assert "optimizer_states" not in best and "lr_schedulers" not in best
    assert last["optimizer_states"] and last["lr_schedulers"] and "loops" in last
    assert best_path.stat().st_size < 0.5 * last_path.stat().st_size
    # one epoch: the best epoch is the last one, so it reproduces the run's test figures
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())
    cfg = compose_cfg("evaluate", [f"ckpt_path={best_path}", f"output_dir={tmp_path}"])
    reloaded = evaluate(cfg)
    assert {k: reloaded[k] for k in METRIC_NAMES} == {k: results[k] for k in METRIC_NAMES}


def test_every_epoch_trains_all_its_batches_and_validates(train_cfg_factory) -> None:
    # The PK sampler's batch count varies by epoch; with debug=fast and seed 0 it is 9, 9, 10, 8
    # (checked below against the sampler itself). Lightning alone would stop epoch 2 after 9
    # batches and skip epoch 3's validation (its index never reaches 9): 35 steps, 3 validations.
    cfg = train_cfg_factory("trainer.max_epochs=4", "seed=0")
    train(cfg)
    run_dir = Path(cfg.output_dir)
    datamodule = ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.setup("fit")
    sampler = PKSampler(
        [pid for _, pid, _ in datamodule.train_items],
        cfg.data.num_identities,
        cfg.data.num_instances,
        seed=cfg.data.seed,
    )
    counts = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        counts.append(len(sampler.rank_batches()))
    assert len(set(counts)) > 1 and min(counts[1:]) < counts[0] < max(counts[1:])
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == sum(counts)
    with open(run_dir / "csv" / "metrics.csv") as file:
        validated = [int(r["epoch"]) for r in csv.DictReader(file) if r.get("val/mAP")]
    assert validated == [0, 1, 2, 3]


def test_run_records_its_machine(trained_run) -> None:
    from reid_attn.config import cpu_has_native_bf16
    from reid_attn.runs.machine import cpu_model

    run_dir, _ = trained_run
    (machine,) = json.loads((run_dir / "machine.json").read_text())
    assert machine["cpu"] == cpu_model() and machine["native_bf16"] == cpu_has_native_bf16()
    assert machine["torch"] == torch.__version__ and machine["cores"] >= 1
    from omegaconf import OmegaConf

    saved_precision = OmegaConf.load(run_dir / "config.yaml").trainer.precision
    assert saved_precision == "auto"  # the config keeps auto; machine.json says what it was
    assert machine["precision"] in ("bf16-mixed", "32-true")


def test_checkpoint_of_another_synthetic_renderer_is_refused(trained_run, compose_cfg, tmp_path):
    run_dir, _ = trained_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["data"]["synthetic"]["generator_version"] = 1
    edited = tmp_path / "old.ckpt"
    torch.save(checkpoint, edited)
    cfg = compose_cfg("evaluate", [f"ckpt_path={edited}", f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="renderer version 1 was asked for"):
        evaluate(cfg)


def test_evaluate_reproduces_training_metrics_exactly(trained_run, compose_cfg, tmp_path) -> None:
    run_dir, results = trained_run
    cfg = compose_cfg(
        "evaluate",
        [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path}"],
    )
    reloaded = evaluate(cfg)
    for key in METRIC_NAMES:
        assert reloaded[key] == results[key]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["none", "se", "eca", "cbam"])
@pytest.mark.parametrize("loss", ["ce", "ce_tri", "joint_circle"])
def test_every_combination_trains_end_to_end(train_cfg_factory, attention, loss) -> None:
    results = train(train_cfg_factory(f"attention={attention}", f"loss={loss}"))
    assert all(0.0 <= results[k] <= 1.0 for k in METRIC_NAMES)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("group", ["attention", "loss", "data", "trainer"])
def test_unknown_group_value_lists_the_choices(compose_cfg, group) -> None:
    with pytest.raises(MissingConfigException) as info:
        compose_cfg("train", [f"{group}=bogus", "output_dir=unused"])
    message = str(info.value)
    assert f"Available options in '{group}'" in message
    expected = {
        "attention": ["cbam", "eca", "none", "se"],
        "loss": ["ce", "ce_tri", "joint_circle"],
        "data": ["market1501", "synthetic"],
        "trainer": ["cpu", "gpu"],
    }[group]
    for option in expected:
        assert option in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.attention=foo", "allowed values: none, se, eca, cbam"),
        ("loss.classifier=arc", "allowed values: linear, circle"),
        ("data.name=cuhk03", "allowed values: synthetic, market1501"),
        ("evaluation.distance=l1", "allowed values: euclidean, cosine"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is out of range"),
        ("loss.triplet_margin=-0.3", "loss.triplet_margin=-0.3 is out of range"),
        ("model.last_stride=3", "allowed values: 1, 2"),
        ("loss.ce_weight=0", "at least one of"),
        ("data.num_instances=0", "data.num_instances=0 is out of range"),
    ],
)
def test_bad_values_fail_before_any_work(train_cfg_factory, override, expected) -> None:
    extra = ["loss.triplet_weight=0"] if "ce_weight" in override else []
    cfg = train_cfg_factory(override, *extra)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        train(cfg)
    assert not (Path(cfg.output_dir) / "checkpoints").exists()


def test_missing_dataset_root_names_the_expected_layout(train_cfg_factory, tmp_path) -> None:
    cfg = train_cfg_factory("data=market1501", f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="does not exist") as info:
        train(cfg)
    assert "bounding_box_train" in str(info.value) and "query" in str(info.value)


def test_non_market_folder_is_rejected(train_cfg_factory, tmp_path) -> None:
    (tmp_path / "images").mkdir()
    cfg = train_cfg_factory("data=market1501", f"data.root={tmp_path}")
    with pytest.raises(
        DatasetError, match="is not a market1501 folder: missing bounding_box_train"
    ):
        train(cfg)


def test_too_many_identities_per_batch(train_cfg_factory) -> None:
    with pytest.raises(ValueError, match="at least num_identities=50"):
        train(train_cfg_factory("data.num_identities=50"))


def test_checkpoint_errors(trained_run, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    run_dir, _ = trained_run
    data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, foreign)
    with pytest.raises(CheckpointError, match="not a reid-attn checkpoint"):
        load_checkpoint(foreign)


def test_checkpoint_of_another_attention_type_is_named(trained_run, compose_cfg, tmp_path):
    run_dir, _ = trained_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"]["attention"] = "se"
    checkpoint["hyper_parameters"]["model"]["attention_kwargs"] = {"reduction": 16}
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    cfg = compose_cfg("evaluate", [f"ckpt_path={edited}", f"output_dir={tmp_path}"])
    with pytest.raises(
        ValueError,
        match=r"does not match the model its hyper-parameters describe: the checkpoint's "
        r"weights have attention=cbam, the model has attention=se$",
    ):
        evaluate(cfg)


def test_checkpoint_of_another_shape_names_the_tensors(trained_run, compose_cfg, tmp_path):
    run_dir, _ = trained_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    classes = checkpoint["hyper_parameters"]["num_classes"]
    checkpoint["hyper_parameters"]["num_classes"] = classes + 1
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    cfg = compose_cfg("evaluate", [f"ckpt_path={edited}", f"output_dir={tmp_path}"])
    reshaped = [k for k, v in checkpoint["state_dict"].items() if v.shape[:1] == (classes,)]
    with pytest.raises(ValueError) as info:
        evaluate(cfg)
    assert str(info.value).endswith(
        f"{len(reshaped)} of another shape (e.g. {sorted(reshaped)[0]}: ({classes}, 2048) in "
        f"the checkpoint, ({classes + 1}, 2048) in the model)"
    )


def test_command_line_error_is_one_clear_line(tmp_path) -> None:
    env = {**os.environ, "REID_ATTN_CACHE": str(tmp_path / "data")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reid_attn.train",
            "model.attention=foo",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "error: model.attention (attention=...)='foo' is not valid" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
