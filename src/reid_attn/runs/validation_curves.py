"""Validation curves of training runs: read, aggregate over seeds, judge convergence.

Every run logs its validation retrieval figures (held-out training identities, never the
test split) to ``<run>/csv/metrics.csv`` through Lightning's CSVLogger: a line with
``val/mAP`` and ``val/rank1`` (fractions) after each validated epoch, ``epoch`` being the
0-based index of the epoch just trained. Here epochs count completed epochs (1-based) and
the figures are percent.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Curve keys and the CSV columns they come from.
CURVE_COLUMNS = {"mAP": "val/mAP", "rank1": "val/rank1"}


@dataclass
class ValidationLog:
    """One run's validation curve: ``epochs`` (completed, ascending) and, per key of
    :data:`CURVE_COLUMNS`, the values in percent (same length)."""

    epochs: np.ndarray
    values: dict[str, np.ndarray]


def read_validation_log(run_dir: str | Path) -> ValidationLog | None:
    """The validation curve in ``run_dir/csv/metrics.csv``; None when the file is absent or
    holds no validation line. An epoch validated twice (a resumed run replays the
    interrupted epoch) keeps its last line."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    by_epoch: dict[int, dict[str, float]] = {}
    with path.open(newline="") as handle:
        for line in csv.DictReader(handle):
            if line.get("val/mAP"):
                by_epoch[int(line["epoch"]) + 1] = {
                    key: 100.0 * float(line[column]) for key, column in CURVE_COLUMNS.items()
                }
    if not by_epoch:
        return None
    epochs = np.array(sorted(by_epoch))
    values = {key: np.array([by_epoch[e][key] for e in epochs]) for key in CURVE_COLUMNS}
    return ValidationLog(epochs, values)


def levelled_epoch(
    epochs: np.ndarray, values: np.ndarray, tolerance: float = 1.0, confirm: int = 2
) -> int | None:
    """The first validated epoch after which the curve gains at most ``tolerance`` (points):
    ``max(values[i:]) - values[i] <= tolerance``, confirmed by at least ``confirm`` later
    validations. None when no epoch qualifies (the curve has not levelled off)."""
    for i in range(len(values) - confirm):
        if values[i:].max() - values[i] <= tolerance:
            return int(epochs[i])
    return None


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Each value averaged with the ``window - 1`` validations before it (fewer at the start):
    tames the noise of a small validation split (16 identities: +-5 mAP points from one
    epoch to the next at a constant learning rate)."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([values[max(0, i - window + 1) : i + 1].mean() for i in range(len(values))])


def settled_at_end(values: np.ndarray, count: int = 3, tolerance: float = 1.0) -> bool:
    """Whether the last ``count`` validations lie within ``tolerance`` points of each other
    (a finished schedule's curve has levelled off by its end)."""
    last = np.asarray(values, dtype=np.float64)[-count:]
    return len(last) == count and float(last.max() - last.min()) <= tolerance


@dataclass
class RowCurve:
    """One ablation row's curves over its seeds, at the epochs every seed validated:
    mean, minimum and maximum over seeds per key (percent). ``left_out``: the seeds that
    validated fewer epochs than the others and are not in the curve, each with its count
    (see :func:`complete_row_curve`)."""

    name: str
    epochs: np.ndarray
    mean: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    seeds: int
    left_out: tuple[str, ...] = ()

    def levelled(self, tolerance: float = 1.0, confirm: int = 2, window: int = 1) -> int | None:
        """:func:`levelled_epoch` of the mean validation mAP (its :func:`trailing_mean` over
        ``window`` validations)."""
        values = trailing_mean(self.mean["mAP"], window)
        return levelled_epoch(self.epochs, values, tolerance, confirm)

    def settled(self, count: int = 3, tolerance: float = 1.0) -> bool:
        """:func:`settled_at_end` of the mean validation mAP."""
        return settled_at_end(self.mean["mAP"], count, tolerance)


def row_curve(name: str, logs: list[ValidationLog]) -> RowCurve:
    """Aggregate the seeds' ``logs`` of one row at the epochs all of them validated.

    Raises ValueError when ``logs`` is empty or the seeds share no validated epoch."""
    if not logs:
        raise ValueError(f"row {name!r}: no validation logs to aggregate")
    common = logs[0].epochs
    for log in logs[1:]:
        common = np.intersect1d(common, log.epochs)
    if common.size == 0:
        raise ValueError(f"row {name!r}: its seeds share no validated epoch")
    stacked = {
        key: np.stack([log.values[key][np.isin(log.epochs, common)] for log in logs])
        for key in CURVE_COLUMNS
    }
    return RowCurve(
        name,
        common,
        {k: v.mean(0) for k, v in stacked.items()},
        {k: v.min(0) for k, v in stacked.items()},
        {k: v.max(0) for k, v in stacked.items()},
        len(logs),
    )


def complete_row_curve(name: str, logs: dict[str, ValidationLog]) -> RowCurve:
    """:func:`row_curve` of the seeds (``logs``: label -> log) that validated every epoch any
    seed of the row validated. A seed that skipped validations would cut the curve down to
    the epochs it shares with the others, so it is left out and named in
    :attr:`RowCurve.left_out` with its count, e.g. ``"seed 2 (9 of 30 validations)"``. When
    no seed validated them all, every seed counts, at the epochs they share."""
    every = [log.epochs for log in logs.values()]
    union = np.unique(np.concatenate(every)) if every else np.array([])
    complete = [label for label, log in logs.items() if log.epochs.size == len(union)]
    if not complete or len(complete) == len(logs):
        return row_curve(name, list(logs.values()))
    curve = row_curve(name, [logs[label] for label in complete])
    curve.left_out = tuple(
        f"{label} ({logs[label].epochs.size} of {len(union)} validations)"
        for label in logs
        if label not in complete
    )
    return curve
