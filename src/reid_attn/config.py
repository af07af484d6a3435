"""Early validation of a composed config: one clear error per bad value, before any work."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from reid_attn.data.datamodule import DATASETS
from reid_attn.data.memory_pipeline import PIPELINES
from reid_attn.metrics.distance import DISTANCE_NAMES
from reid_attn.models.attention import ATTENTION_NAMES
from reid_attn.models.head import CLASSIFIER_NAMES
from reid_attn.models.pretrained import PRETRAINED_NAMES

#: ``evaluation.precision`` values: float32 embeddings, or bf16 autocast.
EVAL_PRECISIONS = ("32", "bf16")
#: ``model.compile_mode`` values: torch.compile's modes (``reduce-overhead`` replays the step as
#: CUDA graphs on a GPU); null is torch's default.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A config value is missing or out of range; the message names it and what is allowed."""


def _choice(value: object, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; allowed values: {', '.join(allowed)}")


def _at_least(value: float, bound: float, key: str, strict: bool = False) -> None:
    if value < bound or (strict and value == bound):
        relation = ">" if strict else ">="
        raise ConfigError(f"{key}={value} is out of range; it must be {relation} {bound}")


def validate_model_config(cfg: DictConfig) -> None:
    """Check ``model``, ``loss`` and ``evaluation`` sections."""
    _choice(cfg.model.attention, ATTENTION_NAMES, "model.attention (attention=...)")
    if cfg.model.get("pretrained") is not None:
        _choice(cfg.model.pretrained, PRETRAINED_NAMES, "model.pretrained")
    if cfg.model.last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride={cfg.model.last_stride}; allowed values: 1, 2")
    loss = cfg.loss
    _choice(loss.classifier, CLASSIFIER_NAMES, "loss.classifier")
    for key in (
        "ce_weight",
        "triplet_weight",
        "circle_pair_weight",
        "triplet_margin",
        "circle_pair_margin",
        "label_smoothing",
    ):
        _at_least(loss[key], 0.0, f"loss.{key}")
    if loss.ce_weight + loss.triplet_weight + loss.circle_pair_weight <= 0:
        raise ConfigError(
            "loss: at least one of ce_weight, triplet_weight, circle_pair_weight must be > 0"
        )
    _at_least(loss.scale, 0.0, "loss.scale", strict=True)
    if not 0 <= loss.margin < 1 or not loss.label_smoothing < 1:
        raise ConfigError("loss.margin and loss.label_smoothing must lie in [0, 1)")
    _choice(cfg.evaluation.distance, DISTANCE_NAMES, "evaluation.distance")
    _choice(str(cfg.evaluation.get("precision", "32")), EVAL_PRECISIONS, "evaluation.precision")
    _at_least(cfg.evaluation.max_rank, 1, "evaluation.max_rank")
    if cfg.model.get("compile_mode") is not None:
        _choice(cfg.model.compile_mode, COMPILE_MODES, "model.compile_mode")


def validate_data_config(data: DictConfig) -> None:
    """Check the ``data`` section."""
    _choice(data.name, tuple(DATASETS), "data.name (data=...)")
    for key in ("height", "width", "num_identities", "num_instances", "eval_batch_size"):
        _at_least(data[key], 1, f"data.{key}")
    for key in ("val_identities", "num_workers", "pad"):
        _at_least(data[key], 0, f"data.{key}")
    _choice(data.get("pipeline", "auto"), PIPELINES, "data.pipeline")
    if not 0 < data.get("memory_fraction", 0.5) <= 1:
        raise ConfigError(f"data.memory_fraction={data.memory_fraction}; it must lie in (0, 1]")


def validate_train_config(cfg: DictConfig) -> None:
    """Check everything :func:`reid_attn.training.train` reads; raise :class:`ConfigError`."""
    validate_model_config(cfg)
    validate_data_config(cfg.data)
    _at_least(cfg.seed, 0, "seed")
    _at_least(cfg.get("loss_check_every_n_steps", 1), 1, "loss_check_every_n_steps")
    _at_least(cfg.optimizer.lr, 0.0, "optimizer.lr", strict=True)
    if cfg.optimizer.get("fused") not in ("auto", True, False, None):
        raise ConfigError(
            f"optimizer.fused={cfg.optimizer.fused} is not valid; allowed values: auto, true, false"
        )
    _at_least(cfg.trainer.max_epochs, 1, "trainer.max_epochs")
    every = cfg.checkpoint.get("every_n_epochs", 1)
    _at_least(every, 1, "checkpoint.every_n_epochs")
    if cfg.trainer.max_epochs % every:
        raise ConfigError(
            f"checkpoint.every_n_epochs={every} must divide trainer.max_epochs="
            f"{cfg.trainer.max_epochs}: the test reads last.ckpt, which must hold the last epoch"
        )
    precision = str(cfg.trainer.get("precision"))
    if cfg.trainer.get("accelerator") == "cpu" and precision in ("16", "16-mixed", "16-true"):
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU; on the CPU pass trainer.precision=32-true "
            "(trainer=ddp_cpu sets it) or bf16-mixed"
        )
    if cfg.trainer.get("accelerator") == "cpu" and cfg.trainer.get("sync_batchnorm"):
        raise ConfigError(
            "trainer.sync_batchnorm=true needs a GPU (torch's SyncBatchNorm works on GPU modules "
            "only); on the CPU pass trainer.sync_batchnorm=false (trainer=ddp_cpu sets it)"
        )
    if cfg.trainer.get("overfit_batches", 0) > 0 and cfg.data.get("pipeline") == "memory":
        raise ConfigError(
            "trainer.overfit_batches needs data.pipeline=loader or auto: Lightning replaces the "
            "training sampler by a sequential one over images, and the memory pipeline's "
            "sampler yields whole batches"
        )
    validate_objective(cfg)
    sched = cfg.scheduler
    _at_least(sched.warmup_epochs, 0, "scheduler.warmup_epochs")
    if not 0 < sched.warmup_factor <= 1:
        raise ConfigError(f"scheduler.warmup_factor={sched.warmup_factor}; it must lie in (0, 1]")


