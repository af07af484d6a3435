"""Where an attention module's training time goes: torch.profiler over training steps of the
plain ResNet50 and of one with attention, side by side, and the operators whose self time
grew the most.

    .venv/bin/python experiments/profile_attention.py                  # cbam, 256x128, batch 8
    .venv/bin/python experiments/profile_attention.py --attention se --size 128x64

Each model runs ``--warmup`` untimed steps, then ``--steps`` profiled ones (the same training
step as experiments/bench_train.py: forward, joint loss, backward, Adam). Printed: the step
time of both, their ratio, and per operator the self time of both (ms per step) and the
difference, sorted by difference; the rows account for the attention's extra time.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from harness import parse_size, training_step
from torch.profiler import ProfilerActivity, profile


def profile_steps(spec: dict, warmup: int, steps: int) -> tuple[float, dict[str, float]]:
    """Mean step time (s) and per-operator self CPU time (ms per step)."""
    step, _batch = training_step(spec)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    seconds = (time.perf_counter() - start) / steps
    per_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        per_op[event.key] += event.self_cpu_time_total / 1000 / steps
    return seconds, per_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", default="cbam", choices=["se", "eca", "cbam"])
    parser.add_argument("--size", default="256x128")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variant", default="fp32", help="harness variant, e.g. channels_last")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    spec = {
        "size": parse_size(args.size),
        "variant": args.variant,
        "device": "cpu",
        "batch": args.batch,
    }
    base_s, base_ops = profile_steps({**spec, "attention": "none"}, args.warmup, args.steps)
    attn_s, attn_ops = profile_steps({**spec, "attention": args.attention}, args.warmup, args.steps)
    print(
        f"{args.size} {args.variant}, batch {args.batch}, {torch.get_num_threads()} threads: "
        "step none "
        f"{base_s:.3f} s, {args.attention} {attn_s:.3f} s, throughput ratio "
        f"{base_s / attn_s:.3f}; extra {1000 * (attn_s - base_s):.0f} ms per step"
    )
    extra = {op: attn_ops.get(op, 0.0) - base_ops.get(op, 0.0) for op in attn_ops | base_ops}
    print(f"{'operator':<40} {'none ms':>9} {args.attention + ' ms':>9} {'extra ms':>9}")
    for op in sorted(extra, key=extra.get, reverse=True)[: args.rows]:
        print(
            f"{op[:40]:<40} {base_ops.get(op, 0.0):9.1f} {attn_ops.get(op, 0.0):9.1f} "
            f"{extra[op]:9.1f}"
        )


if __name__ == "__main__":
    main()
