"""The ablation report on fabricated sweep directories (one, or several merged), and the
multirun sweep itself."""

from __future__ import annotations

import csv
import json
import re
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_config, run_train_cli
from reid_attn.data import Market1501, SyntheticSpec, generate_synthetic_market
from reid_attn.metrics import evaluate_rank
from reid_attn.report import SweepError, collect, main, read_table, write_report
from reid_attn.viz.ablation import ablation_figure

ROWS = ["baseline", "tri", "tri_cir", "se", "eca", "cbam"]
VAL_EPOCHS = [2, 4, 6, 8, 10]
# Validation mAP (percent) of row i, seed s: VAL_MAP + 2 i + s, levelled from epoch 6 (later
# gain 0.5 <= 1 point); the baseline's climbs to the end (never levelled).
VAL_MAP = [20.0, 60.0, 75.0, 75.5, 75.2]
VAL_MAP_BASELINE = [10.0, 20.0, 30.0, 40.0, 50.0]


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


def _val_map(row: str, seed: int) -> list[float]:
    base = VAL_MAP_BASELINE if row == "baseline" else VAL_MAP
    return [v + 2 * ROWS.index(row) + seed for v in base]


@cache
def _job_config(row: str, seed: int, data_root: str, extra: tuple[str, ...]) -> str:
    """The saved config.yaml of a tiny-data ablation job (composed once per argument set)."""
    overrides = [f"ablation={row}", f"seed={seed}", "output_dir=x", "debug=fast"]
    cfg = compose_config("train", [*overrides, f"data.root={data_root}", *extra])
    return OmegaConf.to_yaml(cfg, resolve=True)


