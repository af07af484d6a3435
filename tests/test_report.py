"""The ablation report on fabricated sweep directories, and the multirun sweep itself."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import run_train_cli
from reid_attn.report import SweepError, collect, main, write_report

ROWS = ["baseline", "tri", "tri_cir", "se", "eca", "cbam"]


def _metrics(row_index: int, seed: int) -> dict:
    """Known fabricated metrics: rank1 = 0.30 + 0.05*row + 0.01*seed, mAP = rank1 - 0.1."""
    r1 = 0.30 + 0.05 * row_index + 0.01 * seed
    return {
        "rank1": r1,
        "rank5": r1 + 0.1,
        "rank10": r1 + 0.15,
        "mAP": r1 - 0.1,
        "mINP": r1 - 0.2,
        "cmc": [r1],
    }


def _fabricate(sweep: Path, compose_cfg, seeds=(0, 1, 2), skip=(), cli_seeds: bool = False):
    sweep.mkdir(parents=True)
    task = ["experiment=ablation"] + ([f"seed={','.join(map(str, seeds))}"] if cli_seeds else [])
    multirun = {
        "hydra": {
            "sweeper": {"params": {"ablation": ",".join(ROWS), "seed": "0"}},
            "overrides": {"task": task},
        },
        "seed": 0,
    }
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")
    for i, row in enumerate(ROWS):
        for seed in seeds:
            job = sweep / f"{row}-seed{seed}"
            job.mkdir()
            cfg = compose_cfg("train", [f"ablation={row}", f"seed={seed}", "output_dir=x"])
            OmegaConf.save(cfg, job / "config.yaml", resolve=True)
            if (row, seed) not in skip:
                (job / "metrics.json").write_text(json.dumps(_metrics(i, seed)))


def test_report_tables_and_plot_from_fabricated_sweep(tmp_path, compose_cfg) -> None:
    sweep = tmp_path / "sweep"
    _fabricate(sweep, compose_cfg, cli_seeds=True)
    paths = write_report(sweep)
    assert [p.name for p in paths] == ["ablation.md", "ablation.csv", "ablation.png"]
    with (sweep / "ablation.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["row"] for r in table] == ROWS
    for i, line in enumerate(table):
        expected = [100 * _metrics(i, s)["rank1"] for s in (0, 1, 2)]
        assert float(line["rank1_mean"]) == pytest.approx(np.mean(expected), abs=1e-3)
        assert float(line["rank1_std"]) == pytest.approx(np.std(expected, ddof=1), abs=1e-3)
        assert float(line["delta_rank1"]) == pytest.approx(5.0 * i, abs=1e-3)
        assert float(line["delta_mAP"]) == pytest.approx(5.0 * i, abs=1e-3)
        assert line["seeds"] == "0 1 2"
    assert table[0]["attention"] == "none" and table[0]["loss"] == "CE"
    assert table[2]["loss"] == "circle-CE + triplet" and table[5]["attention"] == "cbam"
    assert table[0]["paper_rank1"] == "83.67" and table[5]["paper_mAP"] == "79.70"
    assert table[1]["paper_rank1"] == "n/a"
    markdown = (sweep / "ablation.md").read_text()
    assert "| +CBAM (Ours) | cbam |" in markdown
    # rows differ by 5 points with a seed std of 1: beyond the spread; the baseline has no delta
    assert "R1 yes, mAP yes" in markdown
    image = Image.open(sweep / "ablation.png")
    assert image.width > 600 and image.height > 300


def test_single_seed_report_has_zero_std(tmp_path, compose_cfg) -> None:
    sweep = tmp_path / "sweep"
    _fabricate(sweep, compose_cfg, seeds=(0,))
    rows = collect(sweep)
    assert [len(r.seeds) for r in rows] == [1] * 6
    assert all(r.std("mAP") == 0.0 for r in rows)


def test_missing_and_unfinished_jobs_are_listed(tmp_path, compose_cfg) -> None:
    sweep = tmp_path / "sweep"
    _fabricate(sweep, compose_cfg, seeds=(0, 1), skip={("se", 1)}, cli_seeds=True)
    __import__("shutil").rmtree(sweep / "eca-seed0")
    with pytest.raises(
        SweepError, match=r"2 of 12 jobs .*: se-seed1, eca-seed0|eca-seed0, se-seed1"
    ):
        collect(sweep)


def test_bad_directories(tmp_path, capsys) -> None:
    with pytest.raises(SweepError, match="does not exist"):
        collect(tmp_path / "nope")
    with pytest.raises(SweepError, match="holds no jobs"):
        collect(tmp_path)
    with pytest.raises(SystemExit, match=r"error: .*holds no jobs"):
        main([str(tmp_path)])


def test_non_ablation_sweep_is_rejected(tmp_path, compose_cfg) -> None:
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"hydra": {"sweeper": {"params": {"seed": "0,1"}}}}),
        sweep / "multirun.yaml",
    )
    OmegaConf.save(
        compose_cfg("train", ["output_dir=x"]), sweep / "0" / "config.yaml", resolve=True
    )
    with pytest.raises(SweepError, match="not an ablation sweep"):
        collect(sweep)


def test_multirun_jobs_are_independent_and_reported(tmp_path) -> None:
    """Two ablation jobs in one process give the same metrics as the second job run alone."""
    sweep = tmp_path / "sweep"
    proc = run_train_cli(
        [
            "--multirun",
            "experiment=ablation",
            "debug=fast",
            "ablation=tri,tri_cir",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    alone = run_train_cli(
        ["debug=fast", "ablation=tri_cir", f"hydra.run.dir={tmp_path / 'alone'}"], tmp_path
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    in_sweep = json.loads((sweep / "tri_cir-seed0" / "metrics.json").read_text())
    assert json.loads((tmp_path / "alone" / "metrics.json").read_text()) == in_sweep
    rows = collect(sweep)
    assert [r.row for r in rows] == ["tri", "tri_cir"]
    assert (sweep / "tri-seed0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("preset", "data", "overrides"),
    [
        ("paper_market1501", "market1501", []),
        ("paper_dukemtmc", "dukemtmc", []),
        ("paper_msmt17", "msmt17", ["trainer=ddp"]),
        ("ablation_synthetic", "synthetic", []),
        ("ablation", "synthetic", ["data=synthetic_large"]),
    ],
)
def test_presets_compose_and_validate(compose_cfg, preset, data, overrides) -> None:
    from reid_attn.config import validate_train_config

    cfg = compose_cfg(
        "train", [f"experiment={preset}", "output_dir=x", "data.root=/data", *overrides]
    )
    validate_train_config(cfg)
    assert cfg.data.name == data
    if preset.startswith("paper"):
        assert cfg.model.pretrained == "imagenet" and cfg.model.attention == "cbam"
        assert (cfg.data.height, cfg.data.width) == (256, 128)
        assert cfg.data.num_identities * cfg.data.num_instances == 64
        assert cfg.optimizer.lr == pytest.approx(3.5e-4)
        assert cfg.trainer.max_epochs == 120 and cfg.trainer.precision == "16-mixed"
    else:
        assert cfg.trainer.accelerator == "cpu"
    if "data=synthetic_large" in overrides:  # near Market-1501's size
        spec = cfg.data.synthetic
        assert (spec.num_train_ids, spec.num_test_ids, spec.num_distractors) == (751, 750, 2800)
