"""Reliability: resume after SIGKILL, determinism, atomic checkpoints, new-run and resume
rules, a clear error for each bad input, and DDP on the CPU.

The slow tests train through the real command line (``python -m reid_attn.train``) in
subprocesses, on a synthetic set of 7 training identities x 4 images (4 PK batches an epoch).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from conftest import make_loss_nan_at_step, stand_in_trainer
from reid_attn.callbacks import SeedEachEpoch
from reid_attn.config import ConfigError, validate_sampling
from reid_attn.data import PKSampler, ReIDDataModule
from reid_attn.data.datamodule import epoch_seed
from reid_attn.data.image_dataset import ReIDImageDataset
from reid_attn.data.transforms import build_test_transform
from reid_attn.evaluate import evaluate
from reid_attn.metrics import METRIC_NAMES
from reid_attn.runs.files import (
    AtomicCheckpointIO,
    CheckpointError,
    OutputError,
    load_checkpoint,
    run_entry,
)
from reid_attn.train import train

#: A 2-epoch, 4-step-an-epoch deterministic run with data-loading workers (their seeding is
#: part of what a resume has to reproduce).
EPOCHS = 2
RUN_OVERRIDES = [
    "debug=fast",
    "data.synthetic.images_per_camera=2",
    "data.synthetic.max_cameras_per_id=2",
    "data.num_workers=2",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.deterministic=true",
]
STEPS_PER_EPOCH = 4
#: The step the killed run is stopped at: the second batch of epoch 1 (0-based), so the kill
#: falls after the epoch-0 checkpoint and in the middle of an epoch.
KILL_STEP = STEPS_PER_EPOCH + 1

KILL_AT_STEP = """\
import runpy, sys, time
from pathlib import Path
from reid_attn.module import ReIDModule

marker, step = Path(sys.argv[1]), int(sys.argv[2])
original = ReIDModule.training_step

def training_step(self, batch, batch_idx):
    if self.global_step == step:
        marker.write_text(f"{self.current_epoch} {batch_idx}")
        time.sleep(600)  # the test sends SIGKILL while the process waits here
    return original(self, batch, batch_idx)

ReIDModule.training_step = training_step
sys.argv = [sys.argv[0], *sys.argv[3:]]
runpy.run_module("reid_attn.train", run_name="__main__", alter_sys=True)
"""


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "REID_ATTN_CACHE": str(root / "data"), "HYDRA_FULL_ERROR": "0"}


def _train_args(root: Path, run: str, *extra: str) -> list[str]:
    return [*RUN_OVERRIDES, f"data.root={root / 'data'}", f"hydra.run.dir={root / run}", *extra]


def _train_cli(root: Path, run: str, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "reid_attn.train", *_train_args(root, run, *extra)],
        capture_output=True,
        text=True,
        env=_env(root),
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _figures(metrics: dict) -> str:
    return " ".join(f"{k} {100 * metrics[k]:.4f}%" for k in METRIC_NAMES)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the slow command-line runs (and their shared synthetic data)."""
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def reference_runs(slow_root: Path):
    """``reference(pipeline)``: the folder of one uninterrupted command-line run with that
    ``data.pipeline`` (run once per pipeline)."""
    done: dict[str, Path] = {}

    def reference(pipeline: str) -> Path:
        if pipeline not in done:
            _train_cli(slow_root, f"reference-{pipeline}", f"data.pipeline={pipeline}")
            done[pipeline] = slow_root / f"reference-{pipeline}"
        return done[pipeline]

    return reference


