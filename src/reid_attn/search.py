"""``python -m reid_attn.search ckpt_path=PATH gallery=DIR query=IMAGE_OR_DIR [topk=20]``:
find a person in a folder of images.

The gallery's embeddings come from its index (:mod:`reid_attn.retrieval.gallery_index`: only new or
changed images are embedded, removed ones are dropped, another checkpoint rebuilds it); the
queries are embedded with the same checkpoint, settings and flip augmentation as its
evaluation. Each query's ``topk`` nearest gallery images (distance and re-ranking as the
checkpoint's evaluation unless ``rerank=`` says otherwise; ``exclude_same_camera=true`` drops
images of the query's camera when Market-style names carry it) are found exactly
(:func:`reid_attn.retrieval.nearest.exact_topk`) or, for large galleries, with a faiss index
(``index_type``). Writes into the run directory ``results.json`` (every path and distance),
``results.html`` (self-contained page, :mod:`reid_attn.retrieval.results_page`) and
``ranked_lists.png`` (:mod:`reid_attn.viz.grid`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from reid_attn.config import ConfigError
from reid_attn.data.datasets import DatasetError
from reid_attn.data.image_dataset import read_image
from reid_attn.inference import (
    USER_IMAGE_SUFFIXES,
    ImageFolder,
    embed_items,
    evaluation_settings,
    input_size,
    iter_embeddings,
    list_images,
    load_module,
    parse_market_name,
    resolve_device,
)
from reid_attn.module import ReIDModule
from reid_attn.retrieval.gallery_index import GalleryIndex, IndexUpdate, stamp_files, weights_digest
from reid_attn.retrieval.nearest import (
    APPROXIMATE_TYPES,
    INDEX_TYPES,
    IVF_ENCODINGS,
    PQ4FS_DIM_MULTIPLE,
    Neighbours,
    approximate_topk,
    build_approximate,
    exact_topk,
    import_faiss,
    reranked_topk,
    same_camera,
    sampled_recall,
)
from reid_attn.retrieval.results_page import render_results_page, thumbnail_data_uri
from reid_attn.runs.files import atomic_write, run_entry
from reid_attn.viz.figures import format_distance, save_png
from reid_attn.viz.grid import GridRow, GridStyle, render_grid

UNREADABLE_POLICIES = ("skip", "error")
#: Unreadable gallery files named in the printed summary (all of them are in results.json).
NAMED_UNREADABLE = 5


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} is not valid; it must be a positive integer")


def _optional_bool(cfg: DictConfig, key: str, allow_null: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    if not (isinstance(value, bool) or (allow_null and value is None)):
        allowed = "true, false" + (", null" if allow_null else "")
        raise ConfigError(f"{key}={value!r} is not valid; allowed values: {allowed}")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; allowed values: {', '.join(allowed)}")


def validate_search_config(cfg: DictConfig) -> None:
    """Check every value :func:`search` reads, before any work; raise :class:`ConfigError`
    naming the key and the allowed values."""
    _choice(cfg, "index_type", INDEX_TYPES)
    _choice(cfg, "on_unreadable", UNREADABLE_POLICIES)
    _choice(cfg, "approximate.ivf.encoding", IVF_ENCODINGS)
    pca_dim = cfg.approximate.pca_dim
    if cfg.approximate.ivf.encoding == "PQ4fs" and pca_dim and pca_dim % PQ4FS_DIM_MULTIPLE:
        raise ConfigError(
            f"approximate.pca_dim={pca_dim} with approximate.ivf.encoding=PQ4fs: the PCA "
            f"dimension must be a multiple of {PQ4FS_DIM_MULTIPLE} (one 4-bit code per 4 "
            "dimensions, in pairs)"
        )
    for key in ("rerank", "flip"):
        _optional_bool(cfg, key)
    for key in ("exclude_same_camera", "recursive", "progress_bar"):
        _optional_bool(cfg, key, allow_null=False)
    positive = [
        "topk",
        "batch_size",
        "exact.auto_max_gallery",
        "exact.query_block",
        "exact.gallery_block",
        "approximate.recall_sample",
        "approximate.train_size",
        "approximate.refine",
        "approximate.rescore_block",
        "approximate.ivf.nprobe",
        "approximate.hnsw.neighbours",
        "approximate.hnsw.ef_construction",
        "approximate.hnsw.ef_search",
        "page.max_queries",
        "page.thumbnail_height",
        "page.thumbnail_width",
        "page.distance_digits",
    ]
    for key in positive:
        _positive_int(cfg, key)
    threads = cfg.approximate.threads
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"approximate.threads={threads!r} must be null or a positive integer")
    pca_dim = cfg.approximate.pca_dim
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 0:
        raise ConfigError(f"approximate.pca_dim={pca_dim!r} must be an integer >= 0 (0: no PCA)")
    if not cfg.approximate.ivf.lists_per_sqrt_n > 0:
        raise ConfigError(
            f"approximate.ivf.lists_per_sqrt_n={cfg.approximate.ivf.lists_per_sqrt_n} must be > 0"
        )
    if not 1 <= cfg.page.jpeg_quality <= 95:
        raise ConfigError(f"page.jpeg_quality={cfg.page.jpeg_quality} must lie in 1..95")
    if not 0 <= cfg.page.png_colors <= 256:
        raise ConfigError(f"page.png_colors={cfg.page.png_colors} must lie in 0..256")
    if cfg.index_type in APPROXIMATE_TYPES:
        require_faiss(cfg.index_type)
    if cfg.rerank and cfg.index_type in APPROXIMATE_TYPES:
        raise ConfigError(
            f"rerank=true works with exact search only; index_type={cfg.index_type} is "
            "approximate (pass index_type=exact, or rerank=false)"
        )


def require_faiss(kind: str, threads: int | None = None) -> Any:
    """The faiss module (with ``threads`` OpenMP threads when given); :class:`ConfigError`
    saying how to install it when it is missing."""
    try:
        return import_faiss(threads)
    except ImportError as exc:
        raise ConfigError(f"index_type={kind}: {exc}") from exc


def query_images(query: str, recursive: bool) -> ImageFolder:
    """The query images: the file ``query`` or the images in the folder ``query``. Raises
    ``DatasetError`` when it is missing, not an image, or an empty folder."""
    path = Path(query).expanduser()
    if path.is_dir():
        return list_images(path, recursive)
    if not path.exists():
        raise DatasetError(f"query {path} does not exist (expected an image or a folder)")
    if path.suffix.lower() not in USER_IMAGE_SUFFIXES:
        raise DatasetError(
            f"query {path} is not an image; expected a {', '.join(USER_IMAGE_SUFFIXES)} file or "
            "a folder"
        )
    return ImageFolder([path])


def default_index_dir(output_dir: Path, gallery: Path) -> Path:
    """``<output_dir>/../index/<gallery name>-<12 hex of its absolute path's SHA-1>``."""
    absolute = gallery.expanduser().absolute()
    digest = hashlib.sha1(str(absolute).encode()).hexdigest()[:12]
    return output_dir.absolute().parent / "index" / f"{absolute.name}-{digest}"


