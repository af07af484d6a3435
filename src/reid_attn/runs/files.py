"""Files every run writes (``config.yaml``, ``metrics.json``, checkpoints, all written
atomically), the run directory's new-or-resume rule, the checkpoint loader, and how entry
points report bad input."""

from __future__ import annotations

import csv
import errno
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.io import TorchCheckpointIO

from reid_attn.callbacks import NonFiniteLossError
from reid_attn.config import ConfigError
from reid_attn.data import DatasetError
from reid_attn.metrics import METRIC_NAMES
from reid_attn.models.pretrained import PretrainedWeightsError
from reid_attn.runs.console import quiet_third_party
from reid_attn.runs.machine import machine_info


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or not a reid-attn checkpoint."""


class OutputError(Exception):
    """A run's files cannot be written (no permission, read-only file system, disk full)."""


#: Errors that mean bad input: entry points print them as one line, without a traceback.
USER_ERRORS = (
    ConfigError,
    DatasetError,
    CheckpointError,
    OutputError,
    NonFiniteLossError,
    PretrainedWeightsError,
    ValueError,
)
#: ``OSError`` numbers that mean the output cannot be written; entry points print them as one line.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
#: What marks a folder as holding a run: a new run never writes into such a folder.
RUN_MARKERS = ("config.yaml", "checkpoints", "metrics.json")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Create ``path`` by ``write(file)`` on a temporary file beside it, flushed to disk, then
    renamed over ``path`` (``os.replace``): a kill or a full disk leaves either the previous
    file or the new one, never a partial file. Raises :class:`OutputError` naming ``path``."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as exc:
        if partial.exists():
            partial.unlink()
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO writing each checkpoint through :func:`atomic_write`. (Lightning's
    own stages the file in the system temporary folder and moves it, which is a copy, not an
    atomic rename, when that folder is on another file system.)"""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda file: torch.save(checkpoint, file))


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued (its header read,
    new lines appended) instead of deleted."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes the earlier metrics.csv
        pass


class ResumedCSVLogger(CSVLogger):
    """CSVLogger for a resumed run: ``csv/metrics.csv`` keeps the lines logged before the kill
    (Lightning's own logger deletes the file when it starts), so the validation curve of a
    resumed run covers all its epochs (a replayed epoch's lines appear twice; readers keep
    the last)."""

    @property
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use with the run's earlier lines kept."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def write_metrics(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``metrics.json`` (fractions in [0, 1] under ``rank1 rank5 rank10 mAP mINP`` and
    the ``cmc`` vector, and ``objective`` when the results have one) into ``output_dir`` and
    return its path."""
    keys = (*METRIC_NAMES, "cmc", *(["objective"] if "objective" in results else []))
    text = json.dumps({k: results[k] for k in keys}, indent=2)
    return atomic_write(Path(output_dir) / "metrics.json", lambda file: file.write(text.encode()))


def write_machine(output_dir: str | Path, precision: str) -> Path:
    """Append this machine (:func:`reid_attn.runs.machine.machine_info` with the run's resolved
    ``precision``) to the list in ``output_dir/machine.json``: one entry per start of the run,
    the first its start, later ones its resumes (which may run elsewhere). Returns the path."""
    path = Path(output_dir) / "machine.json"
    starts = json.loads(path.read_text()) if path.is_file() else []
    text = json.dumps([*starts, machine_info(precision)], indent=2)
    return atomic_write(path, lambda file: file.write(text.encode()))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key (run: a, now: b)`` for each dotted key whose value differs between two plain
    (resolved) configs, ``resume`` excepted."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted((old.keys() | new.keys()) - {"resume"})
    return [
        f"{k} (run: {old.get(k, '<unset>')}, now: {new.get(k, '<unset>')})"
        for k in keys
        if old.get(k, "<unset>") != new.get(k, "<unset>")
    ]


def prepare_output_dir(cfg: DictConfig, main_process: bool = True) -> Path | None:
    """Open ``cfg.output_dir`` for a training run; return the checkpoint to resume from.

    A new run (``resume=false``) refuses a folder that already holds a run (:data:`RUN_MARKERS`)
    and writes the resolved ``config.yaml``. ``resume=true`` needs the folder's
    ``checkpoints/last.ckpt`` (readable, see :func:`load_checkpoint`) and a config equal to
    its ``config.yaml`` (else the differing keys are named), and returns that checkpoint.
    ``main_process``: only the first DDP process checks for an earlier run and writes (the
    others start after it has). Raises :class:`ConfigError`, :class:`CheckpointError`,
    :class:`OutputError`.
    """
    output_dir = Path(cfg.output_dir).expanduser()
    current = OmegaConf.to_container(cfg, resolve=True)
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume"):
        if not last.is_file():
            raise ConfigError(
                f"resume=true but {output_dir} holds no checkpoints/last.ckpt to resume from "
                "(a run writes it at the end of its first epoch)"
            )
        saved_path = output_dir / "config.yaml"
        if not saved_path.is_file():
            raise ConfigError(f"resume=true but {output_dir} has no config.yaml")
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
        differences = config_differences(saved, current)
        if differences:
            raise ConfigError(
                f"resume=true needs the run's own config; it differs from {saved_path} in "
                f"{'; '.join(differences[:6])}{' ...' if len(differences) > 6 else ''}. "
                "Repeat the run's original overrides"
            )
        load_checkpoint(last)
    elif main_process:
        existing = [name for name in RUN_MARKERS if (output_dir / name).exists()]
        if existing:
            raise ConfigError(
                f"output_dir {output_dir} already holds a run ({', '.join(existing)}); pass "
                "resume=true to continue it, or another hydra.run.dir=... / output_dir=..."
            )
    if main_process:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=output_dir).close()
        except OSError as exc:
            raise OutputError(f"cannot write to output_dir {output_dir}: {exc.strerror}") from exc
        if not cfg.get("resume"):
            text = OmegaConf.to_yaml(current)
            atomic_write(output_dir / "config.yaml", lambda file: file.write(text.encode()))
    return last if cfg.get("resume") else None


