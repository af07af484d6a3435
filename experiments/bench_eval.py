"""Benchmark: exact CMC / mAP / mINP without sorting (reid_attn.metrics.evaluate_rank) against
``np.argsort`` of the same matrix and the previous stable-argsort implementation.

    .venv/bin/python experiments/bench_eval.py             # Market-1501-sized, 3 repeats
    .venv/bin/python experiments/bench_eval.py --quick     # a smaller problem, seconds

The problem has the Market-1501 test-set shape: 3,368 queries x 15,913 gallery images, 750
identities over 6 cameras plus 2,800 distractors (pid 0), squared Euclidean float32 distances
of random 256-d features. The methods run interleaved in one process, ``--repeats`` times;
ratios use the medians. A second row uses the same distances rounded to integers, where
every true match ties with dozens of other gallery items (the exact tie path). The old
implementation's results are checked equal to ours. Writes experiments/results/bench_eval.json
and .md (not with --quick).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from harness import (
    RESULTS,
    add_bench_args,
    command_line,
    interleaved,
    machine_record,
    markdown_table,
    medians,
    results_header,
    write_results,
)

from reid_attn.metrics import compute_distance, evaluate_rank


def argsort_evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    chunk_size: int = 256,
) -> dict:
    """The previous implementation (baseline): a stable argsort of each chunk of query rows.

    ``distmat (num_q, num_g)``, pids / camids ``(num_q,)`` / ``(num_g,)`` numpy arrays ->
    ``{"cmc": (max_rank,), "mAP": float, "mINP": float}``.
    """
    num_q, num_g = distmat.shape
    first_hist = np.zeros(max_rank + 2, dtype=np.int64)
    ap_sum, inp_sum, num_valid = 0.0, 0.0, 0
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        n = stop - start
        order = np.argsort(distmat[start:stop], axis=1, kind="stable")
        same_pid = g_pids[order] == q_pids[start:stop, None]
        same_cam = g_camids[order] == q_camids[start:stop, None]
        keep = ~(same_pid & same_cam)
        match = same_pid & ~same_cam
        num_rel = match.sum(axis=1)
        valid = num_rel > 0
        if not valid.any():
            continue
        rank = np.cumsum(keep, axis=1, dtype=np.int64)
        cum_match = np.cumsum(match, axis=1, dtype=np.int64)
        rows = np.arange(n)
        first_pos = np.argmax(match, axis=1)
        last_pos = num_g - 1 - np.argmax(match[:, ::-1], axis=1)
        first_rank = rank[rows, first_pos][valid]
        last_rank = rank[rows, last_pos][valid]
        m_rows, m_cols = np.nonzero(match)
        prec = cum_match[m_rows, m_cols] / rank[m_rows, m_cols]
        ap = np.bincount(m_rows, weights=prec, minlength=n)[valid] / num_rel[valid]
        ap_sum += float(ap.sum())
        inp_sum += float((num_rel[valid] / last_rank).sum())
        num_valid += int(valid.sum())
        first_hist += np.bincount(np.minimum(first_rank, max_rank + 1), minlength=max_rank + 2)
    cmc = np.cumsum(first_hist[1 : max_rank + 1]).astype(np.float64) / num_valid
    return {"cmc": cmc, "mAP": ap_sum / num_valid, "mINP": inp_sum / num_valid}


def make_problem(
    num_q: int, num_g: int, num_ids: int, num_cams: int, distractors: int, dim: int, seed: int
) -> tuple[np.ndarray, ...]:
    """``distmat (num_q, num_g)`` float32 squared Euclidean distances of random features, and
    ``q_pids, g_pids, q_camids, g_camids``; the first ``distractors`` gallery items are pid 0."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = np.concatenate(
        [np.zeros(distractors, dtype=np.int64), rng.integers(1, num_ids + 1, num_g - distractors)]
    )
    q_camids, g_camids = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    q = torch.as_tensor(rng.standard_normal((num_q, dim)), dtype=torch.float32)
    g = torch.as_tensor(rng.standard_normal((num_g, dim)), dtype=torch.float32)
    return compute_distance(q, g).numpy(), q_pids, g_pids, q_camids, g_camids


