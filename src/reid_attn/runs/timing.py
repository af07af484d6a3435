"""Wall times of a finished training run, from the files it wrote (nothing extra is logged).

* The job: ``config.yaml`` is written when the run starts, ``metrics.json`` when it ends
  (data set-up, training, validation and test included). Copies keep these times only when
  the copy keeps modification times (``tar``, ``cp -p``, ``rsync -t``).
* An epoch: the TensorBoard log records the wall-clock time of every scalar; the epoch-level
  ``train/loss_epoch`` is written once at the end of each training epoch (after its
  validation, if any), so consecutive ones are one epoch apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EPOCH_TAG = "train/loss_epoch"


def job_wall_seconds(run_dir: str | Path) -> float | None:
    """Seconds from the run's ``config.yaml`` to its ``metrics.json``; None if either is
    missing."""
    start, end = Path(run_dir) / "config.yaml", Path(run_dir) / "metrics.json"
    if not (start.is_file() and end.is_file()):
        return None
    return end.stat().st_mtime - start.stat().st_mtime


def epoch_seconds(run_dir: str | Path) -> np.ndarray:
    """Durations (seconds) of the run's epochs after the first, from the wall times of
    ``train/loss_epoch`` in ``run_dir/tensorboard/events.*``: shape ``(epochs - 1,)``, empty
    when fewer than two epochs were logged."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = []
    for path in sorted((Path(run_dir) / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if any(value.tag == EPOCH_TAG for value in event.summary.value):
                times.append(event.wall_time)
    return np.diff(np.sort(np.array(times, dtype=np.float64)))