@pytest.mark.slow
def test_same_seed_twice_gives_identical_metrics_and_weights(reference_runs, slow_root) -> None:
    reference_run = reference_runs("loader")
    _train_cli(slow_root, "again", "data.pipeline=loader")
    first, second = _metrics(reference_run), _metrics(slow_root / "again")
    print(f"\nrun 1: {_figures(first)}\nrun 2: {_figures(second)}")
    assert first == second
    _assert_same_weights(_weights(reference_run), _weights(slow_root / "again"))


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["loader", "memory"])
def test_sigkill_mid_epoch_then_resume_reproduces_the_uninterrupted_run(
    reference_runs, slow_root, pipeline: str
) -> None:
    reference_run = reference_runs(pipeline)
    option = f"data.pipeline={pipeline}"
    script = slow_root / "kill_at_step.py"
    script.write_text(KILL_AT_STEP)
    marker = slow_root / f"reached-{pipeline}"
    run_dir = slow_root / f"killed-{pipeline}"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(marker),
            str(KILL_STEP),
            *_train_args(slow_root, f"killed-{pipeline}", option),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(slow_root),
    )
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before step {KILL_STEP}: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "the run did not reach the kill step"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text() == "1 1"  # epoch 1, its second batch
    assert not (run_dir / "metrics.json").exists()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, STEPS_PER_EPOCH)

    _train_cli(slow_root, f"killed-{pipeline}", option, "resume=true")
    resumed, uninterrupted = _metrics(run_dir), _metrics(reference_run)
    print(f"\nuninterrupted: {_figures(uninterrupted)}\nresumed:       {_figures(resumed)}")
    assert resumed == uninterrupted
    _assert_same_weights(_weights(run_dir), _weights(reference_run))


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes_matches_a_single_process_evaluation(
    slow_root, compose_cfg, tmp_path
) -> None:
    _train_cli(slow_root, "ddp", "trainer=ddp_cpu", "trainer.devices=2")
    # (Lightning's "distributed_backend=gloo" line is hidden by the quiet console: the step
    # count below, half of every epoch's batches, is what shows two processes trained)
    run_dir = slow_root / "ddp"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # each rank trains on its half of every epoch's PK batches
    datamodule = ReIDDataModule(**checkpoint["hyper_parameters"]["data"])
    datamodule.setup("fit")
    sampler = PKSampler([p for _, p, _ in datamodule.train_items], 4, 2, seed=0, world_size=1)
    batches = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        batches.append(len(sampler.global_batches()) // 2)
    assert checkpoint["global_step"] == sum(batches)
    # the distributed test counted every query and gallery image once: the same figures as a
    # single process evaluating the same checkpoint
    ddp = _metrics(run_dir)
    cfg = compose_cfg(
        "evaluate", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path}"]
    )
    single = evaluate(cfg)
    print(f"\nDDP (2 processes): {_figures(ddp)}\nsingle process:    {_figures(single)}")
    assert {k: ddp[k] for k in (*METRIC_NAMES, "cmc")} == {
        k: single[k] for k in (*METRIC_NAMES, "cmc")
    }


# ----------------------------------------------------------------------------- new run / resume