#: ``/proc/cpuinfo`` flags of CPUs that compute in bfloat16 natively (AVX512-BF16, AMX).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


#: ``ONEDNN_MAX_CPU_ISA`` values that leave oneDNN (PyTorch's CPU convolutions) without bf16
#: instructions: capping it so makes a CPU with native bf16 compute as one without.
ISAS_WITHOUT_BF16 = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
)


def cpuinfo_values(key: str, cpuinfo: str | None = None) -> list[str]:
    """The values of ``key`` (e.g. ``flags``, ``model name``) on the lines of ``cpuinfo``
    (default: ``/proc/cpuinfo``; [] where that cannot be read), one per processor listed."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    values = []
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            values.append(value.strip())
    return values


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has native bfloat16 arithmetic (a flag of :data:`NATIVE_BF16_FLAGS`
    in ``cpuinfo``, by default ``/proc/cpuinfo``; False where that cannot be read) that
    PyTorch may use: False as well when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below bf16
    (:data:`ISAS_WITHOUT_BF16`, e.g. ``AVX2`` to run as a CPU without AVX-512 would)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISAS_WITHOUT_BF16:
        return False
    flags = {flag for value in cpuinfo_values("flags", cpuinfo) for flag in value.split()}
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, accelerator: str | None) -> str:
    """``trainer.precision`` with ``auto`` resolved: ``bf16-mixed`` where it is fast (a GPU
    that supports bf16; a CPU with native bf16, where autocast trains the default model
    1.3-2.6x faster than float32), ``16-mixed`` on other GPUs, ``32-true`` on other CPUs.
    Any other value is returned as given."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def validate_objective(cfg: DictConfig) -> None:
    """``objective`` (what a sweeper optimises) must be null or ``checkpoint.monitor``, and is
    measured on held-out training identities: it needs ``data.val_identities > 0``."""
    objective = cfg.get("objective")
    if objective is None:
        return
    if objective != cfg.checkpoint.monitor:
        raise ConfigError(
            f"objective={objective} is not supported; allowed: null or the checkpoint monitor "
            f"({cfg.checkpoint.monitor}), whose best validation value the run returns"
        )
    if cfg.data.val_identities <= 0:
        raise ConfigError(
            f"objective={objective} is measured on held-out training identities, but "
            "data.val_identities=0; set data.val_identities > 0 (the test split is never used "
            "to choose)"
        )


def validate_sampling(num_instances: int, pids: Sequence[int]) -> int:
    """Check K (``data.num_instances``) against the training identities' image counts and
    return how many identities have fewer than K images: those are topped up by repeating
    their images (sampling with replacement, the re-id convention). K above every identity's
    count would make every batch repeats only: :class:`ConfigError`."""
    counts = Counter(int(p) for p in pids)
    most = max(counts.values(), default=0)
    if num_instances > most:
        raise ConfigError(
            f"data.num_instances={num_instances} is out of range: no training identity has that "
            f"many images (at most {most}); it must be <= {most}"
        )
    return sum(count < num_instances for count in counts.values())
