"""Figures of the ablation report: the table as grouped bars, and the validation curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.figure import Figure

from reid_attn.runs.validation_curves import CURVE_COLUMNS, RowCurve

#: Bars: label and colour per metric; the paper's figure: marker and colour per metric.
BAR_STYLE = {"rank1": ("Rank-1", "#4C72B0"), "mAP": ("mAP", "#DD8452")}
PAPER_MARKERS = {"rank1": ("D", "#1B2F5E"), "mAP": ("s", "#8A3B12")}
CURVE_LABELS = {"mAP": "validation mAP (%)", "rank1": "validation Rank-1 (%)"}


class PlotRow(Protocol):
    """What the bar figure needs of a row: its name, mean and std per metric (percent), and
    the paper's figures (None where the paper gives none)."""

    name: str
    paper_rank1: float | None
    paper_mAP: float | None

    def mean(self, key: str) -> float: ...

    def std(self, key: str) -> float: ...


def ablation_figure(
    rows: Sequence[PlotRow], title: str, chance: dict[str, float] | None = None
) -> Figure:
    """Grouped bars of Rank-1 and mAP per row (mean, std error bars, the mean written on
    top); the paper's figures as one marker per metric; the split's chance level
    ``{"rank1", "mAP"}`` (percent) as dashed lines; the legend beside the axes, off the data.
    """
    fig = Figure(figsize=(1.5 * len(rows) + 4.5, 4.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.38
    handles = []  # legend order: per metric ours, paper, chance
    for offset, key in ((-width / 2, "rank1"), (width / 2, "mAP")):
        label, colour = BAR_STYLE[key]
        means = np.array([r.mean(key) for r in rows])
        stds = np.array([r.std(key) for r in rows])
        bars = ax.bar(
            x + offset, means, width, yerr=stds, capsize=4, color=colour, label=f"{label} (ours)"
        )
        handles.append(bars)
        for xi, top, mean in zip(x + offset, means + stds, means, strict=True):
            ax.text(xi, top + 1.0, f"{mean:.1f}", ha="center", va="bottom", fontsize=7)
        marker, marker_colour = PAPER_MARKERS[key]
        paper = [(xi, getattr(r, f"paper_{key}")) for xi, r in zip(x + offset, rows, strict=True)]
        paper = [(px, py) for px, py in paper if py is not None]
        if paper:
            markers = ax.scatter(
                *zip(*paper, strict=True),
                marker=marker,
                color=marker_colour,
                edgecolor="white",
                s=40,
                zorder=3,
                label=f"{label} (paper)",
            )
            handles.append(markers)
        if chance is not None:
            line = ax.axhline(
                chance[key],
                color=colour,
                linestyle="--",
                linewidth=1.2,
                label=f"{label} by chance ({chance[key]:.1f}; random distances)",
            )
            handles.append(line)
    ax.set_xticks(x, [r.name for r in rows], fontsize=8)
    ax.set_ylabel("percent (test split)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return fig


def validation_curves_figure(curves: Sequence[RowCurve], title: str) -> Figure:
    """Validation mAP and Rank-1 against epoch: one line per row (mean over its seeds) with
    the seeds' range shaded; one legend for both panels, beside them, giving each row's seeds
    in the curve (e.g. "2 of 3 seeds" when one is left out)."""
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    colours = [f"C{i}" for i in range(10)]
    for ax, key in zip(axes, CURVE_COLUMNS, strict=True):
        for i, curve in enumerate(curves):
            colour = colours[i % len(colours)]
            total = curve.seeds + len(curve.left_out)
            of_total = f" of {total}" if curve.left_out else ""
            label = curve.name if total == 1 else f"{curve.name} ({curve.seeds}{of_total} seeds)"
            ax.plot(curve.epochs, curve.mean[key], marker="o", ms=3, color=colour, label=label)
            if curve.seeds > 1:
                ax.fill_between(
                    curve.epochs, curve.low[key], curve.high[key], color=colour, alpha=0.15
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(CURVE_LABELS[key])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}\nmean over seeds, shaded: range over seeds", fontsize=10)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (120 dpi); returns the path."""
    fig.savefig(path, dpi=120)
    return Path(path)
