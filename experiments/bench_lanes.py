"""Two single-thread training jobs at once, each pinned to a core, against one two-thread job.

The CPU ablation (experiments/ablation_cpu.py) runs its jobs in lanes. This measures which way
two cores train more images a second: the training step of ``experiment=ablation_cpu`` (float32,
64x32, batch 16 x 4, Adam; the harness's ``training_step``, as bench_train.py's) on random
images, in (a) one process with ``--cores`` threads and
(b) ``--cores`` processes with one thread each, pinned to one core each, started together.
Rounds interleave a and b (a b, b a, ...); medians are reported. With ``--epochs N`` it also
times whole jobs, as the ablation runs them: ``python -m reid_attn.train
experiment=ablation_cpu`` for N epochs (validation every epoch, checkpoints, the test at the
end), (a) one job per core one after another at ``--cores`` threads, against (b) one job per
core at once, pinned, one thread each; jobs an hour. Writes
experiments/results/bench_lanes.{json,md} with the machine line.

    python experiments/bench_lanes.py [--rows none,cbam] [--steps 6] [--rounds 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    RESULTS,
    add_bench_args,
    interleaved,
    machine_record,
    markdown_table,
    medians,
    pinned,
    results_header,
    time_calls,
    training_step,
    write_results,
)


def time_steps(attention: str, steps: int, threads: int) -> float:
    """Seconds for ``steps`` training steps (after one warm-up step) of the ablation_cpu setting
    with ``attention`` and the joint circle loss, in this process at ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    spec = {"overrides": ["experiment=ablation_cpu"], "attention": attention, "variant": "fp32"}
    step, _batch = training_step({**spec, "device": "cpu", "batch": 0, "num_classes": 184})
    return sum(time_calls(step, steps, warmup=1))


def run_workers(attention: str, steps: int, layout: str, cores: list[int]) -> float:
    """Images a second of the layout ``one`` (one process, all cores' threads) or ``lanes``
    (one single-thread process per core, pinned, started together)."""
    batch = 64
    jobs = [(cores, len(cores))] if layout == "one" else [([core], 1) for core in cores]
    procs = []
    for job_cores, threads in jobs:
        command = [sys.executable, __file__, "--worker", attention, str(steps), str(threads)]
        procs.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, text=True, **pinned(job_cores, threads)
            )
        )
    seconds = [float(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    return len(procs) * steps * batch / max(seconds)


#: The ablation row that trains each attention with the joint circle loss (the step's loss).
ABLATION_ROW = {"none": "tri_cir", "se": "se", "eca": "eca", "cbam": "cbam", "cbam_bn": "cbam_bn"}


def run_jobs(attention: str, epochs: int, layout: str, cores: list[int], out: Path) -> float:
    """Jobs an hour of ``len(cores)`` whole ``epochs``-epoch ablation_cpu training jobs (seeds
    0, 1, ...) run one after another on all cores (``one``) or at once, one pinned
    single-thread job per core (``lanes``)."""
    runs = [
        [
            sys.executable,
            "-m",
            "reid_attn.train",
            "experiment=ablation_cpu",
            f"ablation={ABLATION_ROW[attention]}",
            f"seed={seed}",
            f"trainer.max_epochs={epochs}",
            f"hydra.run.dir={out / f'{layout}-{attention}-{seed}-{time.time_ns()}'}",
        ]
        for seed in range(len(cores))
    ]

    def start(command: list[str], job_cores: list[int]) -> subprocess.Popen:
        threads = len(job_cores)
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, **pinned(job_cores, threads))

    begin = time.perf_counter()
    if layout == "one":  # one after another, each on every core
        codes = [start(command, cores).wait() for command in runs]
    else:  # all at once, one core each
        procs = [start(command, [core]) for command, core in zip(runs, cores, strict=True)]
        codes = [proc.wait() for proc in procs]
    if any(codes):
        sys.exit(f"a training job failed ({layout}): {runs}")
    return 3600 * len(runs) / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="none,cbam", help="attention types to measure")
    add_bench_args(parser, steps=6, rounds=2, out=RESULTS)
    parser.add_argument(
        "--epochs", type=int, default=0, help="also time whole jobs of this many epochs (0: no)"
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        attention, steps, threads = args.worker
        print(time_steps(attention, int(steps), int(threads)))
        return
    cores = sorted(os.sched_getaffinity(0))
    results = {}
    for attention in args.rows.split(","):
        runs = interleaved(
            ["one", "lanes"],
            lambda layout, attention=attention: run_workers(attention, args.steps, layout, cores),
            args.rounds,
        )
        results[attention] = medians(runs)
        print(attention, {k: round(v, 1) for k, v in results[attention].items()}, flush=True)
    jobs = {}
    with tempfile.TemporaryDirectory(prefix="bench_lanes_") as out:
        for attention in args.rows.split(",") if args.epochs else []:
            runs = interleaved(
                ["one", "lanes"],
                lambda layout, attention=attention: run_jobs(
                    attention, args.epochs, layout, cores, Path(out)
                ),
                args.rounds,
            )
            jobs[attention] = medians(runs)
            print(attention, "jobs/h", {k: round(v, 2) for k, v in jobs[attention].items()})
    epochs_flag = f" --epochs {args.epochs}" if args.epochs else ""
    result = {
        "command": f"python experiments/bench_lanes.py --rows {args.rows} --steps {args.steps} "
        f"--rounds {args.rounds}{epochs_flag}",
        **machine_record("32-true", threads=len(cores)),
        "steps": args.steps,
        "results": results,
        "epochs": args.epochs,
        "jobs_per_hour": jobs,
    }
    columns = ["attention", f"one job, {len(cores)} threads", f"{len(cores)} single-thread lanes"]
    rows = [
        [name, f"{r['one']:.1f}", f"{r['lanes']:.1f}", f"{r['lanes'] / r['one']:.2f}"]
        for name, r in results.items()
    ]
    lines = [
        *results_header("Two single-thread lanes against one multi-thread job", result),
        "Training step of experiment=ablation_cpu (float32, 64x32, batch 64, Adam), random "
        f"images; images/s summed over the processes, median of {args.rounds} interleaved rounds.",
        "",
        *markdown_table([*columns, "lanes / one"], rows, "lrrr"),
    ]
    if jobs:
        job_rows = [
            [name, f"{r['one']:.2f}", f"{r['lanes']:.2f}", f"{r['lanes'] / r['one']:.2f}"]
            for name, r in jobs.items()
        ]
        lines += [
            "",
            f"Whole jobs: `python -m reid_attn.train experiment=ablation_cpu` ({args.epochs} "
            "epochs, validation every epoch, checkpoints, the test at the end), the row that "
            f"trains each attention with the joint circle loss; {len(cores)} jobs one after "
            "another at all threads, or at once in pinned single-thread lanes; jobs an hour, "
            f"median of {args.rounds} interleaved rounds.",
            "",
            *markdown_table([*columns, "lanes / one"], job_rows, "lrrr"),
        ]
    print((write_results(result, lines, "bench_lanes", args.out)).read_text())


if __name__ == "__main__":
    main()
