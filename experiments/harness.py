"""The benchmarks' shared harness: the pieces every ``experiments/bench_*.py`` script used to
write again, so that each script keeps only its own question.

* command line: :func:`add_bench_args` (the shared flags ``--sizes --batch --warmup --steps
  --repeats --rounds --device --out --seed`` and re-ranking's ``--k1 --k2 --lam``, each with
  the script's default), :func:`parse_size`,
  :func:`command_line`;
* timing: :func:`time_calls` (warm-up, then timed calls), :func:`interleaved` (every
  configuration measured in turn, round after round, so that a slow phase of a shared machine
  hits all alike), :func:`medians`;
* peak memory of a process: :func:`status_kib`, :func:`reset_peak_rss`;
* the machine: :func:`machine_record` (CPU model, cores, native bf16, torch, precision: the
  library's :func:`reid_attn.runs.machine.machine_line`);
* results: :func:`results_header`, :func:`markdown_table`, :func:`write_results` (JSON and
  Markdown side by side, in experiments/results/ unless told otherwise);
* a training step for a benchmark: :func:`compose_train_config`, :func:`build_module`, the
  variants (:data:`VARIANT_OVERRIDES`, :func:`variant_overrides`) and :func:`training_step`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

RESULTS = Path(__file__).resolve().parent / "results"

Config = TypeVar("Config")
Result = TypeVar("Result")

# ----------------------------------------------------------------------------- command line

#: The shared flags: name -> (type, help). :func:`add_bench_args` adds those given a default.
BENCH_FLAGS: dict[str, tuple[type, str]] = {
    "sizes": (str, "comma-separated HxW input sizes"),
    "batch": (int, "images a batch"),
    "warmup": (int, "untimed calls before the timed ones"),
    "steps": (int, "timed steps a measurement"),
    "repeats": (int, "timed calls a measurement"),
    "rounds": (int, "interleaved rounds over all configurations (median over rounds)"),
    "device": (str, "torch device"),
    "out": (Path, "folder of the result files"),
    "seed": (int, "seed of the random problem"),
    "k1": (int, "re-ranking: k of the k-reciprocal neighbours"),
    "k2": (int, "re-ranking: neighbours of the local query expansion"),
    "lam": (float, "re-ranking: weight of the original distance"),
}


def add_bench_args(parser: argparse.ArgumentParser, **defaults: Any) -> argparse.ArgumentParser:
    """Add the shared flags named in ``defaults`` (see :data:`BENCH_FLAGS`) to ``parser``, each
    with its default; e.g. ``add_bench_args(parser, batch=64, rounds=3)``. Returns ``parser``."""
    unknown = sorted(set(defaults) - set(BENCH_FLAGS))
    if unknown:
        raise ValueError(f"no shared flag {unknown}; known: {sorted(BENCH_FLAGS)}")
    for name, default in defaults.items():
        kind, text = BENCH_FLAGS[name]
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)
    return parser


def parse_size(text: str) -> list[int]:
    """``"256x128"`` -> ``[256, 128]`` (height, width)."""
    height, width = text.lower().split("x")
    return [int(height), int(width)]


def parse_sizes(text: str) -> list[list[int]]:
    """``"256x128,64x32"`` -> ``[[256, 128], [64, 32]]``."""
    return [parse_size(size) for size in text.split(",")]


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this script was run, as the results files quote it:
    ``python experiments/<script>.py <arguments>``."""
    argv = sys.argv if argv is None else argv
    return " ".join(["python", f"experiments/{Path(argv[0]).name}", *argv[1:]])


# ----------------------------------------------------------------------------- timing


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (CUDA), or does nothing."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_calls(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 0,
    sync: Callable[[], None] | None = None,
) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls;
    ``sync`` (e.g. :func:`synchronizer`) runs before the clock starts and before it stops."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def interleaved(
    configs: Sequence[Config],
    measure: Callable[[Config], Result],
    rounds: int,
    key: Callable[[Config], Hashable] | None = None,
    report: Callable[[int, Config, Result], None] | None = None,
) -> dict[Hashable, list[Result]]:
    """``measure(config)`` for every config, round after round: the configs in order in even
    rounds and in reverse in odd ones (A B C, C B A, A B C, ...), so that drift of a shared
    machine hits every configuration alike. Returns ``{key(config): [result of each round]}``
    in the configs' order (``key`` defaults to the config itself); ``report(round, config,
    result)`` is called after each measurement."""
    key = key or (lambda config: config)
    runs: dict[Hashable, list[Result]] = {key(config): [] for config in configs}
    for round_index in range(rounds):
        for config in configs if round_index % 2 == 0 else configs[::-1]:
            result = measure(config)
            runs[key(config)].append(result)
            if report is not None:
                report(round_index, config, result)
    return runs


def medians(runs: Mapping[Hashable, Iterable[float]]) -> dict[Hashable, float]:
    """The median of each entry's values."""
    return {name: statistics.median(values) for name, values in runs.items()}


# ----------------------------------------------------------------------------- peak memory


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, so that what ran before
    (loading or generating inputs) does not count; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- machine and files


def pinned(cores: Iterable[int], threads: int) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a process on ``cores`` alone with ``threads``
    OpenMP / MKL threads: ``env`` and ``preexec_fn``. Pinned, because the kernel of this
    project's VMs left unpinned niced jobs stacked on one core."""
    chosen = set(cores)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return {"env": env, "preexec_fn": lambda: os.sched_setaffinity(0, chosen)}


