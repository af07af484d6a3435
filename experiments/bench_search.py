"""Benchmark: gallery search, exact vs approximate, for galleries of 10^4 to 10^6 images.

    .venv/bin/python experiments/bench_search.py                          # 10^4, 10^5, 10^6
    .venv/bin/python experiments/bench_search.py --sizes 10000 100000     # minutes

Problem: random-prototype features. Identities are random unit vectors in 2048-d, one per
``--images-per-id`` (20: Market-1501's gallery has 21 images per identity) gallery images on
average; every image is its identity's prototype plus Gaussian noise (``--noise`` per
dimension), float32. Queries are further images of random gallery identities. Squared
Euclidean distance, top 10. Each gallery is written once to a ``.npy`` file in a temporary
folder (``--workdir``), and every measurement runs in its own subprocess reading it, so that
peak memory does not mix:

* ``exact``: :func:`reid_attn.retrieval.nearest.exact_topk`, the gallery read from the file one
  ``exact.gallery_block`` of rows at a time (all queries against each block);
* ``ivf`` (every size) and ``hnsw`` (up to ``--hnsw-max``): :func:`build_approximate` with the
  ``approximate`` settings of ``conf/search.yaml`` (those of the search command), then
  :func:`approximate_topk` with its re-scoring of ``refine x 10`` candidates, whose rows are
  read through a memory map of the gallery file.

Recall@10 is the fraction of the exact top 10 that the approximate top 10 holds, over all
queries. Peak RSS is the subprocess's peak resident set (VmHWM, reset after the queries are
loaded): slices are read with ``np.fromfile`` and do not stay resident, rows read through the
memory map (re-scoring) count while mapped. Writes experiments/results/bench_search.json and
.md.
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
from typing import Any

import numpy as np
import torch
from harness import (
    RESULTS,
    command_line,
    machine_record,
    markdown_table,
    reset_peak_rss,
    results_header,
    status_kib,
    write_results,
)
from omegaconf import OmegaConf

import reid_attn
from reid_attn.retrieval.nearest import (
    approximate_topk,
    build_approximate,
    exact_topk,
    import_faiss,
)

SEARCH_CONFIG = Path(reid_attn.__file__).parent / "conf" / "search.yaml"
#: Goal at the largest size: recall@10 and speed-up of the approximate index over exact search.
GOAL = {"size": 1_000_000, "recall_at_10": 0.95, "speedup": 10.0}
TOPK = 10


class GalleryFile:
    """An ``(N, D)`` float32 ``.npy`` matrix on disk: slices read with ``np.fromfile`` (not
    kept resident), index arrays through a memory map."""

    def __init__(self, path: Path) -> None:
        self.map = np.load(path, mmap_mode="r")
        self.path, self.shape, self.offset = path, self.map.shape, self.map.offset

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        if not isinstance(rows, slice):
            return np.asarray(self.map[rows])
        start, stop, _ = rows.indices(self.shape[0])
        row_bytes = self.shape[1] * 4
        with open(self.path, "rb") as file:
            file.seek(self.offset + start * row_bytes)
            block = np.fromfile(file, dtype=np.float32, count=(stop - start) * self.shape[1])
        return block.reshape(stop - start, self.shape[1])


def write_problem(folder: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """``gallery.npy`` ``(size, dim)``, ``queries.npy`` and the identities of both in
    ``folder``, generated in blocks (no full float64 copy)."""
    gen = torch.Generator().manual_seed(args.seed)
    num_ids = max(1, size // args.images_per_id)
    prototypes = torch.nn.functional.normalize(torch.randn(num_ids, args.dim, generator=gen), dim=1)
    rng = np.random.default_rng(args.seed)
    g_pids, q_pids = rng.integers(0, num_ids, size), rng.integers(0, num_ids, args.queries)
    gallery = np.lib.format.open_memmap(
        folder / "gallery.npy", mode="w+", dtype=np.float32, shape=(size, args.dim)
    )
    for start in range(0, size, 65536):
        pids = torch.as_tensor(g_pids[start : start + 65536])
        noise = torch.randn(len(pids), args.dim, generator=gen).mul_(args.noise)
        gallery[start : start + len(pids)] = noise.add_(prototypes[pids]).numpy()
    gallery.flush()
    del gallery
    noise = torch.randn(args.queries, args.dim, generator=gen).mul_(args.noise)
    np.save(folder / "queries.npy", noise.add_(prototypes[torch.as_tensor(q_pids)]).numpy())
    np.save(folder / "g_pids.npy", g_pids)
    np.save(folder / "q_pids.npy", q_pids)
    return {"num_ids": num_ids, "gallery_gb": size * args.dim * 4 / 1e9}


def worker(method: str, folder: Path, out: Path) -> None:
    """One measurement on the problem in ``folder``: figures as JSON to ``out``, the top-10
    gallery indices to ``folder/<method>_ids.npy``."""
    cfg = OmegaConf.load(SEARCH_CONFIG)
    gallery = GalleryFile(folder / "gallery.npy")
    queries = np.load(folder / "queries.npy")
    reset = reset_peak_rss()
    rss_before = status_kib("VmRSS")
    figures: dict[str, Any] = {"method": method, "peak_reset": reset}
    if method == "exact":
        start = time.perf_counter()
        found = exact_topk(
            queries, gallery, TOPK, query_block=len(queries), gallery_block=cfg.exact.gallery_block
        )
        figures["query_s"] = time.perf_counter() - start
    else:
        faiss = import_faiss(cfg.approximate.threads)
        settings = OmegaConf.to_container(cfg.approximate, resolve=True)
        start = time.perf_counter()
        index = build_approximate(gallery, method, "euclidean", settings, cfg.approximate.seed)
        figures["build_s"] = time.perf_counter() - start
        figures["index_gb"] = faiss.serialize_index(index).nbytes / 1e9
        figures["factory"] = index_description(index)
        start = time.perf_counter()
        found = approximate_topk(
            index,
            queries,
            TOPK,
            "euclidean",
            gallery=gallery,
            refine=settings["refine"],
            rescore_block=settings["rescore_block"],
        )
        figures["query_s"] = time.perf_counter() - start
    figures["queries_per_s"] = len(queries) / figures["query_s"]
    figures["peak_rss_gb"] = status_kib("VmHWM") / 1e6 * 1.024
    figures["rss_before_gb"] = rss_before / 1e6 * 1.024
    np.save(folder / f"{method}_ids.npy", found.indices)
    out.write_text(json.dumps(figures))


def index_description(index: Any) -> str:
    """``PCA256 -> IVF2000 (SQ8), nprobe 32``-style summary of a faiss index."""
    faiss = import_faiss()
    parts = []
    if isinstance(index, faiss.IndexPreTransform):
        parts.append(f"PCA{index.chain.at(0).d_out}")
        index = faiss.downcast_index(index.index)
    if hasattr(index, "hnsw"):
        parts.append(f"HNSW{index.hnsw.nb_neighbors(1)} efSearch {index.hnsw.efSearch}")
    else:
        kind = type(index).__name__.replace("IndexIVF", "") or "Flat"
        parts.append(f"IVF{index.nlist} ({kind}), nprobe {index.nprobe}")
    return " -> ".join(parts)


def run_worker(method: str, folder: Path) -> dict[str, Any]:
    out = folder / f"{method}.json"
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--folder",
        str(folder),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found_i ∩ truth_i| / k``."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def measure_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one gallery size, side by side."""
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_search_") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        problem = write_problem(folder, size, args)
        print(f"size {size:,}: problem written in {time.perf_counter() - start:.0f} s", flush=True)
        methods = ["exact", "ivf", *(["hnsw"] if size <= args.hnsw_max else [])]
        rows = {}
        for method in methods:
            rows[method] = run_worker(method, folder)
            print(f"  {method}: {json.dumps(rows[method])}", flush=True)
        truth = np.load(folder / "exact_ids.npy")
        g_pids, q_pids = np.load(folder / "g_pids.npy"), np.load(folder / "q_pids.npy")
        problem["exact_identity_precision_at_10"] = float((g_pids[truth] == q_pids[:, None]).mean())
        for method in methods[1:]:
            rows[method]["recall_at_10"] = recall_at_k(np.load(folder / f"{method}_ids.npy"), truth)
            rows[method]["speedup"] = rows[method]["queries_per_s"] / rows["exact"]["queries_per_s"]
    return {"size": size, **problem, "methods": rows}


