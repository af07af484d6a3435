"""The default run (`make train`) over several seeds: wall time, test figures, the matcher.

Each seed runs `python -m reid_attn.train seed=S` in its own process with an empty data cache,
so its wall time includes generating the synthetic data, as on a fresh clone (the install is
not included). The colour-histogram matcher (colour_histogram_baseline.py) is evaluated on the
same test split. Writes experiments/results/default_run.{json,md}.

    .venv/bin/python experiments/default_run.py [--seeds 0,1,2] [train overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import machine_record, write_results

METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")


def run_seed(seed: int, overrides: list[str], workdir: Path) -> dict:
    """Train the default with ``seed`` into ``workdir``; its test metrics, wall seconds and
    resolved training precision."""
    run_dir = workdir / f"seed{seed}"
    env = {**os.environ, "REID_ATTN_CACHE": str(workdir / f"cache{seed}")}
    command = [sys.executable, "-m", "reid_attn.train", f"seed={seed}", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run([*command, *overrides], env=env, check=True)
    seconds = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    precision = json.loads((run_dir / "machine.json").read_text())[-1]["precision"]
    return {
        "seed": seed,
        "seconds": seconds,
        **{k: metrics[k] for k in METRICS},
        "precision": precision,
    }


def matcher_figures(overrides: list[str]) -> dict:
    """Best Rank-1 variant of the colour-histogram matcher on the same split."""
    out = Path(tempfile.mkdtemp()) / "matcher.json"
    script = Path(__file__).with_name("colour_histogram_baseline.py")
    subprocess.run([sys.executable, str(script), "--out", str(out), *overrides], check=True)
    results = json.loads(out.read_text())["results"]
    name = max(results, key=lambda k: results[k]["rank1"])
    return {"variant": name, **results[name]}


def summary_table(runs: list[dict], matcher: dict) -> str:
    """Markdown: one row per seed, mean +- std, the matcher, in percent and seconds."""
    lines = [
        "| seed | Rank-1 | Rank-5 | mAP | mINP | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {100 * r['rank1']:.2f} | {100 * r['rank5']:.2f} | "
            f"{100 * r['mAP']:.2f} | {100 * r['mINP']:.2f} | {r['seconds']:.0f} |"
        )

    def pm(key: str, scale: float = 100.0) -> str:
        values = np.array([r[key] for r in runs]) * scale
        return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"

    lines.append(
        f"| mean ± std | {pm('rank1')} | {pm('rank5')} | {pm('mAP')} | {pm('mINP')} | "
        f"{pm('seconds', 1.0)} |"
    )
    lines.append(
        f"| colour-histogram matcher ({matcher['variant']}) | {100 * matcher['rank1']:.2f} | "
        f"{100 * matcher['rank5']:.2f} | {100 * matcher['mAP']:.2f} | "
        f"{100 * matcher['mINP']:.2f} | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="experiments/results/default_run")
    parser.add_argument("overrides", nargs="*", help="train overrides (none: the default run)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="default_run-"))
    runs = [run_seed(int(s), args.overrides, workdir) for s in args.seeds.split(",")]
    matcher = matcher_figures(args.overrides)
    table = summary_table(runs, matcher)
    print(table)
    precisions = sorted({r["precision"] for r in runs})
    record = {
        **machine_record(", ".join(precisions)),
        "overrides": args.overrides,
        "runs": runs,
        "matcher": matcher,
    }
    command = f"python experiments/default_run.py --seeds {args.seeds} {' '.join(args.overrides)}"
    lines = [
        "# The default run (`make train`), several seeds",
        "",
        f"Command: `{command.rstrip()}`  ",
        f"Machine: {record['machine']}  ",
        "Wall time includes generating the synthetic data (empty cache), not the install. "
        "Test split, last checkpoint, percent.",
        "",
        table,
    ]
    out = Path(args.out)
    write_results(record, lines, out.name, out.parent)


if __name__ == "__main__":
    main()
