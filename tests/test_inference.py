"""The inference layer (:mod:`reid_attn.inference`) and the rule that commands share code only
through library modules: no command module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, features

import reid_attn
from reid_attn.data import DatasetError
from reid_attn.data.image_dataset import read_image
from reid_attn.data.transforms import build_test_transform
from reid_attn.inference import (
    USER_IMAGE_SUFFIXES,
    ImageFolder,
    embed_items,
    list_images,
    load_module,
)

PACKAGE = Path(reid_attn.__file__).parent
#: The command modules: each a console entry point, none a library of the others.
COMMANDS = ("train", "evaluate", "extract", "export", "search", "visualize", "report", "tune")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` of the file names, as a dotted path
    (``from reid_attn import x`` gives ``reid_attn.x``; relative imports resolved in the
    package)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "reid_attn" if node.level else ""
            base = ".".join(filter(None, [base, node.module]))
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_another(command: str) -> None:
    others = {f"reid_attn.{c}" for c in COMMANDS if c != command}
    assert (PACKAGE / f"{command}.py").is_file()
    imports = imported_modules(PACKAGE / f"{command}.py")
    assert not imports & others, f"{command}.py imports the command(s) {imports & others}"


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import reid_attn.search\nfrom reid_attn import visualize\n"
        "from reid_attn.extract import extract\nfrom . import tune\n"
    )
    imports = imported_modules(source)
    assert {"reid_attn.search", "reid_attn.visualize", "reid_attn.extract"} <= imports
    assert "reid_attn.tune" in imports


def checkpoint_of(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def write_noise(folder: Path, names: list[str], size: tuple[int, int] = (40, 20)) -> list[Path]:
    """Seeded random RGB images ``size`` (height, width) named ``names`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    return [folder / name for name in names]


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_embedding_follows_the_evaluation_precision_and_flip(
    trained_run, tmp_path, precision
) -> None:
    paths = write_noise(tmp_path, ["a.png", "b.png", "c.png"])
    module = load_module(checkpoint_of(trained_run[0]), {"precision": precision})
    items = [(str(p), -1, -1) for p in paths]
    transform = build_test_transform(64, 32)
    images = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    for flip in (False, True):
        got = embed_items(module, items, (64, 32), batch_size=2, progress=False, flip=flip)
        with torch.inference_mode():
            expected = module.embed_for_eval(images, flip)
        assert got.dtype == torch.float32 and got.shape == (3, 2048)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if precision == "bf16":  # not the float32 embeddings
        with torch.inference_mode():
            float32 = load_module(checkpoint_of(trained_run[0])).embed_for_eval(images, True)
        assert not torch.allclose(got, float32, atol=1e-4)


def test_files_of_other_types_are_listed_as_skipped(tmp_path) -> None:
    for name in ["b.png", "a.jpg", "notes.txt", "clip.gif", "more.txt", "README", "sub/c.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    flat = list_images(tmp_path)
    assert [p.name for p in flat.images] == ["a.jpg", "b.png"]
    assert [p.name for p in flat.skipped] == ["README", "clip.gif", "more.txt", "notes.txt"]
    assert flat.skipped_note() == "4 other files skipped: .txt, .gif, no suffix"
    below = list_images(tmp_path, recursive=True)
    assert [p.name for p in below.images] == ["a.jpg", "b.png", "c.png"]
    assert ImageFolder([tmp_path / "a.jpg"]).skipped_note() == ""
    others = tmp_path / "others"
    others.mkdir()
    (others / "notes.txt").write_text("not an image")
    only_notes = r"no images \(.*\) in .*others \(1 other file skipped: .txt\)$"
    with pytest.raises(DatasetError, match=only_notes):
        list_images(others)


#: How each user format is written losslessly (JPEG is lossy: it is only checked to load).
LOSSLESS = {".png": {}, ".bmp": {}, ".tif": {}, ".tiff": {}, ".webp": {"lossless": True}}


def test_user_images_of_the_common_formats_load(trained_run, tmp_path) -> None:
    if not features.check("webp"):
        pytest.skip("this Pillow build has no WebP support")
    pixels = np.random.default_rng(1).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    for suffix in USER_IMAGE_SUFFIXES:
        Image.fromarray(pixels).save(tmp_path / f"img{suffix}", **LOSSLESS.get(suffix, {}))
    paths = list_images(tmp_path).images
    assert sorted(p.suffix for p in paths) == sorted(USER_IMAGE_SUFFIXES)
    module = load_module(checkpoint_of(trained_run[0]))
    items = [(str(p), -1, -1) for p in paths]
    embeddings = dict(zip(paths, embed_items(module, items, (64, 32), progress=False), strict=True))
    reference = embeddings[tmp_path / "img.png"]
    for suffix in LOSSLESS:
        torch.testing.assert_close(embeddings[tmp_path / f"img{suffix}"], reference)


@pytest.mark.parametrize(
    ("orientation", "turn"), [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)]
)
def test_photos_are_turned_upright_by_their_exif_orientation(
    trained_run, tmp_path, orientation, turn
) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    photo = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(photo, exif=exif)
    with Image.open(photo) as stored:  # the decoded pixels as stored, turned by hand
        upright = stored.convert("RGB").transpose(turn)
    assert upright.size == (40, 20)  # (width, height): the 20 x 40 stored image on its side
    loaded = read_image(str(photo), upright=True)
    assert loaded.size == upright.size
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(upright))
    assert read_image(str(photo)).size == (20, 40)  # the dataset readers' default: as stored
    reference = tmp_path / "reference.png"
    upright.save(reference)
    module = load_module(checkpoint_of(trained_run[0]))
    items = [(str(photo), -1, -1), (str(reference), -1, -1)]
    got, expected = embed_items(module, items, (64, 32), progress=False)
    torch.testing.assert_close(got, expected)
