"""Benchmark: evaluation and k-reciprocal re-ranking at MSMT17 scale in bounded memory.

    .venv/bin/python experiments/bench_scale.py                  # full MSMT17 test-set shape
    .venv/bin/python experiments/bench_scale.py --scale 0.05     # 5% of both counts, seconds
    .venv/bin/python experiments/bench_scale.py --skip-rerank    # chunked evaluation only

The problem has the MSMT17 test-set shape, 11,659 queries x 82,161 gallery images of 3,060
identities over 15 cameras (``--scale`` shrinks the three counts), with random 2048-d float32
features around one centre per identity, shifted per camera, and squared Euclidean distances.
A dense query x gallery matrix would be 3.8 GB and the gallery x gallery matrix of standard
re-ranking 27 GB (35 GB for the whole N x N, N = 93,820). Two measurements, each in its own
subprocess so that peak memory does not mix:

* ``evaluate``: ``evaluate_features`` (CMC / mAP / mINP by blocks of queries);
* ``rerank``: ``iter_re_ranking_from_features`` feeding ``evaluate_rank_chunked`` (what
  ``evaluate_features(..., rerank=True)`` does), timed to the first re-ranked block
  (neighbour search and sparse vectors) and to the end.

Peak memory is the process's peak resident set (VmHWM, features included; the kernel's mark
is reset just before the call, so generating the features does not count). At ``--scale``
0.1 or less the results are also checked against the dense computation (``evaluate_rank`` on
``compute_distance``, on ``re_ranking`` of the three dense matrices), outside the timing.
Writes experiments/results/bench_scale.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from harness import (
    RESULTS,
    add_bench_args,
    command_line,
    machine_record,
    markdown_table,
    reset_peak_rss,
    results_header,
    status_kib,
    write_results,
)

from reid_attn.metrics import (
    compute_distance,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_chunked,
    iter_re_ranking_from_features,
    re_ranking,
)

#: MSMT17 test set: queries, gallery images, identities, cameras.
MSMT17 = {"num_q": 11659, "num_g": 82161, "num_ids": 3060, "num_cams": 15}
#: Goals at full scale: peak RSS (GB) and, for re-ranking, time (s).
GOALS = {"evaluate": {"peak_rss_gb": 6.0}, "rerank": {"peak_rss_gb": 16.0, "seconds": 900.0}}
#: Largest scale at which the dense computation checks the results.
CHECK_SCALE = 0.1


def problem_shape(scale: float) -> dict[str, int]:
    """The MSMT17 counts times ``scale`` (at least 2 identities and 1 image per set)."""
    shape = {k: max(1, round(v * scale)) for k, v in MSMT17.items() if k != "num_cams"}
    shape["num_ids"] = max(2, shape["num_ids"])
    return {**shape, "num_cams": MSMT17["num_cams"]}


def make_problem(
    num_q: int,
    num_g: int,
    num_ids: int,
    num_cams: int,
    dim: int,
    noise: float,
    camera_shift: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``q (num_q, dim), g (num_g, dim)`` float32 features (identity centre + camera shift +
    Gaussian noise, built in blocks so no float64 copy exists) and ``q_pids, g_pids, q_camids,
    g_camids``. Every identity has gallery images; query pids are drawn from the same ids."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_ids, dim, generator=gen)
    shifts = camera_shift * torch.randn(num_cams, dim, generator=gen)
    g_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, max(0, num_g - num_ids))])
    g_pids = rng.permutation(g_pids)[:num_g]
    q_pids = rng.integers(0, num_ids, num_q)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)

    def features(pids: np.ndarray, cams: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(pids), dim)
        for start in range(0, len(pids), 8192):
            p = torch.as_tensor(pids[start : start + 8192])
            c = torch.as_tensor(cams[start : start + 8192])
            block = torch.randn(len(p), dim, generator=gen).mul_(noise)
            out[start : start + len(p)] = block.add_(centres[p]).add_(shifts[c])
        return out

    return features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def _dense_check(task: str, problem: tuple, args: argparse.Namespace, result: dict) -> dict:
    """The same figures from the dense matrices, and whether they agree (outside the timing)."""
    q, g, *labels = problem
    distmat = compute_distance(q, g)
    if task == "rerank":
        distmat = re_ranking(
            distmat, compute_distance(q, q), compute_distance(g, g), args.k1, args.k2, args.lam
        )
    dense = evaluate_rank(distmat, *labels)
    return {
        "dense_mAP": dense["mAP"],
        "max_abs_diff_mAP": abs(dense["mAP"] - result["mAP"]),
        "max_abs_diff_cmc": float(np.abs(dense["cmc"] - result["cmc"]).max()),
        "max_abs_diff_mINP": abs(dense["mINP"] - result["mINP"]),
    }


def worker(task: str, args: argparse.Namespace, out_path: Path) -> None:
    """Build the problem, run one measurement, write its figures as JSON to ``out_path``."""
    shape = problem_shape(args.scale)
    problem = make_problem(
        **shape, dim=args.dim, noise=args.noise, camera_shift=args.camera_shift, seed=args.seed
    )
    q, g, *labels = problem
    features_gb = (q.nelement() + g.nelement()) * 4 / 1e9
    reset = reset_peak_rss()
    rss_before = status_kib("VmRSS")
    stats: dict = {}
    start = time.perf_counter()
    if task == "evaluate":
        result = evaluate_features(q, g, *labels, chunk_size=args.chunk_size)
    else:
        blocks = iter_re_ranking_from_features(
            q, g, args.k1, args.k2, args.lam, chunk_size=args.block, query_chunk=args.chunk_size
        )

        def timed(blocks: Iterator) -> Iterator:
            for n, item in enumerate(blocks):
                if n == 0:
                    stats["seconds_to_first_block"] = time.perf_counter() - start
                yield item

        result = evaluate_rank_chunked(timed(blocks), *labels)
    stats["seconds"] = time.perf_counter() - start
    stats.update(
        peak_rss_gb=status_kib("VmHWM") * 1024 / 1e9,
        rss_before_gb=rss_before * 1024 / 1e9,
        features_gb=features_gb,
        peak_reset_before_call=reset,
        mAP=result["mAP"],
        rank1=float(result["cmc"][0]),
        mINP=result["mINP"],
    )
    if args.scale <= CHECK_SCALE:
        stats.update(_dense_check(task, problem, args, result))
    out_path.write_text(json.dumps(stats))


def run_worker(task: str, argv: list[str]) -> dict:
    """One measurement in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats.json"
        cmd = [sys.executable, __file__, *argv, "--worker", task, "--out", str(out)]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def goal_text(name: str, row: dict, scale: float) -> str:
    """The goal of measurement ``name`` at full scale, and at full scale whether it was met."""
    goal = GOALS[name]
    text = f"peak RSS < {goal['peak_rss_gb']:.0f} GB" + (
        f", < {goal['seconds'] / 60:.0f} min" if "seconds" in goal else ""
    )
    if scale == 1.0:
        met = row["peak_rss_gb"] < goal["peak_rss_gb"] and row["seconds"] < goal.get(
            "seconds", float("inf")
        )
        text += " (met)" if met else " (NOT met)"
    return text


