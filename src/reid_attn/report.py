"""``python -m reid_attn.report SWEEP_DIR``: the ablation table (md, csv) and plot of a sweep.

A sweep directory is what ``python -m reid_attn.train --multirun experiment=ablation...`` writes:
``multirun.yaml`` and one sub-directory per job holding ``config.yaml`` (written when the job
starts) and ``metrics.json`` (written when it ends).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from reid_attn.metrics import METRIC_NAMES


class SweepError(Exception):
    """The sweep directory is missing, empty, unfinished or not an ablation sweep."""


@dataclass
class AblationRow:
    """All seeds of one ablation row; metric values in percent."""

    row: str
    name: str
    order: int
    attention: str
    loss: str
    paper_rank1: float | None
    paper_mAP: float | None
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRIC_NAMES})

    def mean(self, key: str) -> float:
        """Mean over seeds (percent)."""
        return float(np.mean(self.values[key]))

    def std(self, key: str) -> float:
        """Sample standard deviation over seeds (percent); 0 for a single seed."""
        vals = self.values[key]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _sweep_values(multirun: dict, key: str) -> list[str] | None:
    """Values of ``key`` the sweep ran over: a command-line sweep overrides the sweeper's."""
    for override in multirun.get("hydra", {}).get("overrides", {}).get("task", []):
        name, _, value = override.partition("=")
        if name.lstrip("+") == key:
            return [v.strip() for v in value.split(",")]
    params = multirun.get("hydra", {}).get("sweeper", {}).get("params") or {}
    if key in params:
        return [v.strip() for v in str(params[key]).split(",")]
    return None


def expected_jobs(sweep_dir: Path) -> list[str] | None:
    """Sub-directory names the sweep should contain (``<row>-seed<seed>``), from
    ``multirun.yaml``; None when the file does not say."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    multirun = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    rows, seeds = _sweep_values(multirun, "ablation"), _sweep_values(multirun, "seed")
    if rows is None:
        raise SweepError(
            f"{sweep_dir} is not an ablation sweep: multirun.yaml sweeps no 'ablation'"
        )
    if seeds is None:
        seeds = [str(multirun.get("seed", 0))]
    return [f"{row}-seed{seed}" for row, seed in itertools.product(rows, seeds)]


def collect(sweep_dir: str | Path) -> list[AblationRow]:
    """Read every job of ``sweep_dir``; rows sorted by their configured order.

    Raises :class:`SweepError` on a missing or empty directory, or when jobs are missing or
    unfinished (the message lists them)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SweepError(f"sweep directory {sweep_dir} does not exist")
    job_dirs = sorted(p.parent for p in sweep_dir.glob("*/config.yaml"))
    if not job_dirs:
        raise SweepError(
            f"{sweep_dir} holds no jobs (no */config.yaml); run "
            "`python -m reid_attn.train --multirun experiment=ablation` first"
        )
    expected = expected_jobs(sweep_dir) or [p.name for p in job_dirs]
    missing = [name for name in expected if not (sweep_dir / name / "metrics.json").is_file()]
    if missing:
        raise SweepError(
            f"{sweep_dir}: {len(missing)} of {len(expected)} jobs have no metrics.json "
            f"(missing or unfinished): {', '.join(missing)}"
        )
    rows: dict[str, AblationRow] = {}
    for name in expected:
        cfg = OmegaConf.load(sweep_dir / name / "config.yaml")
        if "ablation" not in cfg or cfg.ablation is None:
            raise SweepError(f"{sweep_dir / name} is not an ablation job (no 'ablation' config)")
        ab = cfg.ablation
        row = rows.setdefault(
            ab.row,
            AblationRow(
                ab.row,
                ab.name,
                ab.order,
                cfg.model.attention,
                _loss_name(cfg),
                ab.paper_rank1,
                ab.paper_mAP,
            ),
        )
        metrics = json.loads((sweep_dir / name / "metrics.json").read_text())
        row.seeds.append(int(cfg.seed))
        for key in METRIC_NAMES:
            row.values[key].append(100.0 * float(metrics[key]))
    return sorted(rows.values(), key=lambda r: r.order)