def _write_validation_log(job: Path, row: str, seed: int) -> None:
    """A Lightning-style csv/metrics.csv: training lines, and one validation line per
    validated epoch (``epoch`` 0-based) with val/mAP and val/rank1 (fractions)."""
    (job / "csv").mkdir()
    with (job / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train/loss_step", "val/mAP", "val/rank1"])
        for epoch, value in zip(VAL_EPOCHS, _val_map(row, seed), strict=True):
            writer.writerow([epoch - 1, 10 * epoch - 1, 1.0, "", ""])
            writer.writerow([epoch - 1, 10 * epoch - 1, "", value / 100, (value - 3) / 100])


def _fabricate(
    sweep: Path,
    data_root: Path,
    seeds=(0, 1, 2),
    skip=(),
    cli_seeds: bool = False,
    rows=ROWS,
    curves: bool = False,
    extra: tuple[str, ...] = (),
) -> Path:
    """A finished sweep directory: multirun.yaml plus one job folder per (row, seed) with
    config.yaml and, unless skipped, metrics.json (and validation logs with ``curves``)."""
    sweep.mkdir(parents=True)
    task = [f"ablation={','.join(rows)}", "experiment=ablation"]
    task += [f"seed={','.join(map(str, seeds))}"] if cli_seeds else []
    # The sweeper's seeds, unless the command line's override them (as `seed=...` does).
    sweeper_seeds = "0" if cli_seeds else ",".join(map(str, seeds))
    multirun = {
        "hydra": {
            "sweeper": {"params": {"ablation": ",".join(ROWS), "seed": sweeper_seeds}},
            "overrides": {"task": task},
        },
        "seed": 0,
    }
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")
    for row in rows:
        for seed in seeds:
            job = sweep / f"{row}-seed{seed}"
            job.mkdir()
            (job / "config.yaml").write_text(_job_config(row, seed, str(data_root), extra))
            if curves:
                _write_validation_log(job, row, seed)
            if (row, seed) not in skip:
                metrics = _metrics([*ROWS, "cbam_bn"].index(row), seed)
                (job / "metrics.json").write_text(json.dumps(metrics))
    return sweep


def _table(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_tables_and_plot_from_fabricated_sweep(tmp_path) -> None:
    sweep = _fabricate(tmp_path / "sweep", tmp_path / "data", cli_seeds=True)
    paths = write_report(sweep)
    assert [p.name for p in paths] == ["ablation.md", "ablation.csv", "ablation.png"]
    table = _table(sweep / "ablation.csv")
    assert [r["row"] for r in table] == ROWS
    for i, line in enumerate(table):
        expected = [100 * _metrics(i, s)["rank1"] for s in (0, 1, 2)]
        assert float(line["rank1_mean"]) == pytest.approx(np.mean(expected), abs=1e-3)
        assert float(line["rank1_std"]) == pytest.approx(np.std(expected, ddof=1), abs=1e-3)
        assert float(line["delta_rank1"]) == pytest.approx(5.0 * i, abs=1e-3)
        assert float(line["delta_mAP"]) == pytest.approx(5.0 * i, abs=1e-3)
        assert line["seeds"] == "0 1 2"
        assert 0 <= float(line["wall_min_mean"]) < 5  # config.yaml to metrics.json
    assert table[0]["attention"] == "none" and table[0]["loss"] == "CE"
    assert table[2]["loss"] == "circle-CE + triplet" and table[5]["attention"] == "cbam"
    assert table[0]["paper_rank1"] == "83.67" and table[5]["paper_mAP"] == "79.70"
    assert table[1]["paper_rank1"] == "n/a"
    markdown = (sweep / "ablation.md").read_text()
    assert "| +CBAM (Ours) | cbam |" in markdown
    # Rows differ by 5 points, seed std 1, 3 seeds each: Welch se = sqrt(2/3), dof = 4,
    # t(0.975, 4) = 2.776445 (t table): half-width 2.776445 * 0.816497 = 2.267, resolved.
    half = 2.776445 * (2 / 3) ** 0.5
    for i, line in enumerate(table[1:], start=1):
        for key in ("rank1", "mAP"):
            assert float(line[f"delta_{key}_low"]) == pytest.approx(5.0 * i - half, abs=1e-3)
            assert float(line[f"delta_{key}_high"]) == pytest.approx(5.0 * i + half, abs=1e-3)
            assert float(line[f"delta_prev_{key}"]) == pytest.approx(5.0, abs=1e-3)
            assert float(line[f"delta_prev_{key}_low"]) == pytest.approx(5.0 - half, abs=1e-3)
    assert table[0]["delta_mAP_low"] == "n/a"  # the Baseline against itself: no spread
    assert "| +Tri | +5.00 [+2.73, +7.27] | +5.00 [+2.73, +7.27] | same direction" in markdown
    assert "| +CBAM (Ours) | +25.00 [+22.73, +27.27] |" in markdown
    assert "paper Δ to Baseline" in markdown and "| +8.73 / +14.45 |" in markdown
    # Each seed's figures: row 5, seed 2: Rank-1 30 + 25 + 2 = 57, mAP 47.
    assert "| +CBAM (Ours) | 55.00 / 45.00 | 56.00 / 46.00 | 57.00 / 47.00 |" in markdown
    # The seed count follows from the spread: std 1 both rows, +-5 needs 2 seeds (t(0.975,2)
    # * sqrt(2/2) = 4.30 <= 5).
    assert "needs 2 seeds per row" in markdown
    assert "Machines: not recorded (18 jobs)." in markdown
    assert "## Validation curves" not in markdown  # no job logged validation
    assert "| cbam-seed2 | " in markdown  # the jobs table
    image = Image.open(sweep / "ablation.png")
    assert image.width > 600 and image.height > 300


def test_chance_level_matches_random_distances_on_the_jobs_test_split(tmp_path) -> None:
    sweep = _fabricate(tmp_path / "sweep", tmp_path / "data", seeds=(0,))
    write_report(sweep)
    found = re.search(r"Rank-1 ([\d.]+), mAP ([\d.]+)\.", (sweep / "ablation.md").read_text())
    assert found, "the report states the chance level"
    # Independent reference: evaluate_rank on random distances over the split the jobs'
    # data config generates.
    spec = compose_config("train", ["debug=fast", "output_dir=x"]).data.synthetic
    root = generate_synthetic_market(tmp_path / "data", SyntheticSpec(**spec))
    dataset = Market1501(root, verbose=False, check_counts=False)
    q = np.array([(p, c) for _, p, c in dataset.query])
    g = np.array([(p, c) for _, p, c in dataset.gallery])
    rng = np.random.default_rng(0)
    draws = [
        evaluate_rank(rng.random((len(q), len(g))), q[:, 0], g[:, 0], q[:, 1], g[:, 1])
        for _ in range(3000)
    ]
    for value, samples in zip(
        map(float, found.groups()),
        ([100 * d["cmc"][0] for d in draws], [100 * d["mAP"] for d in draws]),
        strict=True,
    ):
        stderr = np.std(samples) / np.sqrt(len(samples))
        assert abs(value - np.mean(samples)) < 4 * stderr + 0.005


def test_chance_level_left_out_with_a_warning_when_the_split_is_unreadable(
    tmp_path, capsys
) -> None:
    missing = tmp_path / "no_market"
    sweep = _fabricate(
        tmp_path / "sweep", tmp_path / "data", seeds=(0,), extra=("data=market1501",)
    )
    # The jobs' config names Market-1501 under a folder that does not exist.
    for config in sweep.glob("*/config.yaml"):
        config.write_text(config.read_text().replace(str(tmp_path / "data"), str(missing)))
    write_report(sweep)
    assert "Chance level not computed" in (sweep / "ablation.md").read_text()
    assert "warning: Chance level not computed" in capsys.readouterr().err


def test_single_seed_report_has_zero_std(tmp_path) -> None:
    rows = collect(_fabricate(tmp_path / "sweep", tmp_path / "data", seeds=(0,)))
    assert [len(r.seeds) for r in rows] == [1] * 6
    assert all(r.std("mAP") == 0.0 for r in rows)
    from reid_attn.report import seed_count_text

    text = seed_count_text(rows)  # no spread with one seed: no seed count either
    assert "mAP: +25.00 points" in text and "unknown until both rows have at least two" in text


def test_missing_and_unfinished_jobs_are_listed(tmp_path) -> None:
    sweep = _fabricate(
        tmp_path / "sweep", tmp_path / "data", seeds=(0, 1), skip={("se", 1)}, cli_seeds=True
    )
    shutil.rmtree(sweep / "eca-seed0")
    with pytest.raises(SweepError) as info:
        collect(sweep)
    message = str(info.value)
    assert "2 of 12 expected jobs have no metrics.json in any folder" in message
    assert f"{sweep}: se-seed1, eca-seed0" in message


def test_bad_directories(tmp_path) -> None:
    with pytest.raises(SweepError, match="does not exist"):
        collect(tmp_path / "nope")
    with pytest.raises(SweepError, match="holds no jobs"):
        collect(tmp_path)
    with pytest.raises(SweepError, match="no sweep directory given"):
        collect([])
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


# ----------------------------------------------------------------------- merging sweep parts


def _metric_columns(path: Path) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "wall_min_mean"} for line in _table(path)]