def markdown(report: dict[str, Any]) -> list[str]:
    """The report as a Markdown page's lines."""
    a = report["args"]
    columns = ["gallery", "method", "index", "build (s)", "queries/s", "speed-up", "recall@10"]
    columns += ["peak RSS (GB)", "index (GB)"]
    rows = [
        [
            f"{row['size']:,}",
            method,
            m.get("factory", "blocked matrix products"),
            f"{m.get('build_s', 0):.1f}",
            f"{m['queries_per_s']:.1f}",
            f"{m.get('speedup', 1):.1f}x",
            f"{m.get('recall_at_10', 1):.3f}",
            f"{m['peak_rss_gb']:.2f}",
            f"{m.get('index_gb', row['gallery_gb']):.2f}",
        ]
        for row in report["sizes"]
        for method, m in row["methods"].items()
    ]
    lines = [
        *results_header("Gallery search: exact vs approximate", report),
        f"Problem: {a['dim']}-d float32 random-prototype features (identities: random unit "
        f"vectors, {a['images_per_id']} gallery images per identity on average, noise std "
        f"{a['noise']} per dimension), {a['queries']:,} queries of gallery identities, squared "
        f"Euclidean distance, top {TOPK}. Approximate settings: `conf/search.yaml` "
        f"(approximate: {json.dumps(report['approximate'])}).",
        "",
        *markdown_table(columns, rows, "rllrrrrrr"),
        "",
        "Exact search reads the gallery from disk block by block here (its peak RSS is the "
        "blocks'); the search command holds the gallery's features in memory (the index "
        "column: N x 2048 x 4 bytes). The approximate index re-scores its candidates with "
        "those features, so its distances are exact.",
        "",
    ]
    for row in report["sizes"]:
        lines.append(
            f"- {row['size']:,} images, {row['num_ids']:,} identities: exact top-10 holds the "
            f"query's identity at {100 * row['exact_identity_precision_at_10']:.1f}% of places."
        )
    goal = report.get("goal")
    if goal:
        lines += ["", f"Goal at {GOAL['size']:,}: {goal}."]
    return lines