def format_metrics(results: dict[str, Any]) -> str:
    """One line: ``Rank-1 92.40% | Rank-5 ... | mAP 79.70% | mINP ...``."""
    names = {
        "rank1": "Rank-1",
        "rank5": "Rank-5",
        "rank10": "Rank-10",
        "mAP": "mAP",
        "mINP": "mINP",
    }
    return " | ".join(f"{names[k]} {100 * results[k]:.2f}%" for k in METRIC_NAMES)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True``; check it carries our
    hyper-parameters and a state dict. Raises :class:`CheckpointError` with the reason."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, not a torch file ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated, or not a torch file?): {reason}"
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    hparams = checkpoint.get("hyper_parameters") or {}
    missing = [k for k in ("num_classes", "model", "loss", "evaluation") if k not in hparams]
    if missing:
        raise CheckpointError(
            f"{path} is not a reid-attn checkpoint: hyper-parameters lack {', '.join(missing)}"
        )
    return checkpoint


def run_entry(
    function: Callable[[DictConfig], Any],
    cfg: DictConfig,
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> Any:
    """Run an entry point's ``function(cfg)`` and return its result; a user error (``errors``,
    an output that cannot be written (:data:`WRITE_ERRNOS`), or a required value such as
    ``ckpt_path=`` left out) exits with one line ``error: ...``. Known third-party chatter
    is hidden (:func:`reid_attn.runs.console.quiet_third_party`)."""
    quiet_third_party()
    try:
        return function(cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        sys.exit(f"error: {key} is required; pass it on the command line ({key}=...)")
    except errors as exc:
        sys.exit(f"error: {user_message(exc)}")
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        sys.exit(f"error: {exc.strerror}: {exc.filename}")


def user_message(exc: BaseException) -> str:
    """The message of a user error. One re-raised from a DataLoader worker carries the worker's
    traceback (``Caught X in DataLoader worker ... Original Traceback ...``): only its last
    line's message, the original error's, is kept."""
    text = str(exc)
    if "\nOriginal Traceback" in text:
        text = text.rstrip().splitlines()[-1].partition(": ")[2]
    return text