def test_seeds_run_in_parts_merge_into_the_table_of_one_sweep(tmp_path) -> None:
    data = tmp_path / "data"
    whole = _fabricate(tmp_path / "whole", data, seeds=(0, 1, 2), cli_seeds=True)
    part0 = _fabricate(tmp_path / "part0", data, seeds=(0,), cli_seeds=True)
    part12 = _fabricate(tmp_path / "part12", data, seeds=(1, 2), cli_seeds=True)
    write_report(whole)
    paths = write_report([part0, part12], out=tmp_path / "merged", name="ablation_gpu")
    assert [p.name for p in paths] == ["ablation_gpu.md", "ablation_gpu.csv", "ablation_gpu.png"]
    assert _metric_columns(tmp_path / "merged" / "ablation_gpu.csv") == _metric_columns(
        whole / "ablation.csv"
    )
    markdown = (tmp_path / "merged" / "ablation_gpu.md").read_text()
    assert f"# Ablation: {part0}, {part12}" in markdown
    assert f"| baseline-seed0 | {part0} |" in markdown
    assert f"| baseline-seed2 | {part12} |" in markdown
    assert not (part0 / "ablation.md").exists()  # --out, not the first folder


def test_rows_run_in_parts_merge(tmp_path) -> None:
    data = tmp_path / "data"
    first = _fabricate(tmp_path / "a", data, seeds=(0, 1), rows=ROWS[:2], cli_seeds=True)
    rest = _fabricate(tmp_path / "b", data, seeds=(0, 1), rows=ROWS[2:], cli_seeds=True)
    rows = collect([rest, first])
    assert [r.row for r in rows] == ROWS  # ordered by the rows' configured order
    assert rows[3].jobs == [rest / "se-seed0", rest / "se-seed1"]
    assert rows[3].values["rank1"] == pytest.approx([45.0, 46.0])


