"""Benchmark: sparse top-k re-ranking (reid_attn.metrics.re_ranking) vs the dense formulation.

    .venv/bin/python experiments/bench_rerank.py            # N = 9,640 side by side + N = 19,281
    .venv/bin/python experiments/bench_rerank.py --quick    # N = 1,000, seconds, no files

Each method runs in its own subprocess on the same distance matrices (saved once as .npy and
loaded by each worker), so peak memory does not mix. Peak memory is measured two ways: the
tracemalloc peak of the call (every numpy allocation made during it, output included, inputs
excluded) and the growth of the process's peak resident set (the kernel's VmHWM, reset through
/proc/self/clear_refs just before the call, minus the resident set then), which also sees what
tracemalloc does not (torch, BLAS, allocator slack). The sparse method runs ``--repeats``
times (median time), the dense one once. Writes experiments/results/bench_rerank.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
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

from reid_attn.metrics import compute_distance


def dense_re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """The standard dense k-reciprocal re-ranking (Zhong et al. 2017; torchreid's layout).

    ``(num_q, num_g), (num_q, num_q), (num_g, num_g) -> (num_q, num_g)`` float32. Builds the
    full ``N x N`` matrix, normalises by column maxima, transposes, argsorts every row (stable,
    so ties go by index), fills dense ``V`` row by row, averages it over ``k2`` neighbours,
    then computes Jaccard distances through an inverted index. Inputs are used as given (the
    torchreid copy additionally squares them). Reference for tests and benchmarks only.
    """
    num_q = q_g_dist.shape[0]
    full = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    ).astype(np.float32)
    original = np.transpose(full / np.max(full, axis=0))
    del full
    num = original.shape[0]
    weights = np.zeros_like(original)
    initial_rank = np.argsort(original, axis=1, kind="stable").astype(np.int32)
    half = int(np.around(k1 / 2.0))
    for i in range(num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        reciprocal = forward[np.where(backward == i)[0]]
        expansion = reciprocal
        for candidate in reciprocal:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            shared = np.intersect1d(c_reciprocal, reciprocal)
            if len(shared) > 2.0 / 3.0 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        weights[i, expansion] = weight / np.sum(weight)
    original = original[:num_q]
    if k2 != 1:
        expanded = np.zeros_like(weights)
        for i in range(num):
            expanded[i] = np.mean(weights[initial_rank[i, :k2]], axis=0)
        weights = expanded
        del expanded
    del initial_rank
    inverted = [np.where(weights[:, j] != 0)[0] for j in range(num)]
    jaccard = np.zeros_like(original)
    for i in range(num_q):
        shared_min = np.zeros(num, dtype=np.float32)
        for k in np.where(weights[i] != 0)[0]:
            rows = inverted[k]
            shared_min[rows] += np.minimum(weights[i, k], weights[rows, k])
        jaccard[i] = 1.0 - shared_min / (2.0 - shared_min)
    final = jaccard * (1.0 - lambda_value) + original * lambda_value
    return final[:, num_q:]


def make_problem(
    num_q: int, num_g: int, num_ids: int, dim: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared Euclidean float32 distances of identity-clustered random features:
    ``q_g (num_q, num_g), q_q (num_q, num_q), g_g (num_g, num_g)``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim)).astype(np.float32)
    q = centres[rng.integers(0, num_ids, num_q)] + noise * rng.standard_normal((num_q, dim))
    g = centres[rng.integers(0, num_ids, num_g)] + noise * rng.standard_normal((num_g, dim))
    q, g = torch.as_tensor(q, dtype=torch.float32), torch.as_tensor(g, dtype=torch.float32)
    return (
        compute_distance(q, g).numpy(),
        compute_distance(q, q).numpy(),
        compute_distance(g, g).numpy(),
    )


def worker(method: str, folder: Path, k1: int, k2: int, lam: float, repeats: int) -> None:
    """Run one method ``repeats`` times on the saved matrices; write its last output and the
    measurements (median time; memory peaks over all runs)."""
    from reid_attn.metrics import re_ranking

    q_g, q_q, g_g = (np.load(folder / f"{name}.npy") for name in ("q_g", "q_q", "g_g"))
    fn = re_ranking if method == "sparse" else dense_re_ranking
    reset_peak_rss()
    rss_before = status_kib("VmRSS")
    tracemalloc.start()
    times, out = [], None
    for _ in range(repeats):
        out = None  # the previous output is freed before the next run
        start = time.perf_counter()
        out = fn(q_g, q_q, g_g, k1, k2, lam)
        times.append(time.perf_counter() - start)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = status_kib("VmHWM")
    np.save(folder / f"out_{method}.npy", out)
    stats = {
        "seconds": statistics.median(times),
        "all_seconds": times,
        "tracemalloc_peak_mb": traced_peak / 2**20,
        "rss_growth_mb": max(0, rss_peak - rss_before) / 1024,
        "input_mb": sum(a.nbytes for a in (q_g, q_q, g_g)) / 2**20,
    }
    (folder / f"stats_{method}.json").write_text(json.dumps(stats))


def run_method(method: str, folder: Path, args: argparse.Namespace) -> dict:
    repeats = args.repeats if method == "sparse" else 1
    cmd = [sys.executable, __file__, "--worker", method, "--folder", str(folder)]
    cmd += ["--k1", str(args.k1), "--k2", str(args.k2), "--lam", str(args.lam)]
    cmd += ["--repeats", str(repeats)]
    subprocess.run(cmd, check=True)
    return json.loads((folder / f"stats_{method}.json").read_text())


def compare(num_q: int, num_g: int, args: argparse.Namespace, dense: bool) -> dict:
    """Both methods (or only the sparse one) on one problem size."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, mat in zip(
            ("q_g", "q_q", "g_g"),
            make_problem(num_q, num_g, args.ids, args.dim, args.noise, args.seed),
            strict=True,
        ):
            np.save(folder / f"{name}.npy", mat)
        row: dict = {"num_q": num_q, "num_g": num_g, "N": num_q + num_g}
        row["sparse"] = run_method("sparse", folder, args)
        if dense:
            row["dense"] = run_method("dense", folder, args)
            ours = np.load(folder / "out_sparse.npy")
            ref = np.load(folder / "out_dense.npy")
            row["max_abs_diff"] = float(np.abs(ours.astype(np.float64) - ref).max())
            row["speedup"] = row["dense"]["seconds"] / row["sparse"]["seconds"]
            for key in ("tracemalloc_peak_mb", "rss_growth_mb"):
                row[f"memory_ratio_{key}"] = row["sparse"][key] / row["dense"][key]
        return row