def time_interleaved(
    methods: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every method once per round (rounds interleaved); their times and last outputs."""
    outputs: dict[str, object] = {}

    def timed(name: str) -> float:
        start = time.perf_counter()
        outputs[name] = methods[name]()
        return time.perf_counter() - start

    return interleaved(list(methods), timed, repeats), outputs


def match_stats(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids) -> dict:
    """How many true matches per query, and how many tie with another gallery item."""
    matches = (q_pids[:, None] == g_pids[None]) & (q_camids[:, None] != g_camids[None])
    rows, cols = np.nonzero(matches)
    values = distmat[rows, cols]
    tied = np.array(
        [np.count_nonzero(distmat[r] == v) > 1 for r, v in zip(rows, values, strict=True)]
    )
    return {
        "matches_per_query": float(matches.sum(1).mean()),
        "matches_tied_with_another_item": float(tied.mean()),
        "queries_with_a_tied_match": float(
            np.bincount(rows, weights=tied, minlength=len(q_pids)).astype(bool).mean()
        ),
    }


def bench_case(name: str, problem: tuple[np.ndarray, ...], repeats: int) -> dict:
    distmat, *labels = problem
    methods = {
        "np.argsort": lambda: np.argsort(distmat, axis=1),
        "previous (stable argsort)": lambda: argsort_evaluate_rank(distmat, *labels),
        "evaluate_rank (ours)": lambda: evaluate_rank(distmat, *labels),
    }
    times, outputs = time_interleaved(methods, repeats)
    ours, old = outputs["evaluate_rank (ours)"], outputs["previous (stable argsort)"]
    identical = bool(
        np.array_equal(ours["cmc"], old["cmc"])
        and abs(ours["mAP"] - old["mAP"]) < 1e-12
        and abs(ours["mINP"] - old["mINP"]) < 1e-12
    )
    if not identical:
        raise SystemExit(f"{name}: results differ from the previous implementation")
    median = medians(times)
    row = {
        "case": name,
        "dtype": str(distmat.dtype),
        "seconds": times,
        "median_seconds": median,
        "ratio_to_np_argsort": median["evaluate_rank (ours)"] / median["np.argsort"],
        "ratio_to_previous": median["evaluate_rank (ours)"] / median["previous (stable argsort)"],
        "identical_to_previous": identical,
        "mAP": ours["mAP"],
        "rank1": float(ours["cmc"][0]),
        **match_stats(distmat, *labels),
    }
    print(
        f"{name}: ours {median['evaluate_rank (ours)']:.3f} s, np.argsort "
        f"{median['np.argsort']:.3f} s (ratio {row['ratio_to_np_argsort']:.3f}), previous "
        f"{median['previous (stable argsort)']:.3f} s (ratio {row['ratio_to_previous']:.3f}); "
        "identical results",
        flush=True,
    )
    return row


def bench_cuda(problem: tuple[np.ndarray, ...], repeats: int) -> dict | None:
    """Ours on a CUDA distance matrix vs ``torch.sort(stable=True)`` of it on the GPU."""
    if not torch.cuda.is_available():
        return None
    distmat, *labels = problem
    dev = torch.as_tensor(distmat, device="cuda")

    def synced(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = fn()
            torch.cuda.synchronize()
            return out

        return run

    methods = {
        "torch.sort stable (cuda)": synced(lambda: torch.sort(dev, dim=1, stable=True)),
        "evaluate_rank (ours, cuda)": synced(lambda: evaluate_rank(dev, *labels)),
    }
    methods["torch.sort stable (cuda)"]()  # warm-up
    times, outputs = time_interleaved(methods, repeats)
    cpu = evaluate_rank(distmat, *labels)
    gpu = outputs["evaluate_rank (ours, cuda)"]
    assert np.array_equal(cpu["cmc"], gpu["cmc"]) and abs(cpu["mAP"] - gpu["mAP"]) < 1e-12
    median = medians(times)
    return {
        "device": torch.cuda.get_device_name(0),
        "seconds": times,
        "median_seconds": median,
        "ratio_to_torch_sort": median["evaluate_rank (ours, cuda)"]
        / median["torch.sort stable (cuda)"],
        "identical_to_cpu": True,
    }


def markdown(result: dict) -> list[str]:
    """The results page: one row a case, then the CUDA line."""
    columns = ["distances", "np.argsort (s)", "previous: stable argsort (s)", "ours (s)"]
    columns += ["ours / np.argsort", "ours / previous", "matches tied with another item"]
    rows = []
    for row in result["rows"]:
        m = row["median_seconds"]
        rows.append(
            [
                row["case"],
                f"{m['np.argsort']:.3f}",
                f"{m['previous (stable argsort)']:.3f}",
                f"{m['evaluate_rank (ours)']:.3f}",
                f"{row['ratio_to_np_argsort']:.3f}",
                f"{row['ratio_to_previous']:.3f}",
                f"{100 * row['matches_tied_with_another_item']:.1f}%",
            ]
        )
    lines = [
        *results_header("Exact CMC / mAP / mINP without sorting the gallery", result),
        f"Problem: {result['problem']}. Median of {result['repeats']} interleaved repeats.",
        "",
        *markdown_table(columns, rows, "lrrrrrr"),
        "",
        "Results identical to the previous implementation in every case.",
    ]
    if result.get("cuda"):
        c = result["cuda"]
        m = c["median_seconds"]
        lines.append(
            f"On {c['device']}: ours {m['evaluate_rank (ours, cuda)']:.3f} s vs "
            f"torch.sort(stable) {m['torch.sort stable (cuda)']:.3f} s (ratio "
            f"{c['ratio_to_torch_sort']:.3f}), identical to the CPU result."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 1/4-sized problem, no files")
    add_bench_args(parser, repeats=3, seed=0)
    args = parser.parse_args()
    shape = dict(num_q=3368, num_g=15913, num_ids=750, num_cams=6, distractors=2800, dim=256)
    if args.quick:
        shape.update(num_q=842, num_g=3978, num_ids=188, distractors=700)
    problem = make_problem(**shape, seed=args.seed)
    rounded = (np.round(problem[0]), *problem[1:])
    rows = [
        bench_case("float32", problem, args.repeats),
        bench_case("float32 rounded to integers (heavy ties)", rounded, args.repeats),
    ]
    result = {
        **machine_record("float32", extra=f"numpy {np.__version__}"),
        "command": command_line(),
        "problem": (
            f"{shape['num_q']:,} queries x {shape['num_g']:,} gallery, {shape['num_ids']} ids, "
            f"{shape['num_cams']} cameras, {shape['distractors']:,} distractors (pid 0), "
            f"random {shape['dim']}-d features, squared Euclidean"
        ),
        "repeats": args.repeats,
        "rows": rows,
        "cuda": bench_cuda(problem, args.repeats),
    }
    if args.quick:
        return
    print(write_results(result, markdown(result), "bench_eval", RESULTS).read_text())


if __name__ == "__main__":
    main()