def test_merge_refuses_a_job_finished_in_two_folders(tmp_path) -> None:
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data, seeds=(0, 1), cli_seeds=True)
    b = _fabricate(tmp_path / "b", data, seeds=(1,), rows=["tri", "cbam"], cli_seeds=True)
    with pytest.raises(SweepError) as info:
        collect([a, b])
    message = str(info.value)
    assert message.startswith("2 jobs are finished in more than one folder")
    assert f"tri-seed1 in {a}, {b}" in message and f"cbam-seed1 in {a}, {b}" in message
    with pytest.raises(SystemExit, match="error: 2 jobs are finished in more than one folder"):
        main([str(a), str(b)])


def test_unfinished_job_counts_once_another_folder_holds_it_finished(tmp_path) -> None:
    data = tmp_path / "data"
    partial = _fabricate(tmp_path / "a", data, seeds=(0,), skip={("se", 0), ("eca", 0)})
    with pytest.raises(SweepError, match=rf"2 of 6 expected jobs .*: {partial}: se-seed0, eca"):
        collect(partial)
    rerun = _fabricate(tmp_path / "b", data, seeds=(0,), rows=["se"])
    with pytest.raises(SweepError, match=rf"1 of 7 expected jobs .*: {partial}: eca-seed0$"):
        collect([partial, rerun])
    rows = collect([partial, rerun, _fabricate(tmp_path / "c", data, seeds=(0,), rows=["eca"])])
    assert [r.jobs[0].parent.name for r in rows] == ["a", "a", "a", "b", "c", "a"]


def test_rows_may_have_more_seeds_than_others(tmp_path) -> None:
    """More seeds for some rows (the headline comparison's) merge; the table counts them."""
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data, seeds=(0,))
    b = _fabricate(tmp_path / "b", data, seeds=(1,), rows=["baseline", "cbam"])
    rows = collect([a, b])
    assert [r.seeds for r in rows] == [[0, 1], [0], [0], [0], [0], [0, 1]]
    write_report([a, b], out=tmp_path / "out")
    markdown = (tmp_path / "out" / "ablation.md").read_text()
    assert "over seeds (0, 1 for 2 rows; 0 for 4 rows)" in markdown
    assert "| +Tri | — |" not in markdown and "| +Tri | 35.00 / 25.00 | — |" in markdown


def test_headline_is_ours_against_the_baseline_when_a_row_follows_ours(tmp_path) -> None:
    """cbam_bn (order 6, no paper figures) runs after Ours: the headline stays Ours."""
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data)
    b = _fabricate(tmp_path / "b", data, rows=["cbam_bn"])
    write_report([a, b], out=tmp_path / "out")
    markdown = (tmp_path / "out" / "ablation.md").read_text()
    # cbam_bn is 30 points above the Baseline, Ours 25; the interval's half-width is 2.267.
    assert "| +CBAM (authors' code) | +30.00 [+27.73, +32.27] |" in markdown
    assert (
        "Headline difference, +CBAM (Ours) minus Baseline, mAP with its 95% Welch interval "
        "over 3 and 3 seeds: +25.00 [+22.73, +27.27]" in markdown
    )


def test_merge_refuses_rows_without_the_common_seeds(tmp_path) -> None:
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data, seeds=(0,), rows=ROWS[:3])
    b = _fabricate(tmp_path / "b", data, seeds=(1, 2), rows=ROWS[3:])
    with pytest.raises(SweepError) as info:
        collect([a, b])
    assert str(info.value) == (
        "rows do not share the seeds 0 of the row with the fewest: missing jobs se-seed0, "
        "eca-seed0, cbam-seed0; run them, or leave out the folders that add the other seeds"
    )


def test_merge_refuses_parts_trained_at_different_precisions(tmp_path) -> None:
    """trainer.precision=auto is one config but bf16 on one CPU and fp32 on another: the jobs'
    machine.json tells them apart."""
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data, seeds=(0,))
    b = _fabricate(tmp_path / "b", data, seeds=(1,))
    machine = {
        "cpu": "AMD EPYC",
        "cores": 2,
        "threads": 2,
        "native_bf16": False,
        "torch": "2.9",
        "cuda": None,
        "precision": "32-true",
    }
    for job in a.iterdir():
        if job.is_dir():
            (job / "machine.json").write_text(json.dumps([machine]))
    for job in b.iterdir():
        if job.is_dir():
            other = {**machine, "cpu": "Intel Xeon", "precision": "bf16-mixed"}
            (job / "machine.json").write_text(json.dumps([other]))
    with pytest.raises(
        SweepError,
        match=r"^jobs trained at different precisions: 32-true "
        rf"\(e.g. {a}/baseline-seed0\), bf16-mixed \(e.g. {b}/baseline-seed1\)",
    ):
        collect([a, b])
    for job in b.iterdir():  # the same precision on another CPU merges; both machines named
        if job.is_dir():
            (job / "machine.json").write_text(json.dumps([{**machine, "cpu": "Intel Xeon"}]))
    write_report([a, b], out=tmp_path / "out")
    markdown = (tmp_path / "out" / "ablation.md").read_text()
    assert (
        "Machines: AMD EPYC, 2 cores (2 threads), native bf16 no, torch 2.9, precision "
        "32-true (6 jobs); Intel Xeon, 2 cores"
    ) in markdown