def markdown(result: dict) -> list[str]:
    """The results page: time and memory of each method and size, then the comparisons."""
    columns = ["N (query + gallery)", "method", "time (s)", "tracemalloc peak (MB)"]
    columns += ["RSS growth (MB)", "inputs (MB)"]
    rows = [
        [
            f"{row['N']:,} ({row['num_q']:,} + {row['num_g']:,})",
            method,
            f"{row[method]['seconds']:.2f}",
            f"{row[method]['tracemalloc_peak_mb']:.0f}",
            f"{row[method]['rss_growth_mb']:.0f}",
            f"{row[method]['input_mb']:.0f}",
        ]
        for row in result["rows"]
        for method in ("dense", "sparse")
        if method in row
    ]
    lines = [
        *results_header("k-reciprocal re-ranking: sparse top-k vs dense", result),
        f"k1={result['k1']}, k2={result['k2']}, lambda={result['lambda']}; float32 squared "
        "Euclidean distances of identity-clustered random features.",
        "",
        *markdown_table(columns, rows, "llrrrr"),
        "",
    ]
    for row in result["rows"]:
        if "dense" in row:
            lines.append(
                f"- N = {row['N']:,}: sparse is {row['speedup']:.1f}x faster; its peak memory "
                f"is {row['memory_ratio_tracemalloc_peak_mb']:.3f}x (tracemalloc) and "
                f"{row['memory_ratio_rss_growth_mb']:.3f}x (RSS growth) of the dense one; "
                f"max |difference| = {row['max_abs_diff']:.2e}."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--worker", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    add_bench_args(parser, k1=20, k2=6, lam=0.3, seed=0)
    parser.add_argument("--ids", type=int, default=750, help="identities in the problem")
    parser.add_argument("--dim", type=int, default=256, help="feature dimension")
    parser.add_argument("--noise", type=float, default=1.0, help="feature noise around centres")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the sparse method")
    parser.add_argument("--no-full", action="store_true", help="skip the N = 19,281 run")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.k1, args.k2, args.lam, args.repeats)
        return

    sizes = [(300, 700)] if args.quick else [(3368, 6272)]
    rows = [compare(nq, ng, args, dense=True) for nq, ng in sizes]
    if not args.quick and not args.no_full:
        rows.append(compare(3368, 15913, args, dense=False))  # full Market-1501 test set
    result = {
        **machine_record("float32"),
        "command": command_line(),
        "k1": args.k1,
        "k2": args.k2,
        "lambda": args.lam,
        "rows": rows,
    }
    if args.quick:
        print(json.dumps(rows, indent=2))
        return
    print(write_results(result, markdown(result), "bench_rerank", RESULTS).read_text())


if __name__ == "__main__":
    main()
