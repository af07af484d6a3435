"""Tests for reid_attn.data: synthetic data, Market-1501 parser, image dataset, transforms,
validation split and the datamodule."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SMALL_SYNTHETIC
from reid_attn.data import synthetic as synthetic_module
from reid_attn.data.datamodule import DATASETS, ReIDDataModule, split_validation
from reid_attn.data.datasets import DatasetError, Market1501
from reid_attn.data.image_dataset import ReIDImageDataset, proportional_order, read_image
from reid_attn.data.synthetic import SyntheticSpec, generate_synthetic_market
from reid_attn.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_test_transform,
    build_train_transform,
)

SPLITS = ("bounding_box_train", "query", "bounding_box_test")
MARKET_NAME = re.compile(r"^(\d{4}|-1)_c(\d)s1_\d{6}_\d{2}\.jpg$")
SMALL = SyntheticSpec(**SMALL_SYNTHETIC)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SMALL synthetic dataset, generated once for the module."""
    return generate_synthetic_market(tmp_path_factory.mktemp("synthetic"), SMALL)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _jpeg(path: Path, colour: tuple[int, int, int] = (120, 60, 30), size=(16, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _parse_name(name: str) -> tuple[int, int]:
    match = MARKET_NAME.match(name)
    assert match is not None, f"{name} is not a Market-1501 file name"
    return int(match.group(1)), int(match.group(2))


# --------------------------------------------------------------------------- synthetic


def test_synthetic_layout_and_names(small_root: Path) -> None:
    assert small_root.name.startswith("synthetic-")
    assert {p.name for p in small_root.iterdir() if p.is_dir()} == set(SPLITS)
    names = {split: sorted(p.name for p in (small_root / split).iterdir()) for split in SPLITS}
    for split, files in names.items():
        assert files, f"{split} is empty"
        for name in files:
            _, cam = _parse_name(name)
            assert 1 <= cam <= SMALL.num_cameras
    parsed = {split: [_parse_name(n) for n in files] for split, files in names.items()}
    train_pids = {pid for pid, _ in parsed["bounding_box_train"]}
    query_pids = {pid for pid, _ in parsed["query"]}
    gallery = Counter(pid for pid, _ in parsed["bounding_box_test"])
    assert train_pids == set(range(1, SMALL.num_train_ids + 1))
    test_ids = set(range(SMALL.num_train_ids + 1, SMALL.num_train_ids + SMALL.num_test_ids + 1))
    assert query_pids == test_ids
    assert gallery[0] == SMALL.num_distractors
    assert gallery[-1] == SMALL.num_junk
    assert set(gallery) == test_ids | {0, -1}
    # one query per (identity, camera); the camera's other shots are in the gallery
    query_keys = Counter(parsed["query"])
    assert set(query_keys.values()) == {1}
    gallery_keys = Counter(key for key in parsed["bounding_box_test"] if key[0] > 0)
    assert set(gallery_keys) == set(query_keys)
    assert set(gallery_keys.values()) == {SMALL.images_per_camera - 1}
    # images are readable and of the requested size (PIL size is (width, height))
    first = small_root / "query" / names["query"][0]
    assert read_image(str(first)).size == (SMALL.width, SMALL.height)


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    a = generate_synthetic_market(tmp_path / "a", SMALL)
    b = generate_synthetic_market(tmp_path / "b", SMALL)
    assert a.name == b.name
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    assert len(files_a) > 20
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs between two generations"


def test_synthetic_cache_is_reused_without_rewriting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = generate_synthetic_market(tmp_path, SMALL)
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    contents = _files(first)

    def fail(*args, **kwargs):
        raise AssertionError("the cached dataset was rendered again")

    monkeypatch.setattr(synthetic_module, "_render", fail)
    second = generate_synthetic_market(tmp_path, SMALL)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in second.rglob("*")} == mtimes
    assert _files(second) == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no leftover .tmp


def test_synthetic_generation_by_processes_at_once_gives_one_whole_folder(tmp_path: Path) -> None:
    # Parallel jobs of a multirun (or a SLURM array on a shared disk) start on an empty cache
    # together: each renders its own copy, one is renamed into place, none reads a partial one.
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(3) as pool:
        outs = pool.starmap(generate_synthetic_market, [(tmp_path, SMALL)] * 3)
    assert len(set(outs)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [outs[0].name]  # no leftover copy
    assert _files(outs[0]) == _files(generate_synthetic_market(tmp_path / "alone", SMALL))


def test_synthetic_stale_folder_is_replaced(tmp_path: Path) -> None:
    stale = tmp_path / f"synthetic-{SMALL.digest()}"
    (stale / "query").mkdir(parents=True)  # interrupted long ago: no manifest
    out = generate_synthetic_market(tmp_path, SMALL)
    assert out == stale and (out / "bounding_box_train").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_synthetic_different_spec_uses_different_folder(tmp_path: Path, small_root: Path) -> None:
    other = replace(SMALL, seed=1)
    out = generate_synthetic_market(tmp_path, other)
    assert out.name != small_root.name
    assert out.name == f"synthetic-{other.digest()}"
    assert other.digest() != SMALL.digest()
    assert _files(out) != _files(small_root)


@pytest.mark.parametrize(
    "changes",
    [
        {"num_train_ids": 1},
        {"num_test_ids": 0},
        {"min_cameras_per_id": 1},
        {"min_cameras_per_id": 4, "max_cameras_per_id": 3},
        {"max_cameras_per_id": 7},
        {"num_cameras": 10, "max_cameras_per_id": 10},
        {"num_cameras": 7, "max_cameras_per_id": 7},  # Market-1501 layout has 6 cameras
        {"height": 32, "width": 16},  # too small to draw a person
        {"width": 8},
        {"generator_version": 1},  # data of another renderer (e.g. an old checkpoint's)
        {"images_per_camera": 1},
    ],
)
def test_synthetic_invalid_spec_raises(tmp_path: Path, changes: dict) -> None:
    with pytest.raises(ValueError):
        generate_synthetic_market(tmp_path, replace(SMALL, **changes))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- Market1501


@pytest.fixture
def fake_market(tmp_path: Path) -> Path:
    root = tmp_path / "market"
    train, query, gallery = (root / s for s in SPLITS)
    for name in (
        "0007_c1s1_000100_00.jpg",
        "0007_c2s1_000101_00.jpg",
        "0003_c1s1_000102_00.jpg",
        "0003_c6s1_000103_00.jpg",
        "0012_c3s1_000104_00.jpg",
        "-1_c2s1_000105_00.jpg",  # junk in train: dropped
    ):
        _jpeg(train / name)
    (train / "Thumbs.db").write_bytes(b"\x00not an image")
    (train / "readme.txt").write_text("notes")
    for name in ("0007_c2s1_000200_00.jpg", "0003_c1s1_000201_00.jpg"):
        _jpeg(query / name)
    for name in (
        "0007_c1s1_000300_00.jpg",
        "0003_c6s1_000301_00.jpg",
        "0000_c4s1_000302_00.jpg",  # distractor: kept
        "-1_c5s1_000303_00.jpg",  # junk: dropped
    ):
        _jpeg(gallery / name)
    _jpeg(gallery / "0003_c2s1_000304_00.png")  # .png is an image too
    (gallery / "Thumbs.db").write_bytes(b"\x00")
    return root


def _names(items: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    return [(Path(path).name, pid, camid) for path, pid, camid in items]


def test_market_parses_and_relabels(fake_market: Path) -> None:
    data = Market1501(fake_market, verbose=False)
    assert _names(data.train) == [
        ("0003_c1s1_000102_00.jpg", 0, 0),
        ("0003_c6s1_000103_00.jpg", 0, 5),
        ("0007_c1s1_000100_00.jpg", 1, 0),
        ("0007_c2s1_000101_00.jpg", 1, 1),
        ("0012_c3s1_000104_00.jpg", 2, 2),
    ]
    assert data.num_train_pids == 3
    # query / gallery keep the original person ids (they are matched by equality)
    assert _names(data.query) == [
        ("0003_c1s1_000201_00.jpg", 3, 0),
        ("0007_c2s1_000200_00.jpg", 7, 1),
    ]
    assert _names(data.gallery) == [
        ("0000_c4s1_000302_00.jpg", 0, 3),
        ("0003_c2s1_000304_00.png", 3, 1),
        ("0003_c6s1_000301_00.jpg", 3, 5),
        ("0007_c1s1_000300_00.jpg", 7, 0),
    ]
    for path, _, _ in data.train + data.query + data.gallery:
        assert Path(path).is_file()
        assert Path(path).parent.parent == fake_market


def test_market_statistics_table(fake_market: Path, capsys: pytest.CaptureFixture) -> None:
    data = Market1501(fake_market, verbose=True)
    table = data.statistics_table()
    assert capsys.readouterr().out.strip() == table.strip()
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 4 and cells[0] in ("train", "query", "gallery"):
            rows[cells[0]] = tuple(int(c) for c in cells[1:])
    # (# ids, # images, # cameras)
    assert rows == {"train": (3, 5, 4), "query": (2, 2, 2), "gallery": (3, 4, 4)}
    assert str(fake_market) in table


def test_market_on_synthetic_folder(small_root: Path) -> None:
    data = Market1501(small_root, verbose=False)
    assert data.num_train_pids == SMALL.num_train_ids
    assert {pid for _, pid, _ in data.train} == set(range(SMALL.num_train_ids))
    assert len({pid for _, pid, _ in data.query}) == SMALL.num_test_ids
    gallery_pids = Counter(pid for _, pid, _ in data.gallery)
    assert gallery_pids[0] == SMALL.num_distractors
    assert -1 not in gallery_pids
    assert set(gallery_pids) - {0} == {pid for _, pid, _ in data.query}
    cams = {camid for _, _, camid in data.train + data.query + data.gallery}
    assert cams <= set(range(SMALL.num_cameras))
    n_query = len(data.query)
    assert len(data.gallery) == n_query * (SMALL.images_per_camera - 1) + SMALL.num_distractors
    assert len(data.train) % SMALL.images_per_camera == 0
    cams_per_train_id = Counter(
        pid for pid, _ in {(pid, camid) for _, pid, camid in data.train}
    ).values()
    assert all(SMALL.min_cameras_per_id <= n <= SMALL.max_cameras_per_id for n in cams_per_train_id)


def test_market_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        Market1501(tmp_path / "nowhere", verbose=False)
    message = str(info.value)
    assert "does not exist" in message
    assert str(tmp_path / "nowhere") in message
    for split in SPLITS:
        assert split in message


def test_market_not_a_market_folder(tmp_path: Path) -> None:
    _jpeg(tmp_path / "images" / "0001_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError) as info:
        Market1501(tmp_path, verbose=False)
    message = str(info.value)
    assert "not a market1501 folder" in message
    assert "missing bounding_box_train, query, bounding_box_test" in message


def test_market_partially_missing_folder(fake_market: Path) -> None:
    for path in (fake_market / "query").iterdir():
        path.unlink()
    (fake_market / "query").rmdir()
    with pytest.raises(DatasetError, match="missing query;"):
        Market1501(fake_market, verbose=False)


def test_market_unparseable_name(fake_market: Path) -> None:
    _jpeg(fake_market / "query" / "person_a.jpg")
    with pytest.raises(DatasetError) as info:
        Market1501(fake_market, verbose=False)
    message = str(info.value)
    assert "person_a.jpg" in message
    assert "cannot parse" in message
    assert "0002_c1s1_000451_03.jpg" in message  # an example of a valid name


def test_market_camera_out_of_range(fake_market: Path) -> None:
    _jpeg(fake_market / "bounding_box_test" / "0007_c7s1_000400_00.jpg")
    with pytest.raises(DatasetError) as info:
        Market1501(fake_market, verbose=False)
    message = str(info.value)
    assert "camera 7" in message
    assert "0007_c7s1_000400_00.jpg" in message
    assert "1..6" in message


def test_market_invalid_person_id(fake_market: Path) -> None:
    _jpeg(fake_market / "bounding_box_test" / "-2_c1s1_000400_00.jpg")
    with pytest.raises(DatasetError, match="invalid person id -2"):
        Market1501(fake_market, verbose=False)


@pytest.mark.parametrize("split", ["query", "bounding_box_test", "bounding_box_train"])
def test_market_empty_split(fake_market: Path, split: str) -> None:
    folder = fake_market / split
    for path in folder.iterdir():
        # keep only junk / non-image files: the split parses to no items
        if not (path.name.startswith("-1_") or path.suffix in (".db", ".txt")):
            path.unlink()
    name = {"query": "query", "bounding_box_test": "gallery", "bounding_box_train": "train"}[split]
    with pytest.raises(DatasetError, match=f"the {name} split in .* has no images"):
        Market1501(fake_market, verbose=False)


# --------------------------------------------------------------------------- image dataset


def test_read_image_corrupt_jpeg(tmp_path: Path) -> None:
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        read_image(str(bad))


def test_read_image_truncated_and_missing(tmp_path: Path) -> None:
    good = _jpeg(tmp_path / "good.jpg", size=(64, 128))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DatasetError, match=re.escape(str(truncated))):
        read_image(str(truncated))
    missing = tmp_path / "missing.jpg"
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        read_image(str(missing))


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (5, 7), 99).save(path)
    image = read_image(str(path))
    assert image.mode == "RGB"
    assert image.size == (5, 7)


def test_reid_image_dataset_items(tmp_path: Path) -> None:
    items = [
        (str(_jpeg(tmp_path / f"{i}.jpg", (10 * i, 20, 30), size=(20, 40))), pid, camid)
        for i, (pid, camid) in enumerate([(5, 0), (6, 1), (5, 2), (0, 3), (7, 5)])
    ]
    dataset = ReIDImageDataset(items, build_test_transform(64, 32), query_flags=[1, 1, 0, 0, 0])
    assert len(dataset) == 5
    flags = []
    for i in range(len(dataset)):
        image, pid, camid, is_query = dataset[i]
        assert isinstance(image, torch.Tensor)
        assert image.shape == (3, 64, 32)
        assert image.dtype == torch.float32
        assert (pid, camid) == items[i][1:]
        flags.append(is_query)
    assert flags == [1, 1, 0, 0, 0]
    assert [dataset[i][3] for i in range(5)] == flags
    no_query = ReIDImageDataset(items, build_test_transform(64, 32))
    assert [no_query[i][3] for i in range(5)] == [0] * 5


def test_reid_image_dataset_corrupt_item(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    dataset = ReIDImageDataset([(str(bad), 1, 0)], build_test_transform(64, 32))
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        dataset[0]


# --------------------------------------------------------------------------- transforms


def test_test_transform_normalises_constant_image() -> None:
    colour = (200, 100, 50)
    out = build_test_transform(64, 32)(Image.new("RGB", (17, 30), colour))
    assert out.shape == (3, 64, 32)
    for c in range(3):
        expected = (colour[c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(
            out[c], torch.full((64, 32), expected), atol=1e-5, rtol=0, msg=f"channel {c}"
        )
    # hand-computed: (200/255 - 0.485) / 0.229 for the red channel
    assert out[0, 0, 0].item() == pytest.approx(1.3070, abs=1e-4)


def test_train_transform_shape_and_flip() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 23, 3), dtype=np.uint8))
    torch.manual_seed(0)
    out = build_train_transform(64, 32)(image)
    assert out.shape == (3, 64, 32)
    assert out.dtype == torch.float32
    # no pad / erasing, always flip: the test transform of the mirrored image
    flipped = build_train_transform(64, 32, flip_prob=1.0, pad=0, erasing_prob=0.0)(image)
    expected = build_test_transform(64, 32)(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    torch.testing.assert_close(flipped, expected)
    # never flip: the test transform of the image itself
    plain = build_train_transform(64, 32, flip_prob=0.0, pad=0, erasing_prob=0.0)(image)
    torch.testing.assert_close(plain, build_test_transform(64, 32)(image))


# --------------------------------------------------------------------------- validation split


def _train_items() -> list[tuple[str, int, int]]:
    items = []
    for pid in (2, 5, 9, 11, 14):
        for camid in (0, 3) if pid % 2 else (1, 2, 4):
            for shot in range(3 if pid == 14 else 2):
                items.append((f"p{pid}_c{camid}_{shot}.jpg", pid, camid))
    # interleave identities so that "first image per camera" means first in list order
    return items[::2] + items[1::2]


def test_split_validation_holds_out_last_ids() -> None:
    items = _train_items()
    train, query, gallery = split_validation(items, 2)
    held = {11, 14}
    assert {pid for _, pid, _ in train} == {0, 1, 2}
    # relabelled in sorted pid order (2 -> 0, 5 -> 1, 9 -> 2), order and paths kept
    labels = {2: 0, 5: 1, 9: 2}
    assert train == [(p, labels[pid], c) for p, pid, c in items if pid not in held]
    assert not {path for path, _, _ in train} & {path for path, _, _ in query + gallery}
    # exactly one query per held-out (pid, camid): the first such image
    keys = Counter((pid, camid) for _, pid, camid in query)
    expected_keys = {(pid, camid) for _, pid, camid in items if pid in held}
    assert set(keys) == expected_keys
    assert set(keys.values()) == {1}
    for path, pid, camid in query:
        assert path == next(p for p, q, c in items if (q, c) == (pid, camid))
    assert Counter(query + gallery) == Counter(item for item in items if item[1] in held)
    assert len(gallery) == len(items) - len(train) - len(query)


def test_split_validation_zero_and_max() -> None:
    items = _train_items()
    train, query, gallery = split_validation(items, 0)
    assert (query, gallery) == ([], [])
    assert [pid for _, pid, _ in train] == [
        {2: 0, 5: 1, 9: 2, 11: 3, 14: 4}[p] for _, p, _ in items
    ]
    train, query, _ = split_validation(items, 3)
    assert {pid for _, pid, _ in train} == {0, 1}
    assert {pid for _, pid, _ in query} == {9, 11, 14}


@pytest.mark.parametrize("n", [-1, 4, 5, 100])
def test_split_validation_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match=r"val_identities must be in \[0, 3\]"):
        split_validation(_train_items(), n)


# --------------------------------------------------------------------------- datamodule


@pytest.mark.parametrize("pipeline", ["loader", "memory"])
def test_datamodule_end_to_end(tmp_path: Path, pipeline: str) -> None:
    dm = ReIDDataModule(
        name="synthetic",
        root=str(tmp_path),
        height=64,
        width=32,
        num_identities=2,
        num_instances=2,
        val_identities=2,
        num_workers=0,
        eval_batch_size=16,
        synthetic=SMALL_SYNTHETIC,
        pipeline=pipeline,
    )
    dm.prepare_data()
    assert (tmp_path / f"synthetic-{SMALL.digest()}").is_dir()
    dm.setup("fit")
    assert dm.num_classes == SMALL.num_train_ids - 2
    assert {pid for _, pid, _ in dm.train_items} == set(range(dm.num_classes))

    images, pids, camids, flags = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 64, 32)
    assert Counter(pids.tolist()) == Counter({int(pids[0]): 2, int(pids[2]): 2})
    assert len(set(pids.tolist())) == 2
    assert camids.shape == (4,)
    assert flags.tolist() == [0, 0, 0, 0]

    val = dm.val_dataloader()
    n_val = sum(len(batch[0]) for batch in val)
    assert n_val == len(dm.val_query) + len(dm.val_gallery) > 0

    all_flags, all_pids, n_images = [], [], 0
    for images, pids, _, flags in dm.test_dataloader():
        assert images.shape[1:] == (3, 64, 32)
        n_images += len(images)
        all_flags += flags.tolist()
        all_pids += pids.tolist()
    n_query, n_gallery = len(dm.dataset.query), len(dm.dataset.gallery)
    assert n_images == n_query + n_gallery
    assert sorted(all_flags) == [0] * n_gallery + [1] * n_query
    # queries and gallery images are mixed, each list keeping its own order
    assert [p for p, f in zip(all_pids, all_flags, strict=True) if f] == [
        p for _, p, _ in dm.dataset.query
    ]
    assert [p for p, f in zip(all_pids, all_flags, strict=True) if not f] == [
        p for _, p, _ in dm.dataset.gallery
    ]
    first_batch_flags = next(iter(dm.test_dataloader()))[3]
    assert 0 < int(first_batch_flags.sum()) < len(first_batch_flags)


@pytest.mark.parametrize(("num_query", "num_gallery"), [(3, 10), (10, 3), (7, 7), (1, 50), (5, 0)])
def test_proportional_order_keeps_each_list_and_mixes_them_in_proportion(
    num_query: int, num_gallery: int
) -> None:
    order = proportional_order(num_query, num_gallery)
    assert sorted(order) == list(range(num_query + num_gallery))
    queries = [k for k in order if k < num_query]
    assert queries == sorted(queries)
    assert [k for k in order if k >= num_query] == list(range(num_query, num_query + num_gallery))
    for length in range(1, len(order) + 1):  # every prefix holds both in proportion (+- 1)
        taken_query = sum(k < num_query for k in order[:length])
        expected = length * num_query / (num_query + num_gallery)
        assert abs(taken_query - expected) <= 1.0


def test_datamodule_without_val_identities(small_root: Path) -> None:
    dm = ReIDDataModule(
        root=str(small_root.parent),
        height=64,
        width=32,
        num_identities=2,
        num_instances=2,
        num_workers=0,
        synthetic=SMALL_SYNTHETIC,
    )
    assert dm.dataset_root() == small_root  # the cached folder is reused
    dm.setup()
    assert dm.num_classes == SMALL.num_train_ids
    assert dm.val_dataloader() == []


def test_datamodule_unknown_name() -> None:
    with pytest.raises(ValueError) as info:
        ReIDDataModule(name="cuhk03")
    message = str(info.value)
    assert "cuhk03" in message
    for name in DATASETS:
        assert name in message


def test_datamodule_market_root_is_used_as_is(fake_market: Path) -> None:
    dm = ReIDDataModule(name="market1501", root=str(fake_market), num_workers=0)
    assert dm.dataset_root() == fake_market
    assert not any(p.name.startswith("synthetic-") for p in fake_market.parent.iterdir())
    assert os.path.isdir(dm.dataset_root() / "query")
