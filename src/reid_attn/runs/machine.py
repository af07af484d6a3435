"""What machine a run or benchmark ran on: CPU model, cores, native bf16, torch, precision.

These project machines differ about 3x in CPU speed (an Intel Xeon with AMX against a 2-core
AMD EPYC without native bf16), so every timing and every table names the machine it came
from. A training run writes :func:`machine_info` as ``machine.json`` into its folder.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from reid_attn.config import cpu_has_native_bf16, cpuinfo_values


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``cpuinfo`` (default ``/proc/cpuinfo``), else the platform's
    processor string, else the machine type (e.g. ``x86_64``)."""
    names = [name for name in cpuinfo_values("model name", cpuinfo) if name]
    return names[0] if names else platform.processor() or platform.machine()


def machine_info(precision: str | None = None) -> dict[str, Any]:
    """``{"cpu", "cores", "threads", "native_bf16", "torch", "cuda", "precision"}``: the CPU
    model, the cores this process may use, torch's intra-op threads, whether the CPU has native
    bf16, torch's version, the CUDA device's name (None without one) and ``precision`` (the
    run's resolved training precision, or None)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "precision": precision,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line for a results file: ``CPU, N cores (T threads), native bf16 yes|no, torch V,
    precision P`` (and the GPU when there is one)."""
    parts = [
        f"{info['cpu']}, {info['cores']} core{'s' if info['cores'] != 1 else ''} "
        f"({info['threads']} thread{'s' if info['threads'] != 1 else ''})",
        f"native bf16 {'yes' if info['native_bf16'] else 'no'}",
        f"torch {info['torch']}",
    ]
    if info.get("cuda"):
        parts.append(f"GPU {info['cuda']}")
    if info.get("precision"):
        parts.append(f"precision {info['precision']}")
    return ", ".join(parts)
