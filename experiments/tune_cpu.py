"""A measured hyper-parameter search on the default data, with and without pruning.

Runs ``python -m reid_attn.tune`` once per pruner (default: median, then none) with the same
trial budget and settings, each as its own study in its own folder under --workdir, and reads
back each search's trials.csv: wall time, trials complete / pruned / failed, epochs trained,
and the best validation mAP (held-out training identities) with its trial. Writes
experiments/results/tune_cpu.{json,md}, whose machine line names the CPU.

    .venv/bin/python experiments/tune_cpu.py [--trials 8] [--pruners median,none] [overrides ...]

The default trial is short: 4 epochs of the default run's data (lr x0.1 after epoch 3), float32
(one table must not mix precisions across CPUs); the median pruner judges from the second
epoch once 3 trials have finished. Any train or tune override given after the flags is added to
both searches. --quick: two 1-epoch trials of debug=fast, to check the script.

--lanes runs the searches at the same time, each pinned to its own core with one thread and
the memory data pipeline (as experiments/ablation_cpu.py runs its jobs): on a 2-core machine
both searches then see the same machine for the same half hour, side by side.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import machine_record, markdown_table, pinned, write_results

#: Overrides of the measured trials (both searches).
TRIAL_OVERRIDES = [
    "trainer.max_epochs=4",
    "scheduler.warmup_epochs=1",
    "scheduler.milestones=[3]",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "tune.sampler.n_startup_trials=4",
    "tune.pruners.median.n_startup_trials=3",
    "tune.pruners.median.n_warmup_steps=1",
]
QUICK_OVERRIDES = ["debug=fast", "trainer.precision=32-true"]
#: Added with --lanes: one thread and no loader processes a search.
LANE_OVERRIDES = ["data.pipeline=memory", "data.num_workers=1"]


def run_search(
    pruner: str, trials: int, overrides: list[str], workdir: Path, core: int | None = None
) -> dict:
    """One search with ``pruner``; its wall seconds and the summary of its trials.csv. With
    ``core``, the search runs pinned to that CPU core with one thread."""
    folder = workdir / f"search-{pruner}"
    command = [
        sys.executable,
        "-m",
        "reid_attn.tune",
        f"tune.pruner={pruner}",
        f"tune.n_trials={trials}",
        f"tune.study_name=tune_cpu_{pruner}",
        f"hydra.run.dir={folder}",
        *overrides,
    ]
    lane = {} if core is None else pinned([core], 1)
    start = time.perf_counter()
    subprocess.run(command, check=True, **lane)
    seconds = time.perf_counter() - start
    with open(folder / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: float(r["objective"]), default=None)
    return {
        "pruner": pruner,
        "seconds": seconds,
        "trials": len(rows),
        "complete": len(complete),
        "pruned": sum(r["state"] == "PRUNED" for r in rows),
        "failed": sum(r["state"] == "FAIL" for r in rows),
        "epochs": sum(int(r["epochs"] or 0) for r in finished),
        "best_mAP": None if best is None else float(best["objective"]),
        "best_trial": None if best is None else int(best["number"]),
        "folder": str(folder),
    }


def table(results: list[dict]) -> list[str]:
    """Markdown: one row per search."""
    columns = ["pruner", "trials", "complete", "pruned", "failed", "epochs trained"]
    columns += ["wall time", "best val mAP (trial)"]
    rows = [
        [
            r["pruner"],
            r["trials"],
            r["complete"],
            r["pruned"],
            r["failed"],
            r["epochs"],
            f"{r['seconds'] / 60:.1f} min",
            "-" if r["best_mAP"] is None else f"{100 * r['best_mAP']:.2f} ({r['best_trial']})",
        ]
        for r in results
    ]
    return markdown_table(columns, rows, "lrrrrrrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--pruners", default="median,none")
    parser.add_argument("--workdir", default="outputs/tune_cpu")
    parser.add_argument("--out", default="experiments/results/tune_cpu")
    parser.add_argument("--quick", action="store_true", help="two 1-epoch trials of debug=fast")
    parser.add_argument(
        "--lanes", action="store_true", help="the searches side by side, one pinned core each"
    )
    args, extra = parser.parse_known_args()
    trials = 2 if args.quick else args.trials
    overrides = [*(QUICK_OVERRIDES if args.quick else TRIAL_OVERRIDES), *extra]
    pruners = args.pruners.split(",")
    workdir = Path(args.workdir) / time.strftime("%Y-%m-%d_%H-%M-%S")
    if args.lanes:
        cores = sorted(os.sched_getaffinity(0))
        if len(pruners) > len(cores):
            raise SystemExit(f"--lanes: {len(pruners)} searches but {len(cores)} cores")
        overrides = [*LANE_OVERRIDES, *overrides]
        with ThreadPoolExecutor(len(pruners)) as pool:
            results = list(
                pool.map(lambda p, c: run_search(p, trials, overrides, workdir, c), pruners, cores)
            )
    else:
        results = [run_search(pruner, trials, overrides, workdir) for pruner in pruners]
    threads = (
        "1 a search, each on its own core"
        if args.lanes
        else os.environ.get("OMP_NUM_THREADS", "unset")
    )
    payload = {
        **machine_record("32-true"),
        "omp_num_threads": threads,
        "overrides": overrides,
        "results": results,
    }
    lines = [
        "# Hyper-parameter search on the CPU, with and without pruning",
        "",
        f"Machine: {payload['machine']}; OMP_NUM_THREADS={payload['omp_num_threads']}.",
        f"Command: experiments/tune_cpu.py --trials {trials}{' --lanes' if args.lanes else ''} "
        f"(overrides: {' '.join(overrides)}).",
        "",
        *table(results),
    ]
    out = Path(args.out)
    print(write_results(payload, lines, out.name, out.parent).read_text())


if __name__ == "__main__":
    main()
