"""Run one part of the CPU ablation (``experiment=ablation_cpu``): some rows x seeds, in lanes.

Each lane is a sequence of jobs run one after another by ``python -m reid_attn.train
experiment=ablation_cpu ablation=ROW seed=SEED`` into ``OUT/PART/ROW-seedSEED``, pinned to its
own CPU core with ``--threads`` intra-op threads (on this project's 2-core Intel Xeon two
single-thread lanes finish 1.11x the whole jobs an hour of one two-thread job at a time,
experiments/results/bench_lanes.md, and the kernel's load balancer left unpinned niced jobs
stacked on one core: see docs/ablation.md).
A job whose folder holds ``metrics.json`` is skipped; one holding ``checkpoints/last.ckpt``
(killed) is resumed with ``resume=true``, so running the same command again finishes a part.
Each finished job's record (config.yaml, metrics.json, machine.json, csv/ and tensorboard/
logs, train.log; no checkpoints) is copied to ``--results/PART/ROW-seedSEED``, where
``python -m reid_attn.report`` merges the parts.

    python experiments/ablation_cpu.py --part seed0 --jobs baseline:0,tri:0,tri_cir:0 \\
        --jobs se:0,eca:0,cbam:0 [--out outputs/ablation_cpu] [train overrides ...]

Each ``--jobs`` is one lane (``ROW:SEED`` comma-separated); lanes run at once, lane i on core
i modulo the cores this process may use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import pinned

#: What a finished job's record keeps (no checkpoints: 0.4 GB a job).
RECORD = ("config.yaml", "metrics.json", "machine.json", "train.log", "csv", "tensorboard")


def parse_lane(text: str) -> list[tuple[str, int]]:
    """``"baseline:0,cbam:1"`` -> ``[("baseline", 0), ("cbam", 1)]``. Raises SystemExit on a
    malformed entry."""
    jobs = []
    for entry in text.split(","):
        row, _, seed = entry.strip().partition(":")
        if not row or not seed.isdigit():
            sys.exit(f"error: --jobs entry {entry!r} is not ROW:SEED (e.g. cbam:0)")
        jobs.append((row, int(seed)))
    return jobs


def job_command(run_dir: Path, row: str, seed: int, overrides: list[str]) -> list[str]:
    """The training command of one job; ``resume=true`` when ``run_dir`` holds a killed
    run's ``last.ckpt``."""
    command = [
        sys.executable,
        "-m",
        "reid_attn.train",
        "experiment=ablation_cpu",
        f"ablation={row}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        command.append("resume=true")
    return command


def copy_record(run_dir: Path, target: Path) -> None:
    """Copy a finished job's :data:`RECORD` (times kept: the report reads wall times from
    them) to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in RECORD:
        source = run_dir / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, target / name)


def start_lane(
    jobs: list[tuple[str, int]], core: int, args: argparse.Namespace, overrides: list[str]
) -> subprocess.Popen:
    """Start this script's ``--lane-worker`` for ``jobs`` pinned to ``core``."""
    lane = ",".join(f"{row}:{seed}" for row, seed in jobs)
    command = [
        sys.executable,
        __file__,
        "--part",
        args.part,
        "--out",
        str(args.out),
        "--results",
        str(args.results),
        "--lane-worker",
        lane,
        *overrides,
    ]
    return subprocess.Popen(command, **pinned([core], args.threads))


def run_lane(jobs: list[tuple[str, int]], args: argparse.Namespace, overrides: list[str]) -> int:
    """Run ``jobs`` one after another (skip finished ones, resume killed ones); copy each
    record. Returns the number of failed jobs."""
    failed = 0
    for row, seed in jobs:
        name = f"{row}-seed{seed}"
        run_dir = args.out / args.part / name
        if not (run_dir / "metrics.json").is_file():
            start = time.time()
            print(f"[{args.part}] {name}: start", flush=True)
            done = subprocess.run(job_command(run_dir, row, seed, overrides))
            minutes = (time.time() - start) / 60
            if done.returncode != 0:
                print(f"[{args.part}] {name}: FAILED after {minutes:.1f} min", flush=True)
                failed += 1
                continue
            print(f"[{args.part}] {name}: done in {minutes:.1f} min", flush=True)
        copy_record(run_dir, args.results / args.part / name)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", required=True, help="name of this part's folder")
    parser.add_argument("--jobs", action="append", default=[], help="one lane: ROW:SEED,...")
    parser.add_argument("--out", type=Path, default=Path("outputs/ablation_cpu"))
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("experiments/results/ablation_cpu"),
        help="where finished jobs' records are copied",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per lane")
    parser.add_argument("--lane-worker", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.lane_worker is not None:
        sys.exit(min(run_lane(parse_lane(args.lane_worker), args, overrides), 1))
    if not args.jobs:
        parser.error("give at least one lane with --jobs ROW:SEED,...")
    cores = sorted(os.sched_getaffinity(0))
    lanes = [
        start_lane(parse_lane(text), cores[i % len(cores)], args, overrides)
        for i, text in enumerate(args.jobs)
    ]
    codes = [lane.wait() for lane in lanes]
    if any(codes):
        sys.exit(f"error: {sum(c != 0 for c in codes)} lane(s) had failed jobs; rerun to retry")
    print(f"part {args.part}: all jobs finished; records in {args.results / args.part}")


if __name__ == "__main__":
    main()
