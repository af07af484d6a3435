"""Two single-thread training jobs at once, each pinned to a core, against one two-thread job.

The CPU ablation (experiments/ablation_cpu.py) runs its jobs in lanes. This measures which way
two cores train more images a second: the training step of ``experiment=ablation_cpu`` (float32,
64x32, batch 16 x 4, Adam) on random images, in (a) one process with ``--cores`` threads and
(b) ``--cores`` processes with one thread each, pinned to one core each, started together.
Rounds alternate a and b; medians are reported. Writes
experiments/results/bench_lanes.{json,md} with the machine line.

    python experiments/bench_lanes.py [--rows none,cbam] [--steps 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def time_steps(attention: str, steps: int, threads: int) -> float:
    """Seconds for ``steps`` training steps (after one warm-up step) of the ablation_cpu setting
    with ``attention`` and the joint circle loss, in this process at ``threads`` threads."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import reid_attn
    from reid_attn.module import ReIDModule

    torch.set_num_threads(threads)
    conf = Path(reid_attn.__file__).parent / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(
            "train", ["experiment=ablation_cpu", f"attention={attention}", "output_dir=x"]
        )
    torch.manual_seed(0)
    module = ReIDModule(
        num_classes=184,
        **{
            k: OmegaConf.to_container(cfg[k], resolve=True)
            for k in ("model", "loss", "optimizer", "scheduler", "evaluation")
        },
    )
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.optimizer.lr)
    p, k = cfg.data.num_identities, cfg.data.num_instances
    images = torch.randn(p * k, 3, cfg.data.height, cfg.data.width)
    pids = torch.arange(p).repeat_interleave(k)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.compute_losses(module.net(images), pids)["loss"].backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def run_workers(attention: str, steps: int, layout: str, cores: list[int]) -> float:
    """Images a second of the layout ``one`` (one process, all cores' threads) or ``lanes``
    (one single-thread process per core, pinned, started together)."""
    batch = 64
    jobs = [(cores, len(cores))] if layout == "one" else [([core], 1) for core in cores]
    procs = []
    for pinned, threads in jobs:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, __file__, "--worker", attention, str(steps), str(threads)]
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=lambda pinned=pinned: os.sched_setaffinity(0, set(pinned)),
            )
        )
    seconds = [float(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    return len(procs) * steps * batch / max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="none,cbam", help="attention types to measure")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        attention, steps, threads = args.worker
        print(time_steps(attention, int(steps), int(threads)))
        return
    from reid_attn.runs.machine import machine_info, machine_line

    cores = sorted(os.sched_getaffinity(0))
    results = {}
    for attention in args.rows.split(","):
        rates = {"one": [], "lanes": []}
        for _ in range(args.rounds):
            for layout in rates:
                rates[layout].append(run_workers(attention, args.steps, layout, cores))
        results[attention] = {k: float(np.median(v)) for k, v in rates.items()}
        print(attention, {k: round(v, 1) for k, v in results[attention].items()}, flush=True)
    info = machine_info("32-true")
    info["threads"] = len(cores)
    lines = [
        "# Two single-thread lanes against one multi-thread job",
        "",
        f"Command: `python experiments/bench_lanes.py --rows {args.rows} --steps {args.steps} "
        f"--rounds {args.rounds}`  ",
        f"Machine: {machine_line(info)}  ",
        "Training step of experiment=ablation_cpu (float32, 64x32, batch 64, Adam), random "
        f"images; images/s summed over the processes, median of {args.rounds} alternating rounds.",
        "",
        f"| attention | one job, {len(cores)} threads | {len(cores)} single-thread lanes "
        "| lanes / one |",
        "|---|---:|---:|---:|",
    ]
    for attention, r in results.items():
        lines.append(
            f"| {attention} | {r['one']:.1f} | {r['lanes']:.1f} | {r['lanes'] / r['one']:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_lanes.md").write_text("\n".join(lines) + "\n")
    (args.out / "bench_lanes.json").write_text(
        json.dumps({"machine": info, "steps": args.steps, "results": results}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