def test_merge_refuses_parts_run_with_other_settings(tmp_path) -> None:
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data, seeds=(0,))
    b = _fabricate(tmp_path / "b", data, seeds=(1,), extra=("trainer.max_epochs=3",))
    with pytest.raises(SweepError) as info:
        collect([a, b])
    message = str(info.value)
    assert message.startswith("jobs differ in their setting beyond row and seed: ")
    assert "trainer.max_epochs is 1 in " in message and "but 3 in " in message
    # Where and how fast a job ran does not count: other workers and data folders merge.
    c = _fabricate(tmp_path / "c", tmp_path / "data2", seeds=(2,), extra=("data.num_workers=3",))
    assert [r.seeds for r in collect([a, c])] == [[0, 2]] * 6


# ------------------------------------------------------------------------ validation curves


def test_report_draws_and_tabulates_the_validation_curves(tmp_path) -> None:
    sweep = _fabricate(tmp_path / "sweep", tmp_path / "data", curves=True, cli_seeds=True)
    paths = write_report(sweep)
    assert paths[-1] == sweep / "ablation_validation_curves.png"
    image = Image.open(paths[-1])
    assert image.width > 1000 and image.height > 400
    markdown = (sweep / "ablation.md").read_text()
    lines = {line.split(" | ")[0][2:]: line for line in markdown.splitlines()}
    # Mean over seeds 0, 1, 2 at epoch 10: VAL + 2 i + 1; Rank-1 3 points lower.
    # last three validations: 30, 40, 50 (+ offsets) apart; 75, 75.5, 75.2 within 1 point
    assert lines["Baseline"].endswith("| 10 | 48.00 | 51.00 | not levelled | no | 3 |")
    assert lines["+Tri"].endswith("| 10 | 75.20 | 78.20 | 6 | yes | 3 |")
    assert lines["+CBAM (Ours)"].endswith("| 10 | 83.20 | 86.20 | 6 | yes | 3 |")
    assert "![validation curves](ablation_validation_curves.png)" in markdown


def test_curves_leave_out_a_seed_that_validated_fewer_epochs(tmp_path) -> None:
    sweep = _fabricate(tmp_path / "sweep", tmp_path / "data", curves=True, cli_seeds=True)
    # CBAM seed 2 skips the validations of epochs 4 and 8 (as an epoch-length bug once did).
    path = sweep / "cbam-seed2" / "csv" / "metrics.csv"
    kept = [line for line in path.read_text().splitlines() if line.split(",")[0] not in ("3", "7")]
    path.write_text("\n".join(kept) + "\n")
    write_report(sweep)
    markdown = (sweep / "ablation.md").read_text()
    lines = {line.split(" | ")[0][2:]: line for line in markdown.splitlines()}
    # Mean of seeds 0 and 1 only: VAL + 2 * 5 + 0.5 at epoch 10.
    assert lines["+CBAM (Ours)"].endswith(
        "| 10 | 82.70 | 85.70 | 6 | yes | 2; left out: seed 2 (3 of 5 validations) |"
    )
    assert lines["+ECA"].endswith("| yes | 3 |")


def test_curves_need_every_jobs_log(tmp_path) -> None:
    sweep = _fabricate(tmp_path / "sweep", tmp_path / "data", seeds=(0,), curves=True)
    (sweep / "se-seed0" / "csv" / "metrics.csv").unlink()
    with pytest.raises(SweepError, match=r"1 of 6 jobs have no validation lines .*se-seed0"):
        write_report(sweep)


# ------------------------------------------------------------------------------- the figure


