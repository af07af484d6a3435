"""Files every run writes (``metrics.json``), the checkpoint loader, and how entry points
report bad input."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from reid_attn.config import ConfigError
from reid_attn.data import DatasetError
from reid_attn.metrics import METRIC_NAMES
from reid_attn.models.pretrained import PretrainedWeightsError


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or not a reid-attn checkpoint."""


#: Errors that mean bad input: entry points print them as one line, without a traceback.
USER_ERRORS = (ConfigError, DatasetError, CheckpointError, PretrainedWeightsError, ValueError)


def write_metrics(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``metrics.json`` (fractions in [0, 1] under ``rank1 rank5 rank10 mAP mINP`` and
    the ``cmc`` vector) into ``output_dir`` and return its path."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps({k: results[k] for k in (*METRIC_NAMES, "cmc")}, indent=2))
    return path


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
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
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
) -> None:
    """Run an entry point's ``function(cfg)``; a user error (``errors``, or a required value
    such as ``ckpt_path=`` left out) exits with one line ``error: ...``."""
    try:
        function(cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        sys.exit(f"error: {key} is required; pass it on the command line ({key}=...)")
    except errors as exc:
        sys.exit(f"error: {exc}")