def _loss_name(cfg) -> str:
    loss = cfg.loss
    parts = [("circle-CE" if loss.classifier == "circle" else "CE")] if loss.ce_weight > 0 else []
    if loss.triplet_weight > 0:
        parts.append("triplet")
    if loss.circle_pair_weight > 0:
        parts.append("pair-circle")
    return " + ".join(parts)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_csv(rows: list[AblationRow], path: Path) -> None:
    """One line per ablation row: means, stds, deltas to the first row, the paper's figures."""
    base = rows[0]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["row", "name", "attention", "loss", "seeds"]
            + [f"{k}_{s}" for k in METRIC_NAMES for s in ("mean", "std")]
            + ["delta_rank1", "delta_mAP", "paper_rank1", "paper_mAP"]
        )
        for r in rows:
            writer.writerow(
                [r.row, r.name, r.attention, r.loss, " ".join(map(str, r.seeds))]
                + [f"{v:.4f}" for k in METRIC_NAMES for v in (r.mean(k), r.std(k))]
                + [
                    f"{r.mean('rank1') - base.mean('rank1'):.4f}",
                    f"{r.mean('mAP') - base.mean('mAP'):.4f}",
                    _fmt(r.paper_rank1),
                    _fmt(r.paper_mAP),
                ]
            )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _pm(row: AblationRow, key: str) -> str:
    return f"{row.mean(key):.2f} ± {row.std(key):.2f}"


def markdown_table(rows: list[AblationRow]) -> str:
    """The ablation table in Markdown, percent, mean ± std over seeds."""
    base = rows[0]
    lines = [
        "| row | attention | loss | seeds | Rank-1 | mAP | mINP | ΔRank-1 | ΔmAP "
        "| beyond spread | paper Rank-1 | paper mAP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d1, dm = r.mean("rank1") - base.mean("rank1"), r.mean("mAP") - base.mean("mAP")
        spread_r1 = r.std("rank1") + base.std("rank1")
        spread_map = r.std("mAP") + base.std("mAP")
        beyond = (
            "—"
            if r is base
            else (f"R1 {_yes(abs(d1) > spread_r1)}, mAP {_yes(abs(dm) > spread_map)}")
        )
        lines.append(
            f"| {r.name} | {r.attention} | {r.loss} | {len(r.seeds)} "
            f"| {_pm(r, 'rank1')} | {_pm(r, 'mAP')} | {_pm(r, 'mINP')} "
            f"| {d1:+.2f} | {dm:+.2f} | {beyond} "
            f"| {_fmt(r.paper_rank1)} | {_fmt(r.paper_mAP)} |"
        )
    return "\n".join(lines)


def plot(rows: list[AblationRow], path: Path, title: str) -> None:
    """Grouped bars of Rank-1 and mAP (mean, std error bars), paper figures as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.5 * len(rows) + 2, 4.2))
    for offset, key, label, colour in (
        (-width / 2, "rank1", "Rank-1", "#4C72B0"),
        (width / 2, "mAP", "mAP", "#DD8452"),
    ):
        means = [r.mean(key) for r in rows]
        stds = [r.std(key) for r in rows]
        ax.bar(
            x + offset, means, width, yerr=stds, capsize=4, label=f"{label} (ours)", color=colour
        )
        paper = [(i + offset, getattr(r, f"paper_{key}")) for i, r in enumerate(rows)]
        paper = [(px, py) for px, py in paper if py is not None]
        if paper:
            ax.scatter(
                *zip(*paper, strict=True),
                marker="D",
                color="black",
                zorder=3,
                label=f"{label} (paper)" if key == "rank1" else None,
                s=18,
            )
    ax.set_xticks(x, [r.name for r in rows])
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: str | Path) -> list[Path]:
    """Write ``ablation.md``, ``ablation.csv`` and ``ablation.png`` into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    seeds = sorted({s for r in rows for s in r.seeds})
    md_path, csv_path, png_path = (sweep_dir / f"ablation.{ext}" for ext in ("md", "csv", "png"))
    write_csv(rows, csv_path)
    plot(rows, png_path, f"Ablation: {sweep_dir.name} (seeds {', '.join(map(str, seeds))})")
    md_path.write_text(
        f"# Ablation: {sweep_dir}\n\nPercent on the test split, last checkpoint, mean ± sample std "
        f"over seeds {', '.join(map(str, seeds))}. Δ: difference of the means to the first row. "
        "'beyond spread': |Δ| larger than the sum of the two rows' stds. Paper: Li & Wang 2021, "
        "Table 1 (Market-1501, from scratch, 256x128); n/a where the paper's text gives no "
        f"figure.\n\n{markdown_table(rows)}\n\n![ablation](ablation.png)\n"
    )
    return [md_path, csv_path, png_path]


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``reid-attn-report``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="directory of a `--multirun experiment=ablation*` sweep")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir)
    except SweepError as exc:
        sys.exit(f"error: {exc}")
    print(Path(paths[0]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