def machine_record(precision: str | None, extra: str = "", **info: Any) -> dict[str, Any]:
    """``{"machine": line, "machine_info": fields}`` for a result: the library's machine fields
    (:func:`~reid_attn.runs.machine.machine_info`: CPU model, cores, threads, native bf16,
    torch, GPU, ``precision``), any of them replaced by ``info``, and their line with ``extra``
    (e.g. a load average) appended."""
    from reid_attn.runs.machine import machine_info, machine_line

    fields = {**machine_info(precision), **info}
    line = machine_line(fields)
    return {"machine": f"{line}, {extra}" if extra else line, "machine_info": fields}


def results_header(title: str, result: Mapping[str, Any]) -> list[str]:
    """A results page's first lines: the title, ``result``'s command and machine line."""
    return [
        f"# {title}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
    ]


def markdown_table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], align: str = ""
) -> list[str]:
    """A Markdown table's lines; ``align`` has one letter a column, ``l`` (default) or ``r``
    (right-aligned: numbers)."""
    align = align.ljust(len(columns), "l")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [f"| {' | '.join(columns)} |", f"| {' | '.join(rule)} |"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} cells, the table {len(columns)}")
        lines.append(f"| {' | '.join(str(cell) for cell in row)} |")
    return lines


def write_results(
    result: Mapping[str, Any], markdown: Sequence[str], name: str, out: Path | str = RESULTS
) -> Path:
    """``out/name.json`` (``result``) and ``out/name.md`` (the ``markdown`` lines), the folder
    made if needed; returns the Markdown file's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    page = out / f"{name}.md"
    page.write_text("\n".join(markdown).rstrip("\n") + "\n")
    return page


# ----------------------------------------------------------------------------- a training step

#: Benchmark variants of the training step: their config overrides. ``heap`` changes the
#: process's malloc settings instead (:data:`VARIANT_ENV`).
VARIANT_OVERRIDES = {
    "fp32": [],
    "channels_last": ["model.channels_last=true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "compile": ["model.compile=true"],
    "heap": [],
}
# "heap": the process's glibc malloc keeps freed memory instead of handing large blocks back
# to the system (no mmap per feature map, no trimming), so a step does not page-fault its
# feature maps in again. The README's "Training speed" gives the same setting for training.
VARIANT_ENV = {
    "heap": {
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=2147483647"
        ":glibc.malloc.trim_threshold=17179869184"
    }
}


def variant_parts(variant: str) -> list[str]:
    """The variants a combined variant ``a+b`` is made of."""
    return variant.split("+")


def variant_overrides(variant: str) -> list[str]:
    """Config overrides that select a benchmark variant; ``a+b`` combines two."""
    return [o for part in variant_parts(variant) for o in VARIANT_OVERRIDES[part]]


def compose_train_config(overrides: list[str]):
    """The real ``conf/train.yaml`` composed with ``overrides`` (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    import reid_attn

    conf_dir = Path(reid_attn.__file__).parent / "conf"
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("train", overrides=overrides)


def build_module(cfg, num_classes: int, device: str | torch.device = "cpu"):
    """A :class:`~reid_attn.module.ReIDModule` of ``cfg``'s model, loss, optimizer, scheduler
    and evaluation settings for ``num_classes`` identities, on ``device``."""
    from omegaconf import OmegaConf

    from reid_attn.module import ReIDModule

    sections = ("model", "loss", "optimizer", "scheduler", "evaluation")
    hparams = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in sections}
    return ReIDModule(num_classes=num_classes, **hparams).to(device)


def training_step(spec: dict) -> tuple[Callable[[], None], int]:
    """A closure running one training step of ``spec`` on a fixed random batch, and the batch
    size. ``spec``: ``attention``, ``variant`` (:data:`VARIANT_OVERRIDES`, ``a+b``),
    ``device``, ``batch`` (0: the config's P x K), ``size`` (``[H, W]``; None: the config's)
    and optionally ``overrides`` (config overrides first, e.g. ``experiment=ablation_cpu``) and
    ``num_classes`` (751). The step is what ``ReIDModule.training_step`` does
    (``step_losses``: forward and the configured loss, compiled with ``model.compile``;
    backward; Adam), under bf16 autocast in a ``bf16`` variant."""
    cfg = compose_train_config(
        [
            *spec.get("overrides", []),
            f"attention={spec['attention']}",
            *variant_overrides(spec["variant"]),
        ]
    )
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    height, width = spec.get("size") or (cfg.data.height, cfg.data.width)
    batch = spec["batch"] or cfg.data.num_identities * cfg.data.num_instances
    num_ids = max(1, batch // cfg.data.num_instances)
    module = build_module(cfg, spec.get("num_classes", 751), device)
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.optimizer.lr)
    images = torch.randn(batch, 3, height, width, device=device)
    pids = torch.arange(num_ids, device=device).repeat_interleave(cfg.data.num_instances)
    pids = torch.cat([pids, pids[: batch - len(pids)]])[:batch]
    dtype = torch.bfloat16 if "bf16" in variant_parts(spec["variant"]) else None

    def step() -> None:
        if module.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = module.step_losses(images, pids)  # compiled with model.compile
        optimizer.zero_grad(set_to_none=True)
        loss["loss"].backward()
        optimizer.step()

    return step, batch
