"""The GPU ablation preset, the epoch choice from measured curves, and the prepared GPU script
(its CPU-runnable parts on tiny settings)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import CONF_DIR, load_experiment
from reid_attn.config import validate_train_config
from reid_attn.report import collect, write_report

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "ablation_gpu.sh"
ROWS = ["baseline", "tri", "tri_cir", "se", "eca", "cbam", "cbam_bn"]
choose_epochs = load_experiment("choose_epochs")


def test_gpu_preset_composes_the_papers_ablation_setting(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=ablation_gpu", "output_dir=x", "data.root=/data"])
    validate_train_config(cfg)
    spec = cfg.data.synthetic
    assert cfg.data.name == "synthetic" and cfg.data.val_identities == 50
    assert (spec.num_train_ids, spec.num_test_ids, spec.num_distractors) == (751, 750, 2800)
    assert (cfg.data.height, cfg.data.width) == (256, 128)
    assert (cfg.data.num_identities, cfg.data.num_instances) == (16, 4)
    assert cfg.optimizer.lr == pytest.approx(3.5e-4) and cfg.model.pretrained is None
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.trainer.check_val_every_n_epoch <= 5  # enough points for the curves
    assert list(cfg.scheduler.milestones) == choose_epochs.milestones_for(cfg.trainer.max_epochs)
    text = (CONF_DIR / "experiment" / "ablation_gpu.yaml").read_text()
    assert "PROVISIONAL" in text  # until a measured curve sets the epochs
    hydra = yaml.safe_load(text)["hydra"]
    assert hydra["sweeper"]["params"]["ablation"].split(",") == ROWS
    assert str(hydra["sweeper"]["params"]["seed"]) == "0,1,2"
    assert hydra["sweep"]["subdir"] == "${ablation.row}-seed${seed}"


def test_authors_cbam_row(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=ablation_gpu", "ablation=cbam_bn", "output_dir=x"])
    assert cfg.model.attention == "cbam_bn" and cfg.loss.triplet_weight > 0
    assert cfg.loss.classifier == "circle"  # joint circle loss, as the +CBAM (Ours) row
    assert (cfg.ablation.name, cfg.ablation.order) == ("+CBAM (authors' code)", 6)
    assert cfg.ablation.paper_rank1 is None and cfg.ablation.paper_mAP is None


@pytest.mark.parametrize(
    ("epochs", "expected"), [(30, [20, 26]), (15, [10, 13]), (20, [13, 18]), (40, [27, 35])]
)
def test_milestones_at_two_thirds_and_seven_eighths(epochs, expected) -> None:
    # 2/3 and 7/8 of the epochs rounded half up: 30 -> 20, 26.25; 20 -> 13.3, 17.5.
    assert choose_epochs.milestones_for(epochs) == expected


@pytest.mark.parametrize(("levelled", "expected"), [(12, 20), (10, 15), (11, 20), (20, 30)])
def test_sweep_epochs_put_the_first_decay_after_the_levelled_epoch(levelled, expected) -> None:
    epochs = choose_epochs.sweep_epochs(levelled)
    assert epochs == expected and epochs % 5 == 0
    assert choose_epochs.milestones_for(epochs)[0] >= levelled


def _measuring_run(run: Path, val_map: list[float]) -> Path:
    """A run folder whose CSV log validated every epoch with ``val_map`` (percent)."""
    (run / "csv").mkdir(parents=True)
    with (run / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "val/mAP", "val/rank1"])
        for epoch, value in enumerate(val_map):
            writer.writerow([epoch, epoch, value / 100, value / 100])
    return run


def _choose_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "choose_epochs.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_choose_epochs_from_measured_curves(tmp_path) -> None:
    # cbam levels off at epoch 6 (gain after it 0.6), baseline at epoch 9: E = 1.5 * 9 -> 15.
    cbam = _measuring_run(tmp_path / "curve_cbam", [20, 50, 70, 80, 85, 88, 88.6, 88.2, 88.5])
    base = _measuring_run(
        tmp_path / "curve_baseline", [5, 10, 20, 30, 40, 50, 55, 58, 60, 60.5, 60.8, 60.2]
    )
    proc = _choose_cli(str(cbam), str(base), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "curve_cbam: validation mAP levelled from epoch 6" in proc.stdout
    assert "curve_baseline: validation mAP levelled from epoch 9" in proc.stdout
    assert proc.stdout.strip().endswith("epochs 15 milestones [10, 13]")
    saved = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert (saved["epochs"], saved["milestones"]) == (15, [10, 13])
    assert saved["runs"]["curve_baseline"] == {
        "levelled_epoch": 9,
        "last_epoch": 12,
        "last_val_mAP": 60.2,
        "best_val_mAP": 60.8,
    }
    assert (tmp_path / "out" / "curve.png").stat().st_size > 10_000


def test_choose_epochs_refuses_curves_that_still_climb(tmp_path) -> None:
    climbing = _measuring_run(tmp_path / "curve_cbam", [10, 20, 30, 40, 50])
    proc = _choose_cli(str(climbing), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "curve_cbam: validation mAP not levelled off (last epoch 5: 50.0" in proc.stdout
    assert "not levelled off within the measured epochs: measure longer" in proc.stderr
    assert json.loads((tmp_path / "out" / "curve.json").read_text())["epochs"] is None


def test_choose_epochs_bad_input(tmp_path) -> None:
    proc = _choose_cli(str(tmp_path))
    assert proc.returncode == 1 and f"error: {tmp_path} has no validation lines" in proc.stderr
    assert _choose_cli().returncode == 2  # neither runs nor --milestones
    assert _choose_cli("--milestones", "30").stdout.strip() == "[20,26]"


# ------------------------------------------------------------------------- the GPU script


def _run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script on this CPU: tiny data, one epoch's worth of work per run."""
    tiny = "trainer=cpu data=synthetic debug=fast trainer.precision=32-true"
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "REID_ATTN_CACHE": str(tmp_path / "cache"),
        "ABLATION_GPU_OVERRIDES": f"{tiny} model.channels_last=false",
        "DATA_LIMIT": "800",  # a shared 2-core CPU is slow
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=1800,
        check=False,
    )


