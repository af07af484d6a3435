"""Lightning callbacks: a run reproducible across a kill, stopped on a bad loss, its pace told.

* :class:`SeedEachEpoch` makes every random draw of a training epoch a function of
  ``(seed, epoch, rank)`` alone, so an epoch replayed after ``resume=true`` is the epoch an
  uninterrupted run trains.
* :class:`EpochLength` gives Lightning each epoch's own number of PK batches, so every epoch
  trains all its batches and ends with its validation.
* :class:`EstimateRunTime` prints, after the first epoch, how long the run will take here.
* :class:`StopOnNonFiniteLoss` stops training at the first NaN / inf loss, before the
  optimiser applies it, naming the step and the last checkpoint (which is never overwritten
  by the broken weights).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from reid_attn.data.datamodule import epoch_seed


class NonFiniteLossError(Exception):
    """Training produced a NaN or infinite loss; the message names the step and checkpoint."""


class SeedEachEpoch(pl.Callback):
    """At each training epoch's start, re-seed Python's, NumPy's and torch's global generators
    and the train loader's ``generator`` (the source of its worker seeds) from
    :func:`epoch_seed` ``(seed, epoch, global_rank)``.

    Without it the draws of epoch ``e`` depend on every draw of epochs ``0..e-1`` made in the
    same process, so a run resumed at epoch ``e`` would diverge from an uninterrupted one. The
    loader's generator is seeded the same way when the loader is built
    (:meth:`ReIDDataModule.train_dataloader`), which covers the first epoch after a resume,
    whose worker processes Lightning starts before this hook runs.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        loader = trainer.train_dataloader
        if isinstance(loader, DataLoader) and loader.generator is not None:
            loader.generator.manual_seed(value)


class StopOnNonFiniteLoss(pl.Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is NaN or infinite on any rank.

    With ``every_n_steps=1`` the loss is checked at every step, before its backward pass, so no
    non-finite update reaches the weights. Reading the loss on the host makes the CPU wait for
    the accelerator, so with ``every_n_steps=N > 1`` the check is a flag kept on the device and
    read every N steps, at each epoch's end and before every checkpoint is written: a
    checkpoint never holds the broken weights, but up to N-1 updates may follow the first bad
    loss in memory.

    Args:
        last_checkpoint: the run's ``last.ckpt``, named by the message as the last good
            checkpoint when it exists.
        every_n_steps: how often the loss is read on the host (``loss_check_every_n_steps``).
    """

    def __init__(self, last_checkpoint: str | Path, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.last_checkpoint = Path(last_checkpoint)
        self.every_n_steps = every_n_steps
        self._all_finite: Tensor | None = None  # since the last check (every_n_steps > 1)
        self._last_step = 0  # the global step of the last loss folded into _all_finite

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        finite = torch.isfinite(loss.detach()).all()
        if self.every_n_steps == 1:
            self._stop_unless(trainer, bool(finite), f"at global step {trainer.global_step}", loss)
            return
        self._all_finite = finite if self._all_finite is None else self._all_finite & finite
        self._last_step = trainer.global_step
        if (trainer.global_step + 1) % self.every_n_steps == 0:
            self._check_flag(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_flag(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self._check_flag(trainer)  # raised before the file is written

    def _check_flag(self, trainer: pl.Trainer) -> None:
        if self._all_finite is None:
            return
        finite, self._all_finite = bool(self._all_finite), None
        where = (
            f"at or before global step {self._last_step} (loss_check_every_n_steps="
            f"{self.every_n_steps})"
        )
        self._stop_unless(trainer, finite, where, None)

    def _stop_unless(
        self, trainer: pl.Trainer, finite: bool, where: str, loss: Tensor | None
    ) -> None:
        # every rank stops at the same step (a rank alone would leave the others waiting)
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        if finite:
            shown = "not finite on another rank"
        elif loss is None:
            shown = "not finite"
        else:
            shown = loss.detach().float().sum().item()
        last = self.last_checkpoint
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint yet"
        raise NonFiniteLossError(
            f"training stopped: the loss is {shown} {where} "
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}); "
            f"{kept}. Lower optimizer.lr or check the data and train again"
        )


def format_duration(seconds: float) -> str:
    """``"4 min 05 s"`` (or ``"1 h 02 min"`` from an hour on, ``"42 s"`` under a minute)."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _is_whole(fraction: object) -> bool:
    """Whether a Lightning batch setting is the float fraction 1.0 (not the count 1)."""
    return isinstance(fraction, float) and fraction == 1.0


class EpochLength(pl.Callback):
    """At each training epoch's start, tell Lightning how many batches this epoch has.

    The PK sampler's batch count varies from epoch to epoch (the default data: 24 or 25), but
    Lightning reads it once, from the first epoch: it cut a longer epoch short at that count
    and, since it validates when the batch index reaches it, skipped the validation of every
    shorter epoch. Here the epoch's own count (the sampler is already set to the epoch) becomes
    the loop's limit and validation batch. Only for the plain setting: a whole epoch a
    validation (``val_check_interval=1.0``), no ``limit_train_batches`` / ``overfit_batches``
    / ``fast_dev_run``, which keep Lightning's own count.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning tells a fraction (float 1.0: all) from a count (int 1: one batch) by type
        plain = (
            _is_whole(trainer.limit_train_batches)
            and _is_whole(trainer.val_check_interval)
            and not trainer.overfit_batches
            and not trainer.fast_dev_run
        )
        loader = getattr(trainer.fit_loop, "_combined_loader", None)
        if not plain or loader is None:
            return
        lengths = [len(iterable) for iterable in loader.flattened]
        loader.limits = lengths
        trainer.fit_loop.max_batches = max(lengths)
        if trainer.val_check_batch is not None:  # None: validation on a wall-time interval
            trainer.val_check_batch = max(1, max(lengths))


class EstimateRunTime(pl.Callback):
    """After the first epoch trained in this process (training, validation and checkpoints
    included), print how long the remaining epochs will take on this machine at that pace:
    this project's machines differ about 3x in speed, so a fixed figure in the docs cannot say.
    The first epoch's extra cost (warm-up of the kernels) makes it a slight overestimate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: tuple[int, float] | None = None
        self.printed = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = self.clock()
        if self.started is None:
            self.started = (trainer.current_epoch, now)
            return
        if self.printed or not trainer.is_global_zero:
            return
        self.printed = True
        first_epoch, start = self.started
        per_epoch = (now - start) / (trainer.current_epoch - first_epoch)
        left = trainer.max_epochs - trainer.current_epoch
        print(
            f"pace: {format_duration(per_epoch)} an epoch on this machine; the remaining "
            f"{left} of {trainer.max_epochs} epochs take about {format_duration(left * per_epoch)} "
            "(then the test)",
            flush=True,
        )
