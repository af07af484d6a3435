"""CMC curves of one or several runs from their ``metrics.json``, mAP in the legend.

``python -m reid_attn.viz.cmc RUN_DIR [RUN_DIR ...] [--out cmc.png] [--labels A B ...]
[--max-rank 20]`` (the default output is ``cmc.png`` inside the first run directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


class RunFilesError(ValueError):
    """A run directory lacks a readable ``metrics.json`` with a ``cmc`` vector and ``mAP``."""


def _metrics_path(run: str | Path) -> Path:
    path = Path(run).expanduser()
    return path if path.suffix == ".json" else path / "metrics.json"


def load_cmc(run: str | Path) -> tuple[np.ndarray, float]:
    """``(cmc (max_rank,) fractions, mAP fraction)`` from ``run/metrics.json`` (or the json
    file itself). Raises :class:`RunFilesError` naming what is missing."""
    path = _metrics_path(run)
    if not path.is_file():
        raise RunFilesError(f"{path} does not exist (expected a run directory with metrics.json)")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunFilesError(f"cannot read {path}: {exc}") from exc
    if not isinstance(metrics, dict) or "cmc" not in metrics or "mAP" not in metrics:
        raise RunFilesError(f"{path} has no 'cmc' vector and 'mAP' (written by an older version?)")
    cmc = np.asarray(metrics["cmc"], dtype=np.float64)
    if cmc.ndim != 1 or cmc.size == 0 or cmc.min() < 0 or cmc.max() > 1:
        raise RunFilesError(f"{path}: 'cmc' must be a non-empty list of fractions in [0, 1]")
    return cmc, float(metrics["mAP"])


def run_label(run: str | Path) -> str:
    """A legend label for a run: its Hydra command-line overrides when it has any (from
    ``.hydra/overrides.yaml``), else the folder name."""
    path = _metrics_path(run).parent
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        items = [
            line[2:].strip()
            for line in overrides.read_text().splitlines()
            if line.startswith("- ") and not line[2:].startswith(("output_dir", "data.root"))
        ]
        if items:
            return " ".join(items)
    return path.name


def cmc_figure(
    curves: Sequence[tuple[str, np.ndarray, float]],
    max_rank: int | None = 20,
    figsize: Sequence[float] = (5.0, 3.8),
    title: str = "CMC",
) -> Figure:
    """Plot CMC curves ``(label, cmc (R,), mAP)``: matching rate in percent over ranks
    1..min(R, max_rank); each legend entry reads ``label (mAP xx.x%)``."""
    if not curves:
        raise ValueError("cmc_figure needs at least one curve")
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    fig = Figure(figsize=tuple(figsize), layout="constrained")
    ax = fig.subplots()
    for label, cmc, mean_ap in curves:
        ranks = len(cmc) if max_rank is None else min(len(cmc), max_rank)
        x = np.arange(1, ranks + 1)
        legend = f"{label} (mAP {100.0 * mean_ap:.1f}%)"
        ax.plot(x, 100.0 * np.asarray(cmc[:ranks]), marker="o", ms=2.5, lw=1.4, label=legend)
    ax.set_xlabel("rank")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_cmc(
    run_dirs: Sequence[str | Path],
    out_path: str | Path,
    labels: Sequence[str] | None = None,
    max_rank: int | None = 20,
    dpi: int = 120,
) -> Path:
    """Write the CMC curves of ``run_dirs`` (each a run directory or a ``metrics.json``) to the
    PNG ``out_path`` and return it. ``labels`` default to :func:`run_label`."""
    if not run_dirs:
        raise ValueError("plot_cmc needs at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels given for {len(run_dirs)} runs")
    curves = []
    for i, run in enumerate(run_dirs):
        cmc, mean_ap = load_cmc(run)
        curves.append((labels[i] if labels else run_label(run), cmc, mean_ap))
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    cmc_figure(curves, max_rank=max_rank).savefig(out, dpi=dpi)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m reid_attn.viz.cmc RUN_DIR [RUN_DIR ...] --out cmc.png``."""
    parser = argparse.ArgumentParser(
        prog="python -m reid_attn.viz.cmc",
        description="Plot the CMC curves of runs from their metrics.json (mAP in the legend).",
    )
    parser.add_argument("runs", nargs="+", help="run directories (or metrics.json files)")
    parser.add_argument("--out", help="output PNG (default: cmc.png in the first run directory)")
    parser.add_argument("--labels", nargs="+", help="one legend label per run")
    parser.add_argument("--max-rank", type=int, default=20, help="last rank shown (default 20)")
    parser.add_argument("--dpi", type=int, default=120, help="PNG resolution (default 120)")
    args = parser.parse_args(argv)
    out = args.out or _metrics_path(args.runs[0]).parent / "cmc.png"
    try:
        path = plot_cmc(args.runs, out, args.labels, args.max_rank, args.dpi)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(f"CMC curves of {len(args.runs)} run(s) written to {path}")


if __name__ == "__main__":
    main()