def test_script_syntax_and_usage(tmp_path) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    for args in ([], ["sweep", "0"], ["bogus"]):
        proc = _run_script(tmp_path, *args)
        assert proc.returncode != 0 and "usage: bash experiments/ablation_gpu.sh" in proc.stderr


@pytest.mark.slow  # end to end: subprocess runs of whole sweeps (make test-slow)
def test_script_sweep_stage_on_tiny_settings(tmp_path) -> None:
    proc = _run_script(tmp_path, "sweep", "3", "2", "tri", LANES="1", SWEEP_LIMIT="800")
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "seed 3, rows tri: 2 epochs, decays at [1,2], 1 lanes" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "report.md",
        "report.png",
        "report_validation_curves.png",
        "summary.txt",
        "sweep_seed3.tar.gz",
    ]
    # The tarball holds the sweep without checkpoints; the extracted copy is a sweep the
    # report reads, with the job's wall time kept.
    with tarfile.open(out / "sweep_seed3.tar.gz") as tar:
        names = tar.getnames()
        assert not any("checkpoints" in n for n in names)
        tar.extractall(tmp_path / "copy", filter="tar")
    (part,) = (tmp_path / "copy").iterdir()
    rows = collect(part / "lane0")
    assert [(r.row, r.seeds) for r in rows] == [("tri", [3])]
    job = part / "lane0" / "tri-seed3"
    config = yaml.safe_load((job / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 2 and config["scheduler"]["milestones"] == [1, 2]
    write_report(part / "lane0", out=tmp_path / "again")
    assert (
        float(next(csv.DictReader((tmp_path / "again" / "ablation.csv").open()))["wall_min_mean"])
        > 0
    )
    assert "| tri-seed3 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_script_curve_stage_on_tiny_settings(tmp_path) -> None:
    limits = {"CURVE_LIMIT": "800", "PAPER_LIMIT": "800"}  # a shared 2-core CPU is slow
    proc = _run_script(tmp_path, "curve", "3", "2", CURVE_ROWS="tri", **limits)
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "curve.json",
        "curve.png",
        "curve_runs.tar.gz",
        "paper_timing.json",
        "summary.txt",
    ]
    curve = json.loads((out / "curve.json").read_text())
    assert curve["runs"]["curve_tri"]["last_epoch"] == 3  # validated every epoch
    timing = json.loads((out / "paper_timing.json").read_text())
    assert timing["epochs_run"] == 2 and timing["median_epoch_s"] > 0
    assert timing["projected_120_epochs_s"] == pytest.approx(
        timing["job_wall_s"] + 118 * timing["median_epoch_s"]
    )
    assert set(timing["test_metrics"]) >= {"rank1", "mAP"}