def markdown(result: dict) -> list[str]:
    """The results page: the problem, one row a measurement, the dense checks."""
    shape = result["shape"]
    columns = ["measurement", "time (s)", "first re-ranked block (s)", "peak RSS (GB)"]
    columns += ["RSS before (GB)", "mAP", "rank-1", "goal (full scale)"]
    rows = []
    for name, row in result["rows"].items():
        first = row.get("seconds_to_first_block")
        rows.append(
            [
                name,
                f"{row['seconds']:.1f}",
                "" if first is None else f"{first:.1f}",
                f"{row['peak_rss_gb']:.2f}",
                f"{row['rss_before_gb']:.2f}",
                f"{row['mAP']:.4f}",
                f"{row['rank1']:.4f}",
                goal_text(name, row, result["scale"]),
            ]
        )
    lines = [
        *results_header("Evaluation and re-ranking at MSMT17 scale", result),
        f"Problem (scale {result['scale']}): {shape['num_q']:,} queries x {shape['num_g']:,} "
        f"gallery images (N = {shape['num_q'] + shape['num_g']:,}), {shape['num_ids']:,} "
        f"identities, {shape['num_cams']} cameras, {result['dim']}-d float32 features "
        f"({result['features_gb']:.2f} GB), squared Euclidean. Re-ranking k1={result['k1']}, "
        f"k2={result['k2']}, lambda={result['lambda']}. A dense query x gallery float32 matrix "
        f"would be {result['dense_qg_gb']:.2f} GB, the N x N one {result['dense_nn_gb']:.2f} GB.",
        "",
        *markdown_table(columns, rows, "lrrrrrrl"),
        "",
    ]
    for name, row in result["rows"].items():
        if "dense_mAP" in row:
            lines.append(
                f"- {name}: checked against the dense computation: max |difference| mAP "
                f"{row['max_abs_diff_mAP']:.1e}, CMC {row['max_abs_diff_cmc']:.1e}, mINP "
                f"{row['max_abs_diff_mINP']:.1e}."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MSMT17's counts")
    parser.add_argument("--skip-rerank", action="store_true", help="chunked evaluation only")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--noise", type=float, default=3.5, help="feature noise around centres")
    parser.add_argument("--camera-shift", type=float, default=0.5, help="per-camera offset")
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per block")
    parser.add_argument("--block", type=int, default=None, help="items per re-ranking tile")
    add_bench_args(parser, k1=20, k2=6, lam=0.3, seed=0)
    parser.add_argument("--worker", choices=["evaluate", "rerank"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must lie in (0, 1], got {args.scale}")
    if args.worker:
        worker(args.worker, args, args.out)
        return

    argv = [a for a in sys.argv[1:] if a != "--skip-rerank"]
    tasks = ["evaluate"] if args.skip_rerank else ["evaluate", "rerank"]
    rows = {}
    for task in tasks:
        print(f"{task} ...", flush=True)
        rows[task] = run_worker(task, argv)
        print(json.dumps(rows[task], indent=1), flush=True)
    shape = problem_shape(args.scale)
    num = shape["num_q"] + shape["num_g"]
    result = {
        **machine_record(
            "float32",
            extra=f"load average {os.getloadavg()[0]:.1f} at the end, numpy {np.__version__}",
        ),
        "command": command_line(),
        "scale": args.scale,
        "shape": shape,
        "dim": args.dim,
        "features_gb": num * args.dim * 4 / 1e9,
        "dense_qg_gb": shape["num_q"] * shape["num_g"] * 4 / 1e9,
        "dense_nn_gb": num * num * 4 / 1e9,
        "k1": args.k1,
        "k2": args.k2,
        "lambda": args.lam,
        "rows": rows,
    }
    print(write_results(result, markdown(result), "bench_scale", RESULTS).read_text())


if __name__ == "__main__":
    main()
