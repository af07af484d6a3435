"""The CPU ablation's preset and its part runner (experiments/ablation_cpu.py): lanes pinned
to cores, records without checkpoints, a killed job resumed, parts merged by the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF_DIR, EXPERIMENTS_DIR, load_experiment
from reid_attn.config import validate_train_config
from reid_attn.report import collect, write_report
from reid_attn.runs.validation_curves import read_validation_log


def test_preset_fixes_what_a_table_must_share(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=ablation_cpu", "ablation=cbam", "output_dir=x"])
    validate_train_config(cfg)
    assert cfg.trainer.precision == "32-true"  # never auto: bf16 exists on some CPUs only
    assert (cfg.data.height, cfg.data.width) == (64, 32)
    assert (cfg.data.num_identities, cfg.data.num_instances) == (16, 4)
    spec = cfg.data.synthetic
    assert (spec.num_train_ids, spec.num_test_ids, spec.num_distractors) == (200, 110, 100)
    assert cfg.data.val_identities == 16
    assert cfg.model.pretrained is None  # from scratch, as the paper's ablation
    params = OmegaConf.load(CONF_DIR / "experiment" / "ablation_cpu.yaml").hydra.sweeper.params
    assert params.ablation.split(",") == ["baseline", "tri", "tri_cir", "se", "eca", "cbam"]
    assert cfg.scheduler.milestones[-1] < cfg.trainer.max_epochs


def test_lanes_are_parsed_and_bad_entries_refused() -> None:
    runner = load_experiment("ablation_cpu")
    assert runner.parse_lane("baseline:0, cbam:12") == [("baseline", 0), ("cbam", 12)]
    with pytest.raises(SystemExit, match="'cbam' is not ROW:SEED"):
        runner.parse_lane("baseline:0,cbam")


def _run_part(tmp_path: Path, *lanes: str) -> subprocess.CompletedProcess:
    args = [f"--jobs={lane}" for lane in lanes]
    return subprocess.run(
        [sys.executable, str(EXPERIMENTS_DIR / "ablation_cpu.py"), "--part", "p", *args,
         "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results"),
         "debug=fast", f"data.root={tmp_path / 'data'}"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "REID_ATTN_CACHE": str(tmp_path / "data")},
    )  # fmt: skip


@pytest.mark.slow
def test_part_runs_lanes_copies_records_and_resumes_a_killed_job(tmp_path) -> None:
    done = _run_part(tmp_path, "baseline:0", "cbam:0")
    assert done.returncode == 0, done.stdout + done.stderr
    records = tmp_path / "results" / "p"
    for job in ("baseline-seed0", "cbam-seed0"):
        names = sorted(p.name for p in (records / job).iterdir())
        assert names == sorted(["config.yaml", "csv", "machine.json", "metrics.json",
                                "tensorboard", "train.log"])  # fmt: skip
        (machine,) = json.loads((records / job / "machine.json").read_text())
        assert machine["threads"] == 1 and machine["precision"] == "32-true"
    assert [r.row for r in collect(records)] == ["baseline", "cbam"]
    # A killed job: its last.ckpt but no metrics.json. The same command resumes it from the
    # checkpoint (the optimiser state last.ckpt keeps) to the same figures; a finished job is
    # skipped.
    job = tmp_path / "out" / "p" / "cbam-seed0"
    finished = json.loads((job / "metrics.json").read_text())
    (job / "metrics.json").unlink()
    shutil.rmtree(records / "cbam-seed0")
    again = _run_part(tmp_path, "baseline:0,cbam:0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cbam-seed0: start" in again.stdout and "baseline-seed0: start" not in again.stdout
    assert json.loads((job / "metrics.json").read_text()) == finished
    # the resumed job's CSV log still holds the validation of the epoch before the kill
    assert read_validation_log(job).epochs.tolist() == [1]
    assert len(json.loads((records / "cbam-seed0" / "machine.json").read_text())) == 2
    assert "Machines: " in (write_report(records)[0]).read_text()
