"""``python -m reid_attn.search``: rankings equal to evaluation's, the incremental gallery
index, the approximate path, the results page (also in headless Chromium) and bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reid_attn.metrics.reid_metric as reid_metric
from conftest import compose_config
from reid_attn.config import ConfigError
from reid_attn.data import DatasetError, Market1501
from reid_attn.evaluate import evaluate
from reid_attn.inference import embed_items, load_module
from reid_attn.module import ReIDModule
from reid_attn.runs.files import CheckpointError
from reid_attn.search import search

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Solid colours of the page test's gallery images, far from the page's own colours.
COLOURS = [
    (220, 20, 20),
    (240, 220, 20),
    (200, 30, 200),
    (20, 200, 220),
    (250, 140, 0),
    (90, 20, 160),
    (120, 70, 20),
    (250, 150, 190),
]
QUERY_COLOUR = (0, 90, 90)
HOSTILE_NAMES = ["<img src=x onerror=alert(1)>.jpg", "<script>alert(1)</script>.jpg"]
#: The page test's gallery (gallery-relative names), one per colour: the last one is nested.
PAGE_GALLERY = [
    "0001_c1s1_000001_00.jpg",
    "0002_c2s1_000002_00.jpg",
    "plain.jpg",
    "b.png",
    "c.jpg",
    "d.jpg",
    *HOSTILE_NAMES,
]


def checkpoint_of(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def search_cfg(compose_cfg, root: Path, ckpt: Path, gallery: Path, query: Path, *overrides):
    """A search config writing under ``root`` (run dir ``root/out``, index ``root/index``)."""
    return compose_cfg(
        "search",
        [
            f"ckpt_path={ckpt}",
            f"gallery={gallery}",
            f"query={query}",
            f"output_dir={root / 'out'}",
            f"index={root / 'index'}",
            "progress_bar=false",
            *overrides,
        ],
    )


def link_items(items, folder: Path) -> Path:
    """``folder`` holding a symbolic link to each item's image, under its own name."""
    folder.mkdir(parents=True)
    for path, _, _ in items:
        (folder / Path(path).name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def test_split(trained_run, tmp_path_factory) -> tuple[Market1501, Path, Path]:
    """The tiny run's synthetic test split as two plain folders of images (the query and
    gallery images the Market-1501 loader keeps, i.e. junk left out) and the dataset."""
    run_dir, _ = trained_run
    dataset = Market1501(next((run_dir.parent / "data").glob("synthetic-*")), verbose=False)
    root = tmp_path_factory.mktemp("split")
    return (
        dataset,
        link_items(dataset.query, root / "query"),
        link_items(dataset.gallery, root / "gallery"),
    )


def evaluation_distances(compose_cfg, ckpt: Path, root: Path, monkeypatch, rerank: bool):
    """The query x gallery distance matrix ``evaluate`` ranks (captured where it calls
    ``evaluate_rank``), rows and columns in the dataset's query and gallery order, and the
    float32 error bound of each entry (:func:`float32_distance_bound`)."""
    captured = {}
    original, original_distance = reid_metric.evaluate_rank, reid_metric.compute_distance

    def spy(distmat, *args, **kwargs):
        captured["distmat"] = np.asarray(distmat, dtype=np.float64)
        return original(distmat, *args, **kwargs)

    def spy_distance(query, gallery, *args, **kwargs):
        captured.setdefault("features", (query, gallery))  # the first call: query x gallery
        return original_distance(query, gallery, *args, **kwargs)

    monkeypatch.setattr(reid_metric, "evaluate_rank", spy)
    monkeypatch.setattr(reid_metric, "compute_distance", spy_distance)
    cfg = compose_cfg(
        "evaluate", [f"ckpt_path={ckpt}", f"output_dir={root / 'eval'}", f"rerank={rerank}"]
    )
    evaluate(cfg)
    return captured["distmat"], float32_distance_bound(*captured["features"])


def float32_distance_bound(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """How far two float32 computations of one squared Euclidean distance may differ: the
    search and the evaluation embed the images in other batches and compute
    ``|q|^2 + |g|^2 - 2 q.g`` in other blocks, so their kernels sum in other orders. The
    rounding error of a length-``d`` float32 reduction grows like ``sqrt(d) * eps`` relative to
    the magnitudes summed (Higham & Mary 2019), here ``|q|^2 + |g|^2``, not the distance
    (which may be much smaller): bound ``sqrt(d) * eps32 * (|q|^2 + |g|^2)`` per entry. On an
    AMD EPYC (AVX2 kernels) one distance of 4.18 differed by 6.1e-5, a relative 1.5e-5 that
    a fixed rtol of 1e-5 (met on AVX-512) did not allow."""
    q = query.detach().double().cpu().numpy()
    g = gallery.detach().double().cpu().numpy()
    scale = (q**2).sum(1)[:, None] + (g**2).sum(1)[None, :]
    return np.sqrt(q.shape[1]) * float(np.finfo(np.float32).eps) * scale


def assert_same_ranking(record, dataset, distmat, bound, exclude_same_camera: bool) -> None:
    """Each query's results are the gallery in the order of ``distmat``'s row, with its
    distances, up to float32 rounding: every distance within ``bound`` (per entry) of the
    evaluation's, and the order a sort of the evaluation's distances where they differ by
    more than twice the bound (two near-equal distances may swap on another CPU's kernels;
    exact ties keep the stable gallery order); same-camera images left out if asked."""
    by_name = {q["name"]: q for q in record["queries"]}
    assert len(by_name) == len(dataset.query)
    g_names = np.array([Path(p).name for p, _, _ in dataset.gallery])
    g_index = {name: i for i, name in enumerate(g_names)}
    g_cams = np.array([c for _, _, c in dataset.gallery])
    for row, (path, _, q_cam) in enumerate(dataset.query):
        distances = distmat[row]
        if exclude_same_camera:
            distances = np.where(g_cams == q_cam, np.inf, distances)
        allowed = np.isfinite(distances)
        results = by_name[Path(path).name]["results"]
        got = np.array([g_index[r["name"]] for r in results])
        assert sorted(got.tolist()) == np.flatnonzero(allowed).tolist()
        np.testing.assert_allclose(
            [r["distance"] for r in results], distances[got], rtol=0, atol=bound[row, got].max()
        )
        assert np.all(np.diff(distances[got]) >= -2 * bound[row, got].max())
        assert [r["rank"] for r in results] == list(range(1, len(got) + 1))


@pytest.mark.parametrize("rerank", [False, True])
def test_search_ranks_the_test_split_as_evaluate_does(
    trained_run, test_split, compose_cfg, monkeypatch, tmp_path, rerank
) -> None:
    dataset, query_dir, gallery_dir = test_split
    ckpt = checkpoint_of(trained_run[0])
    distmat, bound = evaluation_distances(compose_cfg, ckpt, tmp_path, monkeypatch, rerank)
    if rerank:
        # Re-ranked = (1 - lambda) * Jaccard distance of k-reciprocal neighbour sets + lambda *
        # original / its column maximum (over query and gallery rows, at least the largest
        # query's): the original distances' float32 error enters scaled by lambda / that
        # maximum; the Jaccard term is the same wherever both computations find the same
        # neighbour sets, as they do here (a swap would move a distance by ~1/k, and fail).
        plain, plain_bound = evaluation_distances(
            compose_cfg, ckpt, tmp_path / "plain", monkeypatch, False
        )
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        lam = saved["hyper_parameters"]["evaluation"]["rerank_lambda"]
        bound = lam * plain_bound / plain.max(axis=0)[None, :]
    num_g = len(dataset.gallery)
    for exclude in [False, True] if not rerank else [False]:
        overrides = [f"topk={num_g}", f"rerank={rerank}", f"exclude_same_camera={exclude}"]
        cfg = search_cfg(compose_cfg, tmp_path, ckpt, gallery_dir, query_dir, *overrides)
        record = search(cfg)
        assert record["search"] == "exact" and record["gallery_size"] == num_g
        assert record["distance"] == ("re-ranked euclidean" if rerank else "euclidean")
        assert_same_ranking(record, dataset, distmat, bound, exclude)


def write_images(folder: Path, names: list[str], seed: int, size=(32, 16)) -> list[Path]:
    """Random-block RGB PNGs ``size`` (height, width) named ``names`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        blocks = rng.integers(0, 256, (4, 2, 3), dtype=np.uint8)
        pixels = blocks.repeat(size[0] // 4, axis=0).repeat(size[1] // 2, axis=1)
        Image.fromarray(pixels).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture
def forward_count(monkeypatch) -> dict[str, int]:
    """Counts the images the network embeds (``ReIDModule.forward``); ``stop_after`` batches
    raises ``KeyboardInterrupt`` (a user's Ctrl-C) when set."""
    counter = {"images": 0, "batches": 0, "stop_after": -1}
    original = ReIDModule.forward

    def counting(self, images):
        if counter["batches"] == counter["stop_after"]:
            raise KeyboardInterrupt
        counter["images"] += len(images)
        counter["batches"] += 1
        return original(self, images)

    monkeypatch.setattr(ReIDModule, "forward", counting)
    return counter


def index_paths(index_dir: Path) -> list[str]:
    """Every path stored in the index's part files, read independently of the code."""
    paths = []
    for part in sorted(index_dir.glob("part-*.pt")):
        paths += torch.load(part, weights_only=True)["paths"]
    return paths


def other_checkpoint(ckpt: Path, target: Path) -> Path:
    """A copy of ``ckpt`` with one weight changed: another model for the index."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["net.head.bnneck.running_mean"] += 0.5
    torch.save(checkpoint, target)
    return target


def test_incremental_index_embeds_only_new_files(
    trained_run, compose_cfg, forward_count, tmp_path
) -> None:
    ckpt = checkpoint_of(trained_run[0])
    gallery = tmp_path / "gallery"
    first = write_images(gallery, [f"img_{i:04d}.png" for i in range(1000)], seed=0)
    query = write_images(tmp_path / "q", ["query.png"], seed=1)[0]
    # The network at 16x8 keeps 2,000 embeddings to seconds on two cores.
    sizes = ["height=16", "width=8", "batch_size=100", "topk=5"]
    cfg = search_cfg(compose_cfg, tmp_path, ckpt, gallery, query, *sizes)

    run = search(cfg)
    assert forward_count["images"] == 1000 + 1  # the gallery and the query
    assert (run["update"].embedded, run["update"].reused) == (1000, 0)
    features = dict(zip(run["update"].paths, run["update"].features, strict=True))

    added = write_images(gallery, [f"new_{i}.png" for i in range(10)], seed=2)
    forward_count["images"] = 0
    run = search(cfg)
    assert forward_count["images"] == 10 + 1
    update = run["update"]
    assert (update.embedded, update.reused, update.dropped) == (10, 1000, 0)
    assert run["gallery_size"] == 1010 and len(index_paths(tmp_path / "index")) == 1010
    stored = dict(zip(update.paths, update.features, strict=True))
    assert all(torch.equal(stored[str(p)], features[str(p)]) for p in first[:50])
    module = load_module(ckpt)
    fresh = embed_items(module, [(str(p), -1, -1) for p in added], (16, 8), progress=False)
    rows = torch.stack([stored[str(p)] for p in added])
    torch.testing.assert_close(rows, fresh, rtol=1e-4, atol=1e-4)

    for path in first[:5]:
        path.unlink()
    write_images(gallery, [first[5].name], seed=3)  # new content: a changed file
    forward_count["images"] = 0
    run = search(cfg)
    assert forward_count["images"] == 1 + 1
    update = run["update"]
    assert (update.embedded, update.reused, update.dropped) == (1, 1004, 6)
    on_disk = index_paths(tmp_path / "index")
    assert len(on_disk) == len(set(on_disk)) == 1005
    assert not {str(p) for p in first[:5]} & set(on_disk)
    changed = update.features[update.paths.index(str(first[5]))]
    assert not torch.equal(changed, features[str(first[5])])


def test_index_survives_an_interruption_and_rebuilds_for_another_checkpoint(
    trained_run, compose_cfg, forward_count, tmp_path
) -> None:
    ckpt = checkpoint_of(trained_run[0])
    gallery = tmp_path / "gallery"
    write_images(gallery, [f"img_{i:02d}.png" for i in range(40)], seed=4)
    query = write_images(tmp_path / "q", ["query.png"], seed=5)[0]
    sizes = ["height=16", "width=8", "batch_size=8"]
    cfg = search_cfg(compose_cfg, tmp_path, ckpt, gallery, query, *sizes)
    forward_count["stop_after"] = 3  # Ctrl-C while the 4th batch is embedded
    with pytest.raises(KeyboardInterrupt):
        search(cfg)
    assert len(index_paths(tmp_path / "index")) == 24
    assert not list((tmp_path / "index").glob(".*partial"))
    forward_count.update(images=0, stop_after=-1)
    run = search(cfg)
    assert forward_count["images"] == 16 + 1
    assert (run["update"].reused, run["update"].embedded) == (24, 16)
    assert len(index_paths(tmp_path / "index")) == 40

    before = run["update"]
    other = other_checkpoint(ckpt, tmp_path / "other.ckpt")
    forward_count["images"] = 0
    run = search(search_cfg(compose_cfg, tmp_path, other, gallery, query, *sizes))
    assert forward_count["images"] == 40 + 1
    assert run["update"].rebuilt and (run["update"].embedded, run["update"].reused) == (40, 0)
    assert len(index_paths(tmp_path / "index")) == 40
    assert not torch.allclose(run["update"].features, before.features)


def test_approximate_search_reports_recall_and_reuses_its_index(
    trained_run, test_split, compose_cfg, tmp_path, capsys
) -> None:
    pytest.importorskip("faiss")
    _, query_dir, gallery_dir = test_split
    ckpt = checkpoint_of(trained_run[0])
    exact = search(search_cfg(compose_cfg, tmp_path, ckpt, gallery_dir, query_dir, "topk=5"))
    auto = ["index_type=auto", "exact.auto_max_gallery=10", "topk=5"]
    cfg = search_cfg(compose_cfg, tmp_path, ckpt, gallery_dir, query_dir, *auto)
    approximate = search(cfg)
    assert approximate["search"] == "ivf"
    out = capsys.readouterr().out
    assert "ivf index of" in out and "recall@5" in out
    assert 0.0 <= approximate["recall_at_topk"] <= 1.0
    assert (tmp_path / "index" / "approximate-ivf.faiss").is_file()
    overlap = [
        len({r["name"] for r in a["results"]} & {r["name"] for r in e["results"]}) / 5
        for a, e in zip(approximate["queries"], exact["queries"], strict=True)
    ]
    assert np.mean(overlap) >= 0.8
    again = search(cfg)
    assert "ivf index loaded from" in capsys.readouterr().out
    assert again["queries"] == approximate["queries"]
    with pytest.raises(ConfigError, match="rerank=true needs exact search"):
        search(
            search_cfg(compose_cfg, tmp_path, ckpt, gallery_dir, query_dir, *auto, "rerank=true")
        )


# ----------------------------------------------------------------------------- the page


def solid(folder: Path, name: str, colour: tuple[int, int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 64), colour).save(folder / name, quality=95)
    return folder / name


@pytest.fixture(scope="module")
def colour_search(trained_run, tmp_path_factory) -> dict:
    """A search of a solid-colour query in a gallery of 8 solid-colour images, two of them
    with hostile names (one nested: its gallery-relative name holds the ``/``)."""
    root = tmp_path_factory.mktemp("page")
    gallery = root / "gallery"
    for name, colour in zip(PAGE_GALLERY, COLOURS, strict=True):
        solid(gallery / Path(name).parent, Path(name).name, colour)
    query = solid(root / "q", "0001_c3s1_000009_00.jpg", QUERY_COLOUR)
    cfg = compose_config(
        "search",
        [
            f"ckpt_path={checkpoint_of(trained_run[0])}",
            f"gallery={gallery}",
            f"query={query}",
            f"output_dir={root / 'out'}",
            "progress_bar=false",
            "recursive=true",
            "topk=8",
        ],
    )
    return search(cfg)


def test_results_files_hold_every_path_and_escape_names(colour_search) -> None:
    files = colour_search["files"]
    record = json.loads(files["json"].read_text())
    (query,) = record["queries"]
    assert (query["pid"], query["camid"]) == (1, 2)
    assert sorted(r["name"] for r in query["results"]) == sorted(PAGE_GALLERY)
    assert all(Path(r["path"]).is_file() for r in query["results"])
    distances = [r["distance"] for r in query["results"]]
    assert distances == sorted(distances)
    page = files["html"].read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert page.count("<img ") == 1 + 8 and page.count('src="data:image/jpeg;base64,') == 9
    assert not re.search(r'(?:src|href)="(?!data:)|url\(|@import', page)  # opens from disk
    assert "id 1 · cam 1" in page and "id 2 · cam 2" in page
    grid = Image.open(files["png"])
    assert grid.size[0] > 8 * 64 and grid.size[1] > 128


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


def colour_pixels(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 16) -> int:
    return int((np.abs(image.astype(int) - colour).max(axis=2) <= tolerance).sum())


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package 'chromium'; .ci/run installs it)",
)
def test_results_page_shows_the_thumbnails_in_chromium(colour_search, tmp_path) -> None:
    url = colour_search["files"]["html"].resolve().as_uri()
    shot = tmp_path / "page.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1500,600", url, tmp_path=tmp_path)
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # Each thumbnail is shown at 64x128 CSS pixels: thousands of pixels of its colour.
    for colour in [QUERY_COLOUR, *COLOURS]:
        assert colour_pixels(pixels, colour) >= 4000, colour
    assert colour_pixels(pixels, (0, 255, 0)) == 0  # a colour of no image: the check can fail
    dom = chromium("--dump-dom", url, tmp_path=tmp_path).stdout
    assert "<script" not in dom and dom.count("<img ") == 9
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in dom


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_input_folder(tmp_path) -> Path:
    """A gallery of three images, one of them not decodable."""
    folder = tmp_path / "gallery"
    write_images(folder, ["a.png", "b.png"], seed=6)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_unreadable_gallery_images_are_skipped_and_named_or_refused(
    trained_run, compose_cfg, bad_input_folder, tmp_path, capsys
) -> None:
    ckpt = checkpoint_of(trained_run[0])
    query = write_images(tmp_path / "q", ["q.png"], seed=7)[0]
    run = search(search_cfg(compose_cfg, tmp_path, ckpt, bad_input_folder, query, "topk=3"))
    assert run["gallery_size"] == 2 and run["update"].unreadable == [
        str(bad_input_folder / "broken.jpg")
    ]
    assert "skipped 1 unreadable: broken.jpg" in capsys.readouterr().out
    assert {r["name"] for r in run["queries"][0]["results"]} == {"a.png", "b.png"}
    strict = search_cfg(
        compose_cfg, tmp_path / "strict", ckpt, bad_input_folder, query, "on_unreadable=error"
    )
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.jpg.*on_unreadable=skip"):
        search(strict)


def test_files_skipped_for_their_type_are_counted_in_the_summary(
    trained_run, compose_cfg, tmp_path, capsys
) -> None:
    gallery = tmp_path / "gallery"
    write_images(gallery, ["a.png", "b.bmp", "c.tif"], seed=10)
    (gallery / "notes.txt").write_text("not an image")
    (gallery / "readme.md").write_text("not an image")
    (gallery / "clip.gif").write_bytes(b"GIF89a")
    query_dir = tmp_path / "q"
    write_images(query_dir, ["q.webp"], seed=11)
    (query_dir / "q.txt").write_text("not an image")
    ckpt = checkpoint_of(trained_run[0])
    run = search(search_cfg(compose_cfg, tmp_path, ckpt, gallery, query_dir, "topk=3"))
    assert run["gallery_size"] == 3 and len(run["queries"]) == 1
    out = capsys.readouterr().out
    skipped = "3 other files skipped: .gif, .md, .txt"
    assert f"3 images (0 reused, 3 embedded, 0 dropped); {skipped}" in out
    assert "1 queries (1 other file skipped: .txt), top 3 of 3 gallery images" in out


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("missing gallery", DatasetError, r"image folder .*nowhere does not exist"),
        (
            "empty gallery",
            DatasetError,
            r"no images \(.jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff\) in .*empty",
        ),
        ("missing query", DatasetError, r"query .*nothing\.jpg does not exist"),
        ("query not an image", DatasetError, r"query .*notes\.txt is not an image"),
        ("query undecodable", DatasetError, r"cannot read image .*fake\.jpg"),
        ("empty query folder", DatasetError, r"no images .* in .*empty"),
        ("checkpoint not ours", CheckpointError, r"is not a reid-attn checkpoint"),
        ("checkpoint not torch", CheckpointError, r"cannot read checkpoint .*notes\.txt"),
        ("unknown index_type", ConfigError, r"index_type='flat' is not valid; allowed values: "),
        (
            "bad on_unreadable",
            ConfigError,
            r"on_unreadable='ignore' .* allowed values: skip, error",
        ),
        ("bad topk", ConfigError, r"topk=0 is not valid; it must be a positive integer"),
    ],
)
def test_bad_input_gives_one_clear_error(
    trained_run, compose_cfg, tmp_path, case, error, message
) -> None:
    ckpt = checkpoint_of(trained_run[0])
    gallery = tmp_path / "gallery"
    write_images(gallery, ["a.png"], seed=8)
    query = write_images(tmp_path / "q", ["q.png"], seed=9)[0]
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.jpg").write_text("not an image")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, foreign)
    cases = {
        "missing gallery": {"gallery": tmp_path / "nowhere"},
        "empty gallery": {"gallery": tmp_path / "empty"},
        "missing query": {"query": tmp_path / "nothing.jpg"},
        "query not an image": {"query": tmp_path / "notes.txt"},
        "query undecodable": {"query": tmp_path / "fake.jpg"},
        "empty query folder": {"query": tmp_path / "empty"},
        "checkpoint not ours": {"ckpt": foreign},
        "checkpoint not torch": {"ckpt": tmp_path / "notes.txt"},
        "unknown index_type": {"overrides": ["index_type=flat"]},
        "bad on_unreadable": {"overrides": ["on_unreadable=ignore"]},
        "bad topk": {"overrides": ["topk=0"]},
    }[case]
    cfg = search_cfg(
        compose_cfg,
        tmp_path,
        cases.get("ckpt", ckpt),
        cases.get("gallery", gallery),
        cases.get("query", query),
        *cases.get("overrides", []),
    )
    with pytest.raises(error, match=message):
        search(cfg)
    assert not (tmp_path / "out" / "results.json").exists()


def test_search_cli_prints_one_line_errors(tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "reid_attn.search",
        f"ckpt_path={tmp_path / 'missing.ckpt'}",
        f"gallery={tmp_path / 'nowhere'}",
        f"query={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: image folder {tmp_path / 'nowhere'} does not exist"