def display_name(path: str, root: Path) -> str:
    """``path`` relative to the folder ``root`` (its file name when ``root`` is the file)."""
    try:
        relative = Path(path).relative_to(root.expanduser().absolute())
    except ValueError:
        return Path(path).name
    return str(relative) if str(relative) != "." else Path(path).name


def index_gallery(
    cfg: DictConfig,
    module: ReIDModule,
    paths: list[Path],
    size: tuple[int, int],
    flip: bool,
    index_dir: Path,
) -> IndexUpdate:
    """The embeddings of the gallery images ``paths`` from the index, brought up to date
    (progress bar while embedding)."""
    stamps = stamp_files(paths)
    key = {
        "weights": weights_digest(module.state_dict()),
        "size": list(size),
        "flip": flip,
        "precision": "bf16" if module.eval_bf16 else "32",
    }
    device = resolve_device(cfg.accelerator)

    def embed(positions: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not positions:
            return
        items = [(stamps[i].path, -1, -1) for i in positions]
        batches = iter_embeddings(
            module,
            items,
            size,
            cfg.batch_size,
            cfg.num_workers,
            device,
            cfg.progress_bar,
            f"embedding {len(items)} gallery images",
            flip,
            cfg.on_unreadable == "skip",
        )
        for local, features in batches:
            yield torch.as_tensor([positions[int(i)] for i in local]), features

    try:
        update = GalleryIndex(index_dir, key).update(stamps, embed)
    except DatasetError as exc:
        raise DatasetError(f"{exc} (on_unreadable=skip leaves such images out)") from exc
    if not update.paths:
        raise DatasetError(f"no readable image in gallery {cfg.gallery}")
    return update


def resolve_index_type(index_type: str, gallery_size: int, auto_max_gallery: int) -> str:
    """``exact``, ``ivf`` or ``hnsw``: ``auto`` is exact up to ``auto_max_gallery`` images."""
    if index_type != "auto":
        return index_type
    return "exact" if gallery_size <= auto_max_gallery else "ivf"


def approximate_index(
    cfg: DictConfig, kind: str, metric: str, update: IndexUpdate, index_dir: Path
) -> tuple[Any, float]:
    """The faiss index of the gallery and its recall@topk on a sample: loaded from
    ``index_dir`` when it was built for this gallery state and these settings, else built,
    measured and saved there."""
    faiss = require_faiss(kind, cfg.approximate.threads)
    settings = OmegaConf.to_container(cfg.approximate, resolve=True)
    settings = {**settings, "ivf" if kind == "hnsw" else "hnsw": None}  # only what matters
    state = hashlib.sha256(json.dumps([kind, metric, settings, cfg.topk, update.paths]).encode())
    state.update(update.features.contiguous().numpy())  # the buffer, not a copy
    meta_path = index_dir / f"approximate-{kind}.json"
    index_path = index_dir / f"approximate-{kind}.faiss"
    if meta_path.is_file() and index_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("state") == state.hexdigest():
            print(f"{kind} index loaded from {index_path} (recall@{cfg.topk} {meta['recall']:.3f})")
            return faiss.read_index(str(index_path)), meta["recall"]
    start = time.perf_counter()
    index = build_approximate(update.features, kind, metric, settings, cfg.approximate.seed)
    built = time.perf_counter() - start
    recall = sampled_recall(
        index,
        update.features,
        cfg.topk,
        metric,
        cfg.approximate.recall_sample,
        cfg.approximate.seed,
        cfg.exact.gallery_block,
        cfg.approximate.refine,
    )
    atomic_write(index_path, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
    meta_text = json.dumps({"state": state.hexdigest(), "recall": recall, "settings": settings})
    atomic_write(meta_path, lambda f: f.write(meta_text.encode()))
    sample = min(cfg.approximate.recall_sample, len(update.paths))
    print(
        f"{kind} index of {len(update.paths)} images built in {built:.1f} s: recall@{cfg.topk} "
        f"{recall:.3f} against exact search on {sample} sampled gallery images"
    )
    return index, recall


def rank(
    cfg: DictConfig,
    q_feats: torch.Tensor,
    update: IndexUpdate,
    q_cams: list[int],
    g_cams: list[int],
    evaluation: dict[str, Any],
    rerank: bool,
    index_dir: Path,
) -> tuple[Neighbours, str, float | None]:
    """The neighbours of every query, the search used (``exact`` or approximate type) and
    the approximate index's sampled recall (None for exact)."""
    kind = resolve_index_type(cfg.index_type, len(update.paths), cfg.exact.auto_max_gallery)
    metric = evaluation["distance"]
    exclude = same_camera(q_cams, g_cams) if cfg.exclude_same_camera else None
    if rerank:
        if kind != "exact":
            raise ConfigError(
                f"rerank=true needs exact search, but index_type=auto chose {kind} for "
                f"{len(update.paths)} gallery images (> exact.auto_max_gallery="
                f"{cfg.exact.auto_max_gallery}); pass index_type=exact or rerank=false"
            )
        neighbours = reranked_topk(
            q_feats,
            update.features,
            cfg.topk,
            metric,
            evaluation["rerank_k1"],
            evaluation["rerank_k2"],
            evaluation["rerank_lambda"],
            cfg.exact.query_block,
            exclude,
        )
        return neighbours, kind, None
    if kind == "exact":
        neighbours = exact_topk(
            q_feats,
            update.features,
            cfg.topk,
            metric,
            cfg.exact.query_block,
            cfg.exact.gallery_block,
            exclude,
        )
        return neighbours, kind, None
    index, recall = approximate_index(cfg, kind, metric, update, index_dir)
    cams = (q_cams, g_cams) if cfg.exclude_same_camera else (None, None)
    neighbours = approximate_topk(
        index,
        q_feats,
        cfg.topk,
        metric,
        *cams,
        update.features,
        cfg.approximate.refine,
        cfg.approximate.rescore_block,
    )
    return neighbours, kind, recall


def search_record(
    queries: list[Path],
    q_ids: list[tuple[int, int]],
    update: IndexUpdate,
    g_ids: list[tuple[int, int]],
    neighbours: Neighbours,
    query_root: Path,
    gallery_root: Path,
) -> list[dict[str, Any]]:
    """Per query: its path, display name, identity and camera, and its ranked results."""
    record = []
    for q, (path, (pid, camid)) in enumerate(zip(queries, q_ids, strict=True)):
        results = []
        for rank_, (g, dist) in enumerate(
            zip(neighbours.indices[q], neighbours.distances[q], strict=True), start=1
        ):
            if g < 0:
                break
            results.append(
                {
                    "rank": rank_,
                    "path": update.paths[g],
                    "name": display_name(update.paths[g], gallery_root),
                    "distance": float(dist),
                    "pid": g_ids[g][0],
                    "camid": g_ids[g][1],
                }
            )
        absolute = str(path.expanduser().absolute())
        record.append(
            {
                "path": absolute,
                "name": display_name(absolute, query_root),
                "pid": pid,
                "camid": camid,
                "results": results,
            }
        )
    return record


def grid_rows(queries: list[dict[str, Any]], digits: int) -> list[GridRow]:
    """Rows of ``ranked_lists.png``: frames green where the names give the query's identity."""
    rows = []
    for query in queries:
        hits = query["results"]
        rows.append(
            GridRow(
                query=read_image(query["path"], upright=True),
                gallery=[read_image(h["path"], upright=True) for h in hits],
                correct=[query["pid"] >= 0 and h["pid"] == query["pid"] for h in hits],
                query_caption="query" + (f" id {query['pid']}" if query["pid"] >= 0 else ""),
                captions=[
                    f"#{h['rank']}\nd={format_distance(h['distance'], digits)}" for h in hits
                ],
            )
        )
    return rows


def write_outputs(cfg: DictConfig, record: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """``results.json``, ``results.html`` and ``ranked_lists.png`` in ``output_dir``."""
    page = cfg.page
    text = json.dumps(record, indent=1)
    json_path = atomic_write(output_dir / "results.json", lambda f: f.write(text.encode()))
    uris: dict[str, str] = {}

    def thumbnail(path: str) -> str:
        if path not in uris:
            uris[path] = thumbnail_data_uri(
                path, page.thumbnail_height, page.thumbnail_width, page.jpeg_quality
            )
        return uris[path]

    html_text = render_results_page(
        record,
        thumbnail,
        page.max_queries,
        page.thumbnail_height,
        page.thumbnail_width,
        lambda d: format_distance(d, page.distance_digits),
    )
    html_path = atomic_write(output_dir / "results.html", lambda f: f.write(html_text.encode()))
    style = GridStyle(**OmegaConf.to_container(cfg.grid, resolve=True))
    grid = render_grid(
        grid_rows(record["queries"][: page.max_queries], page.distance_digits),
        style,
        num_columns=max(1, max(len(q["results"]) for q in record["queries"])),
    )
    png_path = save_png(grid, output_dir / "ranked_lists.png", page.png_colors)
    return {"json": json_path, "html": html_path, "png": png_path}


def search(cfg: DictConfig) -> dict[str, Any]:
    """Rank the gallery ``cfg.gallery`` for every image of ``cfg.query`` with
    ``cfg.ckpt_path``; write the results into ``cfg.output_dir`` (see the module docstring).
    Returns the record written to ``results.json`` plus ``files`` (their paths) and
    ``index`` (the :class:`~reid_attn.retrieval.gallery_index.IndexUpdate`)."""
    validate_search_config(cfg)
    gallery_root, query_root = Path(cfg.gallery).expanduser(), Path(cfg.query).expanduser()
    gallery = list_images(gallery_root, cfg.recursive)  # missing or empty: before the model
    query_folder = query_images(cfg.query, cfg.recursive)
    queries = query_folder.images
    module = load_module(cfg.ckpt_path)
    evaluation = evaluation_settings(module)
    flip = bool(evaluation["flip"] if cfg.flip is None else cfg.flip)
    rerank = bool(evaluation["rerank"] if cfg.rerank is None else cfg.rerank)
    size = input_size(module, cfg.height, cfg.width)
    output_dir = Path(cfg.output_dir)
    index_dir = (
        Path(cfg.index).expanduser() if cfg.index else default_index_dir(output_dir, gallery_root)
    )
    update = index_gallery(cfg, module, gallery.images, size, flip, index_dir)
    summary = (
        f"gallery index {index_dir}: {len(update.paths)} images ({update.reused} reused, "
        f"{update.embedded} embedded, {update.dropped} dropped"
        + (", rebuilt for this checkpoint" if update.rebuilt else "")
        + ")"
    )
    if gallery.skipped:
        summary += f"; {gallery.skipped_note()}"
    if update.unreadable:
        names = ", ".join(
            display_name(p, gallery_root) for p in update.unreadable[:NAMED_UNREADABLE]
        )
        more = " ..." if len(update.unreadable) > NAMED_UNREADABLE else ""
        summary += f"; skipped {len(update.unreadable)} unreadable: {names}{more}"
    print(summary)
    q_ids = [parse_market_name(p.name) for p in queries]
    q_feats = embed_items(
        module,
        [(str(p), pid, cam) for p, (pid, cam) in zip(queries, q_ids, strict=True)],
        size,
        cfg.batch_size,
        cfg.num_workers,
        resolve_device(cfg.accelerator),
        cfg.progress_bar,
        f"embedding {len(queries)} queries",
        flip,
    )
    g_ids = [parse_market_name(Path(p).name) for p in update.paths]
    neighbours, kind, recall = rank(
        cfg,
        q_feats,
        update,
        [c for _, c in q_ids],
        [c for _, c in g_ids],
        evaluation,
        rerank,
        index_dir,
    )
    metric = ("re-ranked " if rerank else "") + evaluation["distance"]
    record: dict[str, Any] = {
        "checkpoint": str(Path(cfg.ckpt_path).expanduser().absolute()),
        "gallery": str(gallery_root.absolute()),
        "gallery_size": len(update.paths),
        "index": str(index_dir.absolute()),
        "index_update": {
            "reused": update.reused,
            "embedded": update.embedded,
            "dropped": update.dropped,
            "rebuilt": update.rebuilt,
            "unreadable": update.unreadable,
        },
        "distance": metric,
        "search": kind,
        "recall_at_topk": recall,
        "topk": int(cfg.topk),
        "exclude_same_camera": bool(cfg.exclude_same_camera),
        "queries": search_record(
            queries, q_ids, update, g_ids, neighbours, query_root, gallery_root
        ),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    files = write_outputs(cfg, record, output_dir)
    best = [q["results"][0]["distance"] for q in record["queries"] if q["results"]]
    skipped = f" ({query_folder.skipped_note()})" if query_folder.skipped else ""
    print(
        f"{len(queries)} queries{skipped}, top {cfg.topk} of {len(update.paths)} gallery images "
        f"({kind} {metric} search; best distance median "
        f"{np.median(best) if best else float('nan'):.4g})"
        f" -> {files['html']}"
    )
    return {**record, "files": files, "update": update}


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def main(cfg: DictConfig) -> None:
    """Console entry point (``reid-attn-search``)."""
    run_entry(search, cfg)


if __name__ == "__main__":
    main()
