"""Benchmark: the loader and memory data pipelines side by side, to choose
``data.pipeline=auto``'s CPU default.

    .venv/bin/python experiments/bench_pipeline.py                  # results/bench_pipeline.*
    .venv/bin/python experiments/bench_pipeline.py --train-epochs 14   # + the whole `make train`

1. Each pipeline's training batches of the default config (``make train``'s), ``--epochs``
   epochs: wall seconds and CPU seconds (this process and its loader workers) per epoch, and the
   memory pipeline's one-off decoding. CPU seconds are the figure that holds on a shared
   machine: every CPU second the data path takes is one the 2-core training does not get.
2. With ``--train-epochs N``: ``python -m reid_attn.train`` (the default config, N epochs, no
   progress bar) with each pipeline, in ``--rounds`` interleaved rounds (loader, memory, then
   memory, loader, ...): wall and CPU seconds of the whole process and its test figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    RESULTS,
    add_bench_args,
    command_line,
    compose_train_config,
    interleaved,
    machine_record,
    markdown_table,
    medians,
    results_header,
    write_results,
)

PIPELINES = ("loader", "memory")
TITLE = "Data pipelines: loader vs memory (CPU default of data.pipeline=auto)"


def cpu_seconds(children: bool) -> float:
    """User + system CPU seconds of this process (all its threads), or of its finished
    children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def both_cpu_seconds() -> float:
    """This process's and its finished children's CPU seconds."""
    return cpu_seconds(False) + cpu_seconds(True)


def data_epochs(pipeline: str, epochs: int) -> dict:
    """Wall and CPU seconds per epoch of the default config's training batches with
    ``pipeline`` (after its one-off set-up, reported apart)."""
    from omegaconf import OmegaConf

    from reid_attn.data import ReIDDataModule

    cfg = compose_train_config([f"data.pipeline={pipeline}"])
    datamodule = ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.prepare_data()
    datamodule.setup("fit")
    cpu, wall = both_cpu_seconds(), time.perf_counter()
    datamodule.train_dataloader()  # the memory pipeline decodes here
    setup = {"cpu": both_cpu_seconds() - cpu, "wall": time.perf_counter() - wall}
    cpu, wall, images = both_cpu_seconds(), time.perf_counter(), 0
    for epoch in range(epochs):
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            images += len(batch[0])
    return {
        "cpu_seconds_per_epoch": (both_cpu_seconds() - cpu) / epochs,
        "wall_seconds_per_epoch": (time.perf_counter() - wall) / epochs,
        "images_per_epoch": images // epochs,
        "setup_cpu_seconds": setup["cpu"],
        "setup_wall_seconds": setup["wall"],
        "num_workers": cfg.data.num_workers,
        "size": [cfg.data.height, cfg.data.width],
    }


def train_precision() -> str:
    """The default config's training precision as a run resolves it on this machine."""
    from reid_attn.config import resolve_precision

    trainer = compose_train_config([]).trainer
    return resolve_precision(str(trainer.precision), trainer.get("accelerator"))


def train_run(pipeline: str, epochs: int, folder: Path) -> dict:
    """Wall seconds, CPU seconds and test metrics of one default training run."""
    run_dir = folder / f"{pipeline}-{time.monotonic_ns()}"
    cpu, start = cpu_seconds(True), time.perf_counter()
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
    )
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu_seconds(True) - cpu,
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
    }


def where(pipeline: str, row: dict) -> str:
    """Where a pipeline's data work runs."""
    return f"{row['num_workers']} workers" if pipeline == "loader" else "training process"


def markdown(result: dict) -> list[str]:
    """The tables of this benchmark."""
    data = result["data"]
    size = data["loader"]["size"]
    columns = ["pipeline", "CPU s / epoch", "wall s / epoch", "one-off set-up: CPU s", "wall s"]
    rows = [
        [
            f"{name} ({where(name, row)})",
            f"{row['cpu_seconds_per_epoch']:.2f}",
            f"{row['wall_seconds_per_epoch']:.2f}",
            f"{row['setup_cpu_seconds']:.2f}",
            f"{row['setup_wall_seconds']:.2f}",
        ]
        for name, row in data.items()
    ]
    lines = [
        *results_header(
            "Data pipelines: loader vs memory (CPU default of data.pipeline=auto)", result
        ),
        f"OMP_NUM_THREADS={result['omp_num_threads']}",
        "",
        f"Training batches of the default config ({size[0]}x{size[1]}, 16 x 4, "
        f"{data['loader']['images_per_epoch']} images an epoch), mean of {result['epochs']} "
        "epochs; CPU seconds count this process and its loader workers:",
        "",
        *markdown_table(columns, rows, "lrrrr"),
    ]
    if result.get("train"):
        train = [
            [
                name,
                ", ".join(f"{v:.0f}" for v in row["seconds"]),
                ", ".join(f"{v:.0f}" for v in row["cpu_seconds"]),
                f"{100 * row['mAP'][0]:.2f}",
            ]
            for name, row in result["train"].items()
        ]
        lines += [
            "",
            f"`python -m reid_attn.train trainer.max_epochs={result['train_epochs']}` (the "
            f"default config), {result['rounds']} interleaved round(s):",
            "",
            *markdown_table(["pipeline", "wall s", "CPU s", "test mAP"], train, "lllr"),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of batches per pipeline")
    parser.add_argument("--train-epochs", type=int, default=0, help="0: no training runs")
    add_bench_args(parser, rounds=1, out=RESULTS)
    parser.add_argument("--name", default="bench_pipeline", help="result files' name")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    data = {name: data_epochs(name, args.epochs) for name in PIPELINES}
    for name, row in data.items():
        print(
            f"{name}: {row['cpu_seconds_per_epoch']:.2f} CPU s, "
            f"{row['wall_seconds_per_epoch']:.2f} wall s an epoch",
            flush=True,
        )
    train = {}
    if args.train_epochs:
        with tempfile.TemporaryDirectory() as folder:

            def report(_round: int, name: str, run: dict) -> None:
                print(f"{name}: {run['seconds']:.0f} s wall, {run['cpu_seconds']:.0f} s CPU")

            runs = interleaved(
                PIPELINES,
                lambda name: train_run(name, args.train_epochs, Path(folder)),
                args.rounds,
                report=report,
            )
        train = {
            name: {
                "seconds": [run["seconds"] for run in done],
                "cpu_seconds": [run["cpu_seconds"] for run in done],
                "mAP": [run["metrics"]["mAP"] for run in done],
            }
            for name, done in runs.items()
        }
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    result = {
        "command": command_line(),
        **machine_record(train_precision() if args.train_epochs else None, extra=load),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "epochs": args.epochs,
        "train_epochs": args.train_epochs,
        "rounds": args.rounds,
        "data": data,
        "train": train,
        "median_train_seconds": medians({k: v["seconds"] for k, v in train.items()}),
    }
    print(write_results(result, markdown(result), args.name, args.out).read_text())


if __name__ == "__main__":
    main()