def test_figure_gives_each_marker_its_legend_entry_off_the_data(tmp_path) -> None:
    rows = read_table(_table_csv(tmp_path))
    fig = ablation_figure(rows, "t", chance={"rank1": 4.0, "mAP": 2.5})
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "Rank-1 (ours)",
        "Rank-1 (paper)",
        "Rank-1 by chance (4.0; random distances)",
        "mAP (ours)",
        "mAP (paper)",
        "mAP by chance (2.5; random distances)",
    ]
    # The legend lies right of the axes, so it hides no bar or marker.
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    # Each paper figure is drawn, Rank-1 and mAP with different markers: the baseline's two
    # and CBAM's two (83.67 / 65.25, 92.4 / 79.7).
    rank1_paper, map_paper = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert rank1_paper.get_offsets()[:, 1].tolist() == [83.67, 92.4]
    assert map_paper.get_offsets()[:, 1].tolist() == [65.25, 79.7]
    assert rank1_paper.get_paths()[0] != map_paper.get_paths()[0]
    chance_lines = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert chance_lines == [4.0, 2.5]


def _table_csv(tmp_path: Path) -> Path:
    sweep = _fabricate(tmp_path / "sweep", tmp_path / "data", seeds=(0, 1), cli_seeds=True)
    write_report(sweep)
    return sweep / "ablation.csv"


def test_read_table_round_trips_the_written_csv(tmp_path) -> None:
    path = _table_csv(tmp_path)
    rows = collect(path.parent)
    table = read_table(path)
    assert [t.name for t in table] == [r.name for r in rows]
    for t, r in zip(table, rows, strict=True):
        for key in ("rank1", "mAP", "mINP"):
            assert t.mean(key) == pytest.approx(r.mean(key), abs=1e-4)
            assert t.std(key) == pytest.approx(r.std(key), abs=1e-4)
        assert (t.paper_rank1, t.paper_mAP) == (r.paper_rank1, r.paper_mAP)


def test_cli_merges_folders_into_out_with_a_name(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    a = _fabricate(tmp_path / "a", data, seeds=(0,), cli_seeds=True)
    b = _fabricate(tmp_path / "b", data, seeds=(1,), cli_seeds=True)
    main([str(a), str(b), "--out", str(tmp_path / "out"), "--name", "merged"])
    assert "wrote " in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "merged.csv",
        "merged.md",
        "merged.png",
    ]
    assert _table(tmp_path / "out" / "merged.csv")[0]["seeds"] == "0 1"


# ---------------------------------------------------------------------- real sweeps, presets


@pytest.mark.slow  # end to end: subprocess runs of whole sweeps (make test-slow)
def test_multirun_jobs_are_independent_and_reported(tmp_path) -> None:
    """Two ablation jobs in one process give the same metrics as the second job run alone."""
    sweep = tmp_path / "sweep"
    proc = run_train_cli(
        [
            "--multirun",
            "experiment=ablation",
            "debug=fast",
            "trainer.precision=32-true",  # bf16 autocast on the CPU: not bitwise repeatable
            "ablation=tri,tri_cir",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    alone = run_train_cli(
        [
            "experiment=ablation",  # its settings (the paper's lr) without the sweep
            "debug=fast",
            "trainer.precision=32-true",
            "ablation=tri_cir",
            f"hydra.run.dir={tmp_path / 'alone'}",
        ],
        tmp_path,
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
        ("ablation_cpu", "synthetic", []),
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


def test_replot_script_redraws_a_figure_from_its_table(tmp_path, monkeypatch, capsys) -> None:
    from conftest import load_experiment
    from reid_attn.report import split_chance

    table = _table_csv(tmp_path)
    out = tmp_path / "redrawn.png"
    data = tmp_path / "data"
    argv = ["replot", str(table), str(out), "--title", "t", "debug=fast", f"data.root={data}"]
    monkeypatch.setattr("sys.argv", argv)
    load_experiment("replot_ablation").main()
    spec = compose_config("train", ["debug=fast", "output_dir=x", f"data.root={data}"]).data
    chance = split_chance(OmegaConf.to_container(spec, resolve=True))
    printed = capsys.readouterr().out
    assert f"Rank-1 {chance['rank1']:.2f}, mAP {chance['mAP']:.2f}" in printed
    assert Image.open(out).size == Image.open(table.parent / "ablation.png").size
