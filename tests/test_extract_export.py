"""Feature extraction of an image folder and ONNX export of the embedding network."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

import reid_attn
from reid_attn.data import DatasetError
from reid_attn.data.transforms import build_test_transform
from reid_attn.export import (
    EmbeddingNetwork,
    ExportError,
    export,
    export_onnx,
    onnx_max_abs_diff,
    open_onnx,
)
from reid_attn.extract import extract
from reid_attn.inference import load_module, parse_market_name
from reid_attn.runs.files import CheckpointError


def checkpoint_of(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0002_c1s1_000451_03.jpg", (2, 0)),
        ("0000_c6s2_000123_01.jpg", (0, 5)),
        ("-1_c3s1_000001_00.jpg", (-1, 2)),
        ("0005_c2_f0046985.jpg", (5, 1)),  # DukeMTMC-reID style
        ("frame_0001.png", (-1, -1)),
        ("0002_x1.jpg", (-1, -1)),
    ],
)
def test_parse_market_name(name, expected) -> None:
    assert parse_market_name(name) == expected


@pytest.fixture
def image_folder(trained_run, tmp_path) -> Path:
    """Five synthetic query images (Market-1501 names), one PNG without ids, one text file."""
    run_dir, _ = trained_run
    queries = sorted((run_dir.parent / "data").glob("*/query/*.jpg"))[:5]
    folder = tmp_path / "images"
    folder.mkdir()
    for path in queries:
        shutil.copy(path, folder / path.name)
    Image.new("RGB", (20, 50), (200, 30, 30)).save(folder / "zz_crop.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_extract_shapes_ids_and_values(trained_run, compose_cfg, image_folder, tmp_path) -> None:
    run_dir, _ = trained_run
    cfg_overrides = [
        f"ckpt_path={checkpoint_of(run_dir)}",
        f"images={image_folder}",
        f"output_dir={tmp_path / 'out'}",
        "batch_size=4",  # 6 images: a full and a partial batch
        "progress_bar=false",
    ]
    extract(compose_cfg("extract", cfg_overrides))
    saved = torch.load(tmp_path / "out" / "features.pt", weights_only=True)
    names = [Path(p).name for p in saved["paths"]]
    assert names == sorted(p.name for p in image_folder.iterdir() if p.suffix != ".txt")
    assert saved["features"].shape == (6, 2048) and saved["features"].dtype == torch.float32
    assert saved["pids"].dtype == torch.int64 and saved["camids"].dtype == torch.int64
    for name, pid, camid in zip(names[:5], saved["pids"][:5], saved["camids"][:5], strict=True):
        assert (pid.item(), camid.item()) == (int(name[:4]), int(name[6]) - 1)
    assert (saved["pids"][5].item(), saved["camids"][5].item()) == (-1, -1)
    # Each row equals the network applied to that image alone at the checkpoint's 64x32.
    module = load_module(checkpoint_of(run_dir))
    transform = build_test_transform(64, 32)
    tensors = {}
    for row in (0, 5):
        with Image.open(saved["paths"][row]) as image:
            tensors[row] = transform(image.convert("RGB"))[None]
        with torch.no_grad():
            expected = module.net.embed(tensors[row])[0]
        assert torch.allclose(saved["features"][row], expected, atol=1e-4)
    # flip=true: the mean of the image's and its mirror's embeddings.
    extract(compose_cfg("extract", [*cfg_overrides, "flip=true", f"out={tmp_path / 'f.pt'}"]))
    flipped = torch.load(tmp_path / "f.pt", weights_only=True)["features"]
    with torch.no_grad():
        mirrored = module.net.embed(tensors[0].flip(-1))[0]
    assert torch.allclose(flipped[0], (saved["features"][0] + mirrored) / 2, atol=1e-4)
    assert not torch.allclose(flipped[0], saved["features"][0], atol=1e-3)


def test_extract_counts_the_files_it_skips_for_their_type(
    trained_run, compose_cfg, tmp_path, capsys
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (20, 40), (200, 30, 30)).save(folder / "crop.webp")
    Image.new("RGB", (20, 40), (30, 30, 200)).save(folder / "clip.gif")
    (folder / "notes.txt").write_text("not an image")
    overrides = [
        f"ckpt_path={checkpoint_of(trained_run[0])}",
        f"images={folder}",
        f"output_dir={tmp_path / 'out'}",
        "progress_bar=false",
    ]
    saved = extract(compose_cfg("extract", overrides))
    assert [Path(p).name for p in saved["paths"]] == ["crop.webp"]
    assert "embedded 1 images (2 other files skipped: .gif, .txt) from" in capsys.readouterr().out


def test_extract_bad_input(trained_run, compose_cfg, image_folder, tmp_path) -> None:
    run_dir, _ = trained_run
    empty = tmp_path / "empty"
    empty.mkdir()
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")

    def cfg(images: Path, ckpt: Path | None = None):
        ckpt = ckpt or checkpoint_of(run_dir)
        overrides = [f"ckpt_path={ckpt}", f"images={images}", f"output_dir={tmp_path / 'o'}"]
        return compose_cfg("extract", [*overrides, "progress_bar=false"])

    with pytest.raises(DatasetError, match=r"image folder .*missing does not exist"):
        extract(cfg(tmp_path / "missing"))
    listed = r"\(.jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff\)"
    with pytest.raises(DatasetError, match=rf"no images {listed} in .*empty"):
        extract(cfg(empty))
    with pytest.raises(CheckpointError, match="does not exist"):
        extract(cfg(image_folder, tmp_path / "none.ckpt"))
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.jpg"):
        extract(cfg(image_folder))
    assert not (tmp_path / "o" / "features.pt").exists()


# ----------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> dict:
    """The default export (dynamo exporter, checked with onnxruntime) of the tiny checkpoint."""
    run_dir, _ = trained_run
    out_dir = tmp_path_factory.mktemp("export")
    overrides = [f"ckpt_path={checkpoint_of(run_dir)}", f"output_dir={out_dir}"]
    with initialize_config_dir(str(Path(reid_attn.__file__).parent / "conf"), version_base="1.3"):
        cfg = compose("export", overrides=overrides)
    return export(cfg)


@pytest.fixture(scope="module")
def tiny_module(trained_run) -> torch.nn.Module:
    return load_module(checkpoint_of(trained_run[0]))


@pytest.fixture(scope="module")
def session(exported):
    return open_onnx(exported["path"])


def test_onnx_export_matches_pytorch(exported, session, tiny_module) -> None:
    assert exported["path"].name == "model.onnx" and exported["path"].is_file()
    assert (exported["height"], exported["width"]) == (64, 32)
    assert 0 <= exported["max_abs_diff"] <= exported["tolerance"] == 1e-4
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and out.name == "embeddings"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 64, 32]  # dynamic batch
    for batch in (1, 5):
        images = torch.randn(batch, 3, 64, 32, generator=torch.Generator().manual_seed(batch))
        got = session.run(None, {"images": images.numpy()})[0]
        with torch.no_grad():
            expected = tiny_module.net.embed(images).numpy()
        assert got.shape == (batch, 2048)
        assert np.abs(got - expected).max() <= 1e-4


def test_parity_check_detects_a_different_model(exported, session, tiny_module) -> None:
    same = onnx_max_abs_diff(session, EmbeddingNetwork(tiny_module.net), (64, 32))
    assert same == pytest.approx(exported["max_abs_diff"])  # same seed: the same batch
    other = copy.deepcopy(EmbeddingNetwork(tiny_module.net))
    with torch.no_grad():
        other.net.head.bnneck.running_mean += 1.0
    assert onnx_max_abs_diff(session, other, (64, 32)) > 1e-2
    with pytest.raises(ExportError, match="onnxruntime gives shape"):
        onnx_max_abs_diff(session, torch.nn.Flatten(), (64, 32))


def test_open_onnx_rejects_a_non_onnx_file(tmp_path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="is not a valid ONNX model"):
        open_onnx(bogus)


def test_export_fails_when_parity_exceeds_tolerance(
    exported, trained_run, compose_cfg, monkeypatch, tmp_path
) -> None:
    import reid_attn.export as export_module

    monkeypatch.setattr(export_module, "export_onnx", lambda *a, **k: exported["path"])
    monkeypatch.setattr(export_module, "open_onnx", lambda path: None)
    monkeypatch.setattr(export_module, "onnx_max_abs_diff", lambda *a, **k: 0.5)
    cfg = compose_cfg(
        "export", [f"ckpt_path={checkpoint_of(trained_run[0])}", f"output_dir={tmp_path}"]
    )
    with pytest.raises(ExportError, match=r"differs from PyTorch by 5.000e-01 > check.tolerance"):
        export(cfg)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_both_exporters_on_a_small_network(exporter, tmp_path) -> None:
    torch.manual_seed(0)
    small = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    path = export_onnx(small, tmp_path / f"{exporter}.onnx", (16, 8), exporter=exporter)
    session = open_onnx(path)
    assert isinstance(session.get_inputs()[0].shape[0], str)
    assert onnx_max_abs_diff(session, small, (16, 8), batch_size=4) <= 1e-5
    assert session.run(None, {"images": np.zeros((1, 3, 16, 8), np.float32)})[0].shape == (1, 8)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("onnx.export_batch_size=1", "must be >= 2"),
        ("format=tflite", "format='tflite' is not valid; valid formats: onnx"),
        ("onnx.exporter=tf", "onnx.exporter='tf' is not valid; allowed values: dynamo, torch"),
        ("check.tolerance=0", r"check.tolerance=0 must be > 0"),
    ],
)
def test_export_bad_config(compose_cfg, tmp_path, override, message) -> None:
    ckpt = tmp_path / "never-read.ckpt"  # config errors come before the checkpoint is read
    cfg = compose_cfg("export", [f"ckpt_path={ckpt}", f"output_dir={tmp_path}", override])
    with pytest.raises(ValueError, match=message):
        export(cfg)


def test_export_cli_reports_one_line_errors(tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "reid_attn.export",
        f"ckpt_path={tmp_path / 'missing.ckpt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: checkpoint {tmp_path / 'missing.ckpt'} does not exist"
