"""Benchmark: the loader and memory data pipelines side by side, alone and in a real training
run, to choose ``data.pipeline=auto``'s CPU default.

    .venv/bin/python experiments/bench_pipeline.py                  # results/bench_pipeline.*
    .venv/bin/python experiments/bench_pipeline.py --epochs 14      # the whole `make train`

1. Each pipeline's training batches alone (``bench_train.data_pipeline_throughput``: images/s
   over ``--batches`` batches, the memory pipeline's one-off decoding reported apart).
2. ``python -m reid_attn.train`` (the default config = ``make train``, ``--epochs`` epochs, no
   progress bar) with each pipeline, in ``--rounds`` interleaved rounds (loader, memory, then
   memory, loader, ...): wall seconds of the whole process, the CPU seconds it and its loader
   workers used (the fairer figure on a shared machine), and its test figures. The synthetic
   data is generated before the first timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_train import compose_train_config, data_pipeline_throughput

RESULTS = Path(__file__).resolve().parent / "results"
PIPELINES = ("loader", "memory")


def cpu_seconds_of_children() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_wall_seconds(pipeline: str, epochs: int, folder: Path) -> dict:
    """Wall seconds, CPU seconds and test metrics of one default training run with
    ``pipeline``."""
    run_dir = folder / f"{pipeline}-{time.monotonic_ns()}"
    cpu_start = cpu_seconds_of_children()
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "reid_attn.train",
            f"data.pipeline={pipeline}",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds_of_children() - cpu_start,
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
    }


def write_markdown(result: dict, path: Path) -> None:
    """The two tables of this benchmark."""
    lines = [
        "# Data pipelines: loader vs memory (CPU default of data.pipeline=auto)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}",
        "",
        "Training batches alone (default config: "
        f"{result['data']['loader']['size'][0]}x{result['data']['loader']['size'][1]}, batch "
        "16 x 4):",
        "",
        "| pipeline | images/s | one-off set-up (s) |",
        "|---|---:|---:|",
    ]
    for name, row in result["data"].items():
        lines.append(f"| {name} | {row['images_per_s']:.0f} | {row['setup_seconds']:.1f} |")
    lines += [
        "",
        f"`python -m reid_attn.train trainer.max_epochs={result['epochs']}` (the default "
        f"config), median wall seconds over {result['rounds']} interleaved rounds:",
        "",
        "| pipeline | wall s (each run) | median wall s | speed x loader | CPU s (each run) | "
        "median CPU s | speed x loader | test mAP |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    base = {k: statistics.median(result["train"]["loader"][k]) for k in ("seconds", "cpu_seconds")}
    for name, row in result["train"].items():
        cells = []
        for key in ("seconds", "cpu_seconds"):
            median = statistics.median(row[key])
            runs = ", ".join(f"{v:.0f}" for v in row[key])
            cells.append(f"{runs} | {median:.0f} | {base[key] / median:.2f}")
        lines.append(f"| {name} | {' | '.join(cells)} | {100 * row['mAP'][0]:.2f} |")
    path.write_text("\n".join([*lines, ""]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    data = {
        name: data_pipeline_throughput(args.batches, [f"data.pipeline={name}"])
        for name in PIPELINES
    }
    for name, row in data.items():
        print(f"{name}: {row['images_per_s']:.0f} images/s (set-up {row['setup_seconds']:.1f} s)")
    train = {name: {"seconds": [], "cpu_seconds": [], "mAP": []} for name in PIPELINES}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for name in PIPELINES if round_index % 2 == 0 else PIPELINES[::-1]:
                run = train_wall_seconds(name, args.epochs, Path(folder))
                train[name]["seconds"].append(run["seconds"])
                train[name]["cpu_seconds"].append(run["cpu_seconds"])
                train[name]["mAP"].append(run["metrics"]["mAP"])
                print(
                    f"round {round_index + 1} {name}: {run['seconds']:.0f} s wall, "
                    f"{run['cpu_seconds']:.0f} s CPU",
                    flush=True,
                )
    cfg = compose_train_config([])
    result = {
        "command": " ".join(["python", "experiments/bench_pipeline.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a shared machine)",
        "epochs": args.epochs,
        "rounds": args.rounds,
        "size": [cfg.data.height, cfg.data.width],
        "data": data,
        "train": train,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_pipeline.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, out / "bench_pipeline.md")
    print((out / "bench_pipeline.md").read_text())


if __name__ == "__main__":
    main()