def _fake_run(folder: Path, cfg, last: bytes | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if last is not None:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(last)


@pytest.mark.parametrize("marker", ["config.yaml", "checkpoints", "metrics.json"])
def test_a_new_run_never_writes_into_a_folder_holding_a_run(train_cfg_factory, marker) -> None:
    cfg = train_cfg_factory()
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir()
    (run_dir / ".hydra").mkdir()  # what Hydra itself creates does not count
    target = run_dir / marker
    target.mkdir() if marker == "checkpoints" else target.write_text("earlier run")
    with pytest.raises(ConfigError, match=rf"already holds a run \({marker}\); pass resume=true"):
        train(cfg)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([".hydra", marker])
    if marker != "checkpoints":
        assert target.read_text() == "earlier run"


def test_resume_needs_a_last_checkpoint(train_cfg_factory) -> None:
    cfg = train_cfg_factory("resume=true")
    with pytest.raises(ConfigError, match=r"resume=true but .* holds no checkpoints/last\.ckpt"):
        train(cfg)


def test_resume_with_another_config_names_what_differs(train_cfg_factory) -> None:
    original = train_cfg_factory("attention=cbam")
    _fake_run(Path(original.output_dir), original, last=b"unused")
    with pytest.raises(ConfigError) as info:
        train(train_cfg_factory("attention=se", "optimizer.lr=0.002", "resume=true"))
    message = str(info.value)
    assert "model.attention (run: cbam, now: se)" in message
    assert "optimizer.lr (run: 0.001, now: 0.002)" in message
    assert "resume (" not in message


def test_resume_from_a_truncated_checkpoint_is_a_clear_error(train_cfg_factory, tmp_path):
    cfg = train_cfg_factory("resume=true")
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, tmp_path / "whole.ckpt")
    whole = (tmp_path / "whole.ckpt").read_bytes()
    _fake_run(Path(cfg.output_dir), cfg, last=whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*last.ckpt \(truncated"):
        train(cfg)


# ----------------------------------------------------------------------------- atomic files


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    real_save = torch.save

    def disk_full(obj, file) -> None:
        real_save(obj, file)
        file.truncate(10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match=rf"cannot write {path}: No space left on device"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


KILL_WHILE_WRITING = """\
import os, signal, sys, torch
from reid_attn.runs.files import AtomicCheckpointIO

path = sys.argv[1]
io = AtomicCheckpointIO()
io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
real_save = torch.save

def killed_half_way(obj, file):
    real_save(obj, file)
    file.truncate(file.tell() // 2)
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = killed_half_way
io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
"""


def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_WHILE_WRITING, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = tmp_path / ".last.ckpt.partial"
    assert partial.is_file() and partial.stat().st_size > 0  # the interrupted write
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(partial)
    saved = torch.load(path, weights_only=True)
    assert saved["step"] == 1 and torch.equal(saved["w"], torch.ones(1000))
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)  # the next save replaces both
    assert torch.load(path, weights_only=True) == {"step": 3} and not partial.exists()


# ----------------------------------------------------------------------------- seeding


def test_epoch_seed_depends_on_seed_epoch_and_rank_only() -> None:
    seeds = {epoch_seed(s, e, r) for s in (0, 1) for e in (0, 1, 2) for r in (0, 1)}
    assert len(seeds) == 12 and all(0 <= v < 2**32 for v in seeds)
    assert epoch_seed(3, 5, 1) == epoch_seed(3, 5, 1)


def test_seed_each_epoch_resets_the_generators_whatever_ran_before() -> None:
    loader = DataLoader(list(range(4)), generator=torch.Generator())
    callback = SeedEachEpoch(seed=7)
    draws = []
    for burn in (0, 1000):  # the same epoch, after different amounts of earlier randomness
        torch.rand(burn)
        loader.generator.manual_seed(burn)
        callback.on_train_epoch_start(stand_in_trainer(2, loader), None)
        draws.append(
            (float(torch.rand(1)), int(torch.randint(1 << 30, (1,), generator=loader.generator)))
        )
    assert draws[0] == draws[1]
    reference = torch.Generator().manual_seed(epoch_seed(7, 2, 0))
    assert draws[0][1] == int(torch.randint(1 << 30, (1,), generator=reference))
    torch.manual_seed(epoch_seed(7, 2, 0))
    assert draws[0][0] == float(torch.rand(1))


def test_train_loader_is_built_for_the_trainers_epoch(tmp_path) -> None:
    datamodule = ReIDDataModule(
        root=str(tmp_path),
        height=64,
        width=32,
        num_identities=2,
        num_instances=2,
        num_workers=0,
        pipeline="loader",  # the memory pipeline's per-step seeds: test_memory_pipeline.py
        synthetic={
            "num_train_ids": 4,
            "num_test_ids": 2,
            "num_distractors": 1,
            "num_junk": 1,
            "height": 64,
            "width": 32,
        },
    )
    datamodule.prepare_data()
    datamodule.setup("fit")

    datamodule.trainer = stand_in_trainer(3)
    loader = datamodule.train_dataloader()
    assert loader.sampler.epoch == 3
    reference = torch.Generator().manual_seed(epoch_seed(datamodule.seed, 3, 0))
    assert torch.equal(
        torch.randint(1 << 30, (4,), generator=loader.generator),
        torch.randint(1 << 30, (4,), generator=reference),
    )
    assert not loader.persistent_workers


# ----------------------------------------------------------------------------- bad input


def test_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(
    train_cfg_factory, monkeypatch
) -> None:
    make_loss_nan_at_step(monkeypatch, 1)
    cfg = train_cfg_factory(
        "trainer.max_epochs=3", "+trainer.limit_train_batches=1", "data.val_identities=0"
    )
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as info:
        run_entry(train, cfg)
    assert info.value.code == (
        "error: training stopped: the loss is nan at global step 1 (epoch 1, batch 0); the last "
        f"good checkpoint is {last}. Lower optimizer.lr or check the data and train again"
    )
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 1)
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert not (Path(cfg.output_dir) / "metrics.json").exists()


def test_an_unusable_output_dir_is_one_line(train_cfg_factory, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = train_cfg_factory(f"output_dir={blocker / 'run'}")
    with pytest.raises(SystemExit) as info:
        run_entry(train, cfg)
    assert (
        info.value.code == f"error: cannot write to output_dir {blocker / 'run'}: Not a directory"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_output_dir_is_one_line(train_cfg_factory, tmp_path) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    cfg = train_cfg_factory(f"output_dir={read_only / 'run'}")
    with pytest.raises(SystemExit) as info:
        run_entry(train, cfg)
    assert info.value.code == (
        f"error: cannot write to output_dir {read_only / 'run'}: Permission denied"
    )


def test_disk_full_anywhere_in_a_run_is_one_line() -> None:
    def fill(_cfg) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/a/csv/metrics.csv")

    with pytest.raises(SystemExit) as info:
        run_entry(fill, OmegaConf.create({}))
    assert info.value.code == "error: No space left on device: /runs/a/csv/metrics.csv"

    def missing(_cfg) -> None:  # not a write error: a real bug keeps its traceback
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    with pytest.raises(FileNotFoundError):
        run_entry(missing, OmegaConf.create({}))


def test_a_corrupt_image_read_in_a_loader_worker_is_one_line(tmp_path) -> None:
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    good = tmp_path / "0001_c2s1_000002_00.jpg"
    Image.new("RGB", (32, 64)).save(good)
    dataset = ReIDImageDataset([(str(good), 1, 1), (str(bad), 1, 0)], build_test_transform(64, 32))
    loader = DataLoader(dataset, batch_size=1, num_workers=1)
    with pytest.raises(SystemExit) as info:
        run_entry(lambda _cfg: list(loader), OmegaConf.create({}))
    message = info.value.code
    assert message.startswith(f"error: cannot read image {bad}: cannot identify image file")
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss.margin=-0.1"], r"loss.margin and loss.label_smoothing must lie in \[0, 1\)"),
        (["optimizer.lr=0"], "optimizer.lr=0 is out of range; it must be > 0.0"),
        (["seed=-1"], "seed=-1 is out of range; it must be >= 0"),
        (
            ["trainer=ddp", "trainer.accelerator=cpu"],
            "trainer.precision=16-mixed needs a GPU; on the CPU pass trainer.precision=32-true "
            r"\(trainer=ddp_cpu sets it\)",
        ),
        (
            ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true"],
            r"trainer.sync_batchnorm=true needs a GPU .* \(trainer=ddp_cpu sets it\)",
        ),
    ],
)
def test_out_of_range_values_fail_before_any_work(train_cfg_factory, overrides, expected) -> None:
    cfg = train_cfg_factory(*overrides)
    with pytest.raises(ConfigError, match=expected):
        train(cfg)
    assert not Path(cfg.output_dir).exists()


def test_k_images_per_identity_against_the_identities_image_counts() -> None:
    pids = [0, 0, 0, 1, 1, 2]  # 3, 2 and 1 images
    assert [validate_sampling(k, pids) for k in (1, 2, 3)] == [0, 1, 2]  # topped up by repeats
    with pytest.raises(ConfigError, match=r"num_instances=4 is out of range: .* \(at most 3\)"):
        validate_sampling(4, pids)


def test_k_above_every_identitys_images_stops_training(train_cfg_factory, capsys) -> None:
    cfg = train_cfg_factory("data.num_instances=13", "data.num_identities=2")
    datamodule = ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.setup("fit")
    counts: dict[int, int] = {}
    for _, pid, _ in datamodule.train_items:
        counts[pid] = counts.get(pid, 0) + 1
    most = max(counts.values())
    assert most < 13
    with pytest.raises(
        ConfigError, match=rf"num_instances=13 is out of range: .* \(at most {most}\)"
    ):
        train(cfg)
    assert not (Path(cfg.output_dir) / "checkpoints").exists()


def test_unknown_group_value_on_the_command_line_lists_the_choices(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reid_attn.train", "trainer=tpu", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "Could not find 'trainer/tpu'" in proc.stderr
    for option in ("cpu", "ddp", "ddp_cpu", "gpu"):
        assert f"\t{option}\n" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_resumed_run_continues_its_csv_log(tmp_path) -> None:
    """Lightning's CSVLogger deletes csv/metrics.csv when it starts; a resumed run's logger
    keeps the lines of the epochs before the kill and appends, new columns included."""
    from pytorch_lightning.loggers import CSVLogger

    from reid_attn.runs.files import ResumedCSVLogger
    from reid_attn.runs.validation_curves import read_validation_log

    first = CSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"epoch": 0, "val/mAP": 0.25, "val/rank1": 0.5}, step=9)
    first.save()
    resumed = ResumedCSVLogger(save_dir=tmp_path, name="csv", version="")
    resumed.log_metrics({"epoch": 1, "val/mAP": 0.5, "val/rank1": 0.75}, step=19)
    resumed.log_metrics({"epoch": 1, "test/mAP": 0.4}, step=19)
    resumed.save()
    log = read_validation_log(tmp_path)
    assert log.epochs.tolist() == [1, 2]
    assert log.values["mAP"].tolist() == [25.0, 50.0]
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert sorted(header) == ["epoch", "step", "test/mAP", "val/mAP", "val/rank1"]


def test_pace_is_printed_once_after_the_first_epoch(capsys) -> None:
    from types import SimpleNamespace

    from reid_attn.callbacks import EstimateRunTime, format_duration

    times = iter([100.0, 190.0, 280.0])
    callback = EstimateRunTime(clock=lambda: next(times))
    trainer = SimpleNamespace(current_epoch=3, max_epochs=18, is_global_zero=True)  # resumed
    callback.on_train_epoch_start(trainer, None)
    assert capsys.readouterr().out == ""
    trainer.current_epoch = 4
    callback.on_train_epoch_start(trainer, None)
    # 90 s an epoch, 14 epochs left (4..17): 1260 s
    assert capsys.readouterr().out == (
        "pace: 1 min 30 s an epoch on this machine; the remaining 14 of 18 epochs take about "
        "21 min 00 s (then the test)\n"
    )
    trainer.current_epoch = 5
    callback.on_train_epoch_start(trainer, None)
    assert capsys.readouterr().out == ""
    assert format_duration(42.4) == "42 s" and format_duration(3725) == "1 h 02 min"