def goal_text(report: dict[str, Any]) -> str | None:
    """Whether the approximate index met the goal at the largest size, in words."""
    rows = [r for r in report["sizes"] if r["size"] == GOAL["size"]]
    if not rows or "ivf" not in rows[0]["methods"]:
        return None
    ivf = rows[0]["methods"]["ivf"]
    met = ivf["recall_at_10"] >= GOAL["recall_at_10"] and ivf["speedup"] >= GOAL["speedup"]
    return (
        f"recall@10 >= {GOAL['recall_at_10']} at >= {GOAL['speedup']:.0f}x exact queries/s: "
        f"ivf recall@10 {ivf['recall_at_10']:.3f} at {ivf['speedup']:.1f}x "
        f"({'met' if met else 'not met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--images-per-id", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.02, help="noise std per dimension")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size with hnsw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the galleries")
    parser.add_argument("--out-name", default="bench_search", help="results file stem")
    parser.add_argument("--worker", choices=["exact", "ivf", "hnsw"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.out)
        return
    load = f"load average at start {os.getloadavg()[0]:.1f}"
    extra = f"{load}, faiss {import_faiss().__version__}"
    report: dict[str, Any] = {
        **machine_record("float32", extra=extra),
        "command": command_line(),
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "folder", "out")},
        "approximate": OmegaConf.to_container(OmegaConf.load(SEARCH_CONFIG).approximate),
        "sizes": [],
    }
    report["args"]["workdir"] = str(args.workdir)
    machine = report["machine"]
    for size in args.sizes:  # the files are rewritten after each size: a stopped run keeps them
        report["sizes"].append(measure_size(size, args))
        report["machine"] = f"{machine}, load average after {size:,}: {os.getloadavg()[0]:.1f}"
        report["goal"] = goal_text(report)
        page = write_results(report, markdown(report), args.out_name, RESULTS)
    print(page.read_text())


if __name__ == "__main__":
    main()
