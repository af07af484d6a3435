"""``python -m reid_attn.report DIR [DIR ...]``: the ablation table, its plot and the validation
curves of one sweep, or of several sweeps run in parts, merged.

Writes ``NAME.md``, ``NAME.csv``, ``NAME.png`` and, when the jobs logged validation,
``NAME_validation_curves.png`` (``NAME``: ``--name``, default ``ablation``) into ``--out``
(default: the first DIR). Merging rules and errors: :mod:`reid_attn.runs.sweeps`. The plot draws
the chance level of the test split (expected Rank-1 and mAP of random distances), computed
exactly from the split the jobs' data config names (``--data-root`` where that data lives
elsewhere than the jobs' config says).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from reid_attn.data import DatasetError
from reid_attn.metrics import METRIC_NAMES, chance_level
from reid_attn.runs.comparison import CONFIDENCE, Difference, seeds_for_half_width, welch_difference
from reid_attn.runs.machine import machine_line
from reid_attn.runs.sweeps import AblationRow, SweepError, collect, job_machines, sweep_config
from reid_attn.runs.timing import epoch_seconds, job_wall_seconds
from reid_attn.runs.validation_curves import RowCurve, complete_row_curve, read_validation_log
from reid_attn.viz.ablation import ablation_figure, save_figure, validation_curves_figure

__all__ = [
    "SweepError",
    "collect",
    "main",
    "read_table",
    "split_chance",
    "write_report",
]

PAPER_NOTE = (
    "Paper: Li & Wang 2021, Table 1 (Market-1501, from scratch, 256x128); n/a where the "
    "paper's text gives no figure."
)


@dataclass
class TableRow:
    """One line of a written ``ablation.csv``: means and stds in percent, paper figures."""

    name: str
    means: dict[str, float]
    stds: dict[str, float]
    paper_rank1: float | None
    paper_mAP: float | None

    def mean(self, key: str) -> float:
        """Mean over seeds (percent)."""
        return self.means[key]

    def std(self, key: str) -> float:
        """Sample std over seeds (percent)."""
        return self.stds[key]


def read_table(path: str | Path) -> list[TableRow]:
    """The rows of an ``ablation.csv`` written by :func:`write_csv` (to redraw its plot)."""

    def paper(value: str) -> float | None:
        return None if value == "n/a" else float(value)

    with Path(path).open(newline="") as handle:
        return [
            TableRow(
                line["name"],
                {k: float(line[f"{k}_mean"]) for k in METRIC_NAMES},
                {k: float(line[f"{k}_std"]) for k in METRIC_NAMES},
                paper(line["paper_rank1"]),
                paper(line["paper_mAP"]),
            )
            for line in csv.DictReader(handle)
        ]


def split_chance(data: dict, root: str | None = None) -> dict[str, float]:
    """Chance level (percent) of the test split of the data config ``data`` (a run's saved
    ``data`` section): ``{"rank1": ..., "mAP": ...}`` of uniformly random distances, exact
    (:func:`reid_attn.metrics.chance_level`). Synthetic data is generated if absent.

    Args:
        data: the ``data`` section of a run's config.
        root: the dataset's folder, when not where ``data.root`` says.
    """
    from reid_attn.data import ReIDDataModule
    from reid_attn.data.datamodule import DATASETS

    module = ReIDDataModule(**{**data, **({"root": root} if root else {})})
    dataset = DATASETS[module.name](module.dataset_root(), verbose=False, check_counts=False)
    query = np.array([(pid, cam) for _, pid, cam in dataset.query])
    gallery = np.array([(pid, cam) for _, pid, cam in dataset.gallery])
    chance = chance_level(query[:, 0], gallery[:, 0], query[:, 1], gallery[:, 1])
    return {key: 100.0 * value for key, value in chance.items()}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_wall_minutes(row: AblationRow) -> float | None:
    walls = [job_wall_seconds(job) for job in row.jobs]
    return None if None in walls else float(np.mean(walls)) / 60.0


def differences(rows: list[AblationRow], key: str) -> list[tuple[Difference, Difference]]:
    """Per row, its difference in ``key`` (points) to the first row (the Baseline) and to the
    row before it, each with its Welch interval
    (:func:`reid_attn.runs.comparison.welch_difference`); the first row's are zero, without an
    interval."""
    pairs = [(Difference(0.0, None, None, None),) * 2]  # the first row against itself
    for i, r in enumerate(rows[1:], start=1):
        pairs.append(
            (
                welch_difference(r.values[key], rows[0].values[key]),
                welch_difference(r.values[key], rows[i - 1].values[key]),
            )
        )
    return pairs


def _interval(diff: Difference, end: str) -> str:
    value = diff.low if end == "low" else diff.high
    return "n/a" if value is None else f"{value:.4f}"


def write_csv(rows: list[AblationRow], path: Path) -> None:
    """One line per ablation row: means, stds, differences to the first row and to the row
    before with their 95% Welch intervals, the paper's figures, the mean job wall time
    (minutes)."""
    diffs = {key: differences(rows, key) for key in ("rank1", "mAP")}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["row", "name", "attention", "loss", "seeds"]
            + [f"{k}_{s}" for k in METRIC_NAMES for s in ("mean", "std")]
            + [
                f"delta{ref}_{k}{end}"
                for ref in ("", "_prev")
                for k in ("rank1", "mAP")
                for end in ("", "_low", "_high")
            ]
            + ["paper_rank1", "paper_mAP", "wall_min_mean"]
        )
        for i, r in enumerate(rows):
            deltas = []
            for ref in (0, 1):
                for k in ("rank1", "mAP"):
                    d = diffs[k][i][ref]
                    deltas += [f"{d.delta:.4f}", _interval(d, "low"), _interval(d, "high")]
            writer.writerow(
                [r.row, r.name, r.attention, r.loss, " ".join(map(str, r.seeds))]
                + [f"{v:.4f}" for k in METRIC_NAMES for v in (r.mean(k), r.std(k))]
                + deltas
                + [_fmt(r.paper_rank1), _fmt(r.paper_mAP), _fmt(_mean_wall_minutes(r))]
            )


def _pm(row: AblationRow, key: str) -> str:
    return f"{row.mean(key):.2f} ± {row.std(key):.2f}"


def markdown_table(rows: list[AblationRow]) -> str:
    """The ablation table in Markdown, percent, mean ± std over seeds, the paper's figures and
    its difference to the Baseline beside them."""
    base = rows[0]
    lines = [
        "| row | attention | loss | seeds | Rank-1 | mAP | mINP | paper Rank-1 | paper mAP "
        "| paper Δ to Baseline (R1 / mAP) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper_delta = (
            f"{r.paper_rank1 - base.paper_rank1:+.2f} / {r.paper_mAP - base.paper_mAP:+.2f}"
            if r is not base
            and None not in (r.paper_rank1, r.paper_mAP, base.paper_rank1, base.paper_mAP)
            else "n/a"
        )
        lines.append(
            f"| {r.name} | {r.attention} | {r.loss} | {len(r.seeds)} "
            f"| {_pm(r, 'rank1')} | {_pm(r, 'mAP')} | {_pm(r, 'mINP')} "
            f"| {_fmt(r.paper_rank1)} | {_fmt(r.paper_mAP)} | {paper_delta} |"
        )
    return "\n".join(lines)


def seeds_table(rows: list[AblationRow]) -> str:
    """Each seed's test Rank-1 / mAP per row (percent)."""
    seeds = sorted({s for r in rows for s in r.seeds})
    lines = [
        "| row | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for r in rows:
        cells = []
        for s in seeds:
            if s in r.seeds:
                i = r.seeds.index(s)
                cells.append(f"{r.values['rank1'][i]:.2f} / {r.values['mAP'][i]:.2f}")
            else:
                cells.append("—")
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(rows: list[AblationRow]) -> str:
    """Per row: its Rank-1 and mAP difference to the Baseline and to the row before, each
    with its 95% Welch interval, and the verdict on each mAP difference."""
    r1, m = differences(rows, "rank1"), differences(rows, "mAP")
    lines = [
        "| row | ΔRank-1 to Baseline | ΔmAP to Baseline | verdict (mAP vs Baseline) "
        "| row before | ΔRank-1 to it | ΔmAP to it | verdict (mAP vs row before) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows[1:], start=1):
        lines.append(
            f"| {r.name} | {r1[i][0].text()} | {m[i][0].text()} | {m[i][0].verdict()} "
            f"| {rows[i - 1].name} | {r1[i][1].text()} | {m[i][1].text()} "
            f"| {m[i][1].verdict()} |"
        )
    return "\n".join(lines)


def headline_row(rows: list[AblationRow]) -> AblationRow:
    """The row the headline compares with the first (the Baseline): the last row after the
    first that has the paper's mAP (the paper gives its figures for Ours), else the last row.
    A row outside the paper's table, such as ``cbam_bn`` after Ours, is never the headline."""
    with_paper = [r for r in rows[1:] if r.paper_mAP is not None]
    return with_paper[-1] if with_paper else rows[-1]


def seed_count_text(rows: list[AblationRow], half_width: float = 5.0) -> str:
    """How the seed count follows from the measured spread: for the headline comparison
    (:func:`headline_row` against the first row, Ours against the Baseline), the mAP interval
    now and the seeds per row that make it no wider than ``+-half_width`` points at the
    measured stds."""
    base, ours = rows[0], headline_row(rows)
    diff = welch_difference(ours.values["mAP"], base.values["mAP"])
    if min(len(ours.seeds), len(base.seeds)) < 2:
        return (
            f"Headline difference, {ours.name} minus {base.name}, mAP: {diff.delta:+.2f} "
            "points; its interval, and the seeds a resolved comparison needs, follow from the "
            "seed spread, unknown until both rows have at least two seeds."
        )
    needed = seeds_for_half_width(ours.std("mAP"), base.std("mAP"), half_width)
    now = (
        "no interval yet (a row has one seed)"
        if diff.low is None
        else f"{diff.text()} (half-width {diff.half_width:.2f}; "
        f"{'resolved: excludes zero' if diff.resolved else 'not resolved: includes zero'})"
    )
    need = "more than 100" if needed is None else f"{needed} seeds per row"
    return (
        f"Headline difference, {ours.name} minus {base.name}, mAP with its "
        f"{100 * CONFIDENCE:.0f}% Welch interval over {len(ours.seeds)} and {len(base.seeds)} "
        f"seeds: {now}. Seed std of mAP: {ours.std('mAP'):.2f} ({ours.name}), "
        f"{base.std('mAP'):.2f} ({base.name}); at these stds an interval of at most "
        f"±{half_width:g} points needs {need} (the comparison is resolved either when its "
        "interval excludes zero or when it is that narrow)."
    )


def machines_text(rows: list[AblationRow]) -> str:
    """The machines the jobs ran on, with their job counts (from each job's
    ``machine.json``)."""
    counts: dict[str, int] = {}
    unknown = 0
    for r in rows:
        for job in r.jobs:
            machines = job_machines(job)
            unknown += not machines
            for line in dict.fromkeys(machine_line(m) for m in machines):
                counts[line] = counts.get(line, 0) + 1
    parts = [f"{line} ({n} job{'s' if n > 1 else ''})" for line, n in counts.items()]
    if unknown:
        parts.append(f"not recorded ({unknown} jobs)")
    return "Machines: " + "; ".join(parts) + "."


def jobs_table(rows: list[AblationRow]) -> str:
    """One Markdown line per job: folder, wall time, seconds per epoch, test figures."""
    lines = [
        "| job | folder | wall time (min) | s/epoch (median) | Rank-1 | mAP |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        for i, job in enumerate(r.jobs):
            wall = job_wall_seconds(job)
            epochs = epoch_seconds(job)
            lines.append(
                f"| {job.name} | {job.parent} | {_fmt(None if wall is None else wall / 60, 1)} "
                f"| {_fmt(float(np.median(epochs)) if epochs.size else None, 1)} "
                f"| {r.values['rank1'][i]:.2f} | {r.values['mAP'][i]:.2f} |"
            )
    return "\n".join(lines)


def _curves(rows: list[AblationRow]) -> list[RowCurve]:
    """Each row's validation curves; [] when no job logged validation. Raises
    :class:`SweepError` naming the jobs without a validation log when only some have one."""
    logs = {job: read_validation_log(job) for r in rows for job in r.jobs}
    lacking = [str(job) for job, log in logs.items() if log is None]
    if len(lacking) == len(logs):
        return []
    if lacking:
        raise SweepError(
            f"{len(lacking)} of {len(logs)} jobs have no validation lines in csv/metrics.csv "
            f"(curves need every job's): {', '.join(lacking)}"
        )
    return [
        complete_row_curve(
            r.name, {f"seed {seed}": logs[job] for seed, job in zip(r.seeds, r.jobs, strict=True)}
        )
        for r in rows
    ]


def curves_table(curves: list[RowCurve]) -> str:
    """Per row: last validated epoch, mean validation figures there, the epoch from which the
    mean validation mAP gains at most 1 point (confirmed by 2 later validations), and whether
    its last three validations lie within 1 point (levelled off by the end); and the seeds
    the curve averages, naming any left out for validating fewer epochs."""
    lines = [
        "| row | last epoch | val Rank-1 | val mAP | val mAP levelled from epoch "
        "| last 3 validations within 1 point | seeds in the curve |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for c in curves:
        levelled = c.levelled()
        lines.append(
            f"| {c.name} | {c.epochs[-1]} | {c.mean['rank1'][-1]:.2f} | {c.mean['mAP'][-1]:.2f} "
            f"| {'not levelled' if levelled is None else levelled} "
            f"| {'yes' if c.settled() else 'no'} "
            f"| {c.seeds}{'; left out: ' + ', '.join(c.left_out) if c.left_out else ''} |"
        )
    return "\n".join(lines)


def _setting_line(rows: list[AblationRow]) -> str:
    cfg = sweep_config(rows)
    epochs = cfg.trainer.max_epochs
    plural = "" if epochs == 1 else "s"
    return (
        f"{cfg.data.name} {cfg.data.height}x{cfg.data.width}, {epochs} epoch{plural}, "
        f"{cfg.data.num_identities}x{cfg.data.num_instances} per batch, "
        f"{cfg.trainer.accelerator} {cfg.trainer.precision}"
    )


def _seed_sets(rows: list[AblationRow]) -> list[tuple[list[int], int]]:
    """The distinct seed sets of the rows with how many rows have each."""
    counts: dict[tuple[int, ...], int] = {}
    for r in rows:
        counts[tuple(r.seeds)] = counts.get(tuple(r.seeds), 0) + 1
    return [(list(k), n) for k, n in counts.items()]


def write_report(
    sweep_dirs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    name: str = "ablation",
    data_root: str | None = None,
) -> list[Path]:
    """Merge the sweeps (:func:`reid_attn.runs.sweeps.collect`) and write ``NAME.md``,
    ``NAME.csv``, ``NAME.png`` and, when the jobs logged validation,
    ``NAME_validation_curves.png`` into ``out`` (default: the first sweep directory).
    Returns the written paths. The chance level is left out, with a warning on stderr, when
    the test split cannot be read."""
    dirs = (
        [Path(sweep_dirs)] if isinstance(sweep_dirs, (str, Path)) else list(map(Path, sweep_dirs))
    )
    rows = collect(dirs)
    out_dir = Path(out) if out is not None else dirs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = "; ".join(
        f"{', '.join(map(str, seed_set))}" + ("" if len(rows) == n else f" for {n} rows")
        for seed_set, n in _seed_sets(rows)
    )
    md_path, csv_path, png_path = (out_dir / f"{name}.{ext}" for ext in ("md", "csv", "png"))
    data = OmegaConf.to_container(sweep_config(rows).data, resolve=True)
    try:
        chance = split_chance(data, data_root)
        chance_text = (
            f"Chance level of this test split (random distances, exact expectation): "
            f"Rank-1 {chance['rank1']:.2f}, mAP {chance['mAP']:.2f}."
        )
    except (DatasetError, OSError, TypeError, ValueError) as exc:  # the table stands without it
        chance, chance_text = None, f"Chance level not computed: {exc}"
        print(f"warning: {chance_text} (pass --data-root)", file=sys.stderr)
    source = dirs[0].name if len(dirs) == 1 else f"{len(dirs)} sweep folders"
    setting = _setting_line(rows)
    write_csv(rows, csv_path)
    save_figure(
        ablation_figure(rows, f"Ablation: {source} ({setting}; seeds {seeds})", chance), png_path
    )
    written = [md_path, csv_path, png_path]
    sections = [
        f"# Ablation: {', '.join(map(str, dirs))}\n",
        f"Setting: {setting}. Percent on the test split, last checkpoint, mean ± sample std "
        f"over seeds ({seeds}). {PAPER_NOTE} {chance_text}\n",
        machines_text(rows) + "\n",
        markdown_table(rows),
        f"\n![ablation]({png_path.name})\n",
        "## Differences\n",
        "Difference of the means (points) with its 95% Welch interval "
        "[low, high] over seeds (unequal variances and seed counts). Resolved: the interval "
        "excludes zero. The paper reports each row as an improvement on the one before and "
        "Ours above all; a verdict says whether a difference is resolved and, if so, whether "
        "it points the paper's way.\n",
        differences_table(rows),
        "\n" + seed_count_text(rows) + "\n",
        "## Each seed\n",
        "Test Rank-1 / mAP (percent) of each job.\n",
        seeds_table(rows),
        "",
    ]
    curves = _curves(rows)
    if curves:
        curves_path = out_dir / f"{name}_validation_curves.png"
        title = f"Validation (held-out training identities): {source}"
        save_figure(validation_curves_figure(curves, title), curves_path)
        written.append(curves_path)
        sections += [
            "## Validation curves\n",
            "Held-out training identities (never the test split), mean over seeds. A seed that "
            "validated fewer epochs than the others of its row is left out of the row's curve "
            "(it would cut the curve to the epochs it shares), and named.\n",
            curves_table(curves),
            f"\n![validation curves]({curves_path.name})\n",
        ]
    sections += [
        "## Jobs\n",
        "Wall time: config.yaml to metrics.json of each job; s/epoch: median over its epochs "
        "after the first (TensorBoard wall times).\n",
        jobs_table(rows),
    ]
    md_path.write_text("\n".join(sections) + "\n")
    return written


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``reid-attn-report``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep_dirs", nargs="+", help="directories of `--multirun experiment=ablation*` sweeps"
    )
    parser.add_argument("--out", help="folder for the report (default: the first directory)")
    parser.add_argument("--name", default="ablation", help="file name stem (default: ablation)")
    parser.add_argument("--data-root", help="the test data's folder, if not the jobs' data.root")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dirs, args.out, args.name, args.data_root)
    except SweepError as exc:
        sys.exit(f"error: {exc}")
    print(Path(paths[0]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
