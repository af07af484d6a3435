"""The inference layer: a checkpoint's network applied to image files.

Every command that runs a trained network outside training goes through here: load a
checkpoint with its config and checks (:func:`load_module`), pick the device
(:func:`resolve_device`) and input size (:func:`input_size`), list a user's images
(:func:`list_images`, identities from Market-1501-style names: :func:`parse_market_name`) and
embed them in batches, upright as their EXIF orientation says, with the checkpoint's
evaluation precision (:func:`iter_embeddings`, :func:`embed_items`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import track
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from reid_attn.data.datasets import DatasetError, Item, Market1501
from reid_attn.data.image_dataset import read_image
from reid_attn.data.transforms import build_test_transform
from reid_attn.models.attention import ATTENTION_NAMES, create_attention
from reid_attn.module import METRIC_DEFAULTS, ReIDModule
from reid_attn.runs.files import load_checkpoint

ACCELERATORS = ("cpu", "cuda", "gpu", "auto")
#: File types of a user's images (search's gallery and query, extract's folder): the common
#: photo formats Pillow reads.
USER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: File types named in the note on the files a folder listing skipped.
NAMED_TYPES = 5


def load_module(ckpt_path: str | Path, evaluation: dict[str, Any] | None = None) -> ReIDModule:
    """Rebuild :class:`ReIDModule` from a checkpoint's hyper-parameters (its ``evaluation``
    settings updated with ``evaluation``), load its weights and switch it to eval mode. Raises
    ``CheckpointError`` (missing / unreadable file) or ``ValueError`` (weights that do not fit
    the described model)."""
    checkpoint = load_checkpoint(ckpt_path)
    hparams = dict(checkpoint["hyper_parameters"])
    hparams["evaluation"] = {**hparams["evaluation"], **(evaluation or {})}
    module = ReIDModule(**hparams)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        difference = describe_weight_mismatch(
            checkpoint["state_dict"], module.state_dict(), hparams["model"].get("attention")
        )
        raise ValueError(
            f"{ckpt_path} does not match the model its hyper-parameters describe: {difference}"
        ) from exc
    return module.eval()


def evaluation_settings(module: ReIDModule) -> dict[str, Any]:
    """The checkpoint's ``evaluation`` settings, with the defaults of the keys it predates
    (:data:`~reid_attn.module.METRIC_DEFAULTS`, ``flip: False``)."""
    return {**METRIC_DEFAULTS, "flip": False, **module.hparams["evaluation"]}


def weights_attention(state_dict: Mapping[str, Tensor]) -> str | None:
    """The attention type (``ATTENTION_NAMES``) whose parameter names the ``.attn.`` entries of
    a re-id network's state dict carry: ``"none"`` without such entries, ``None`` when they
    match no type."""
    names = {key.split(".attn.", 1)[1] for key in state_dict if ".attn." in key}
    for name in ATTENTION_NAMES:
        if names == set(create_attention(name, 64).state_dict()):
            return name
    return None


def describe_weight_mismatch(
    saved: Mapping[str, Tensor], expected: Mapping[str, Tensor], attention: str | None
) -> str:
    """What differs between a checkpoint's ``saved`` state dict and the ``expected`` one of the
    model built for ``attention``: the attention type when the weights carry another one,
    else the counts (with an example) of missing, unexpected and differently shaped tensors."""
    found = weights_attention(saved)
    if found != attention:
        return (
            f"the checkpoint's weights have attention={found or 'unknown'}, the model has "
            f"attention={attention}"
        )
    missing = sorted(expected.keys() - saved.keys())
    unexpected = sorted(saved.keys() - expected.keys())
    reshaped = sorted(
        k for k in expected.keys() & saved.keys() if saved[k].shape != expected[k].shape
    )
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape (e.g. {key}: {tuple(saved[key].shape)} in the "
            f"checkpoint, {tuple(expected[key].shape)} in the model)"
        )
    return "; ".join(parts)


def resolve_device(accelerator: str) -> torch.device:
    """``cpu``, ``cuda``/``gpu`` (error when no GPU is visible) or ``auto`` (GPU if any)."""
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"accelerator={accelerator!r} is not valid; allowed values: {', '.join(ACCELERATORS)}"
        )
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ValueError(f"accelerator={accelerator} but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def input_size(module: ReIDModule, height: int | None, width: int | None) -> tuple[int, int]:
    """``(height, width)`` the network sees: the overrides when given, else the checkpoint's
    data config. Raises ``ValueError`` when neither says."""
    data = module.hparams.get("data") or {}
    size = (height or data.get("height"), width or data.get("width"))
    if not all(size):
        raise ValueError(
            "the checkpoint stores no data.height/data.width; pass height=... width=..."
        )
    if min(size) < 1:
        raise ValueError(f"height and width must be >= 1, got {size}")
    return int(size[0]), int(size[1])


def parse_market_name(name: str) -> tuple[int, int]:
    """``(pid, camid)`` from a Market-1501-style file name (``0002_c1s1_000451_03.jpg`` ->
    ``(2, 0)``, camid 0-based); ``-1`` for whatever the name does not carry."""
    match = Market1501.file_pattern.match(Path(name).name)
    if match is None:
        return -1, -1
    camera = int(match.group(2))
    return int(match.group(1)), camera - 1 if camera >= 1 else -1


@dataclass(frozen=True)
class ImageFolder:
    """A user's folder of images: ``images``, the files of a supported type
    (:data:`USER_IMAGE_SUFFIXES`), sorted, and ``skipped``, the other files, sorted."""

    images: list[Path]
    skipped: list[Path] = field(default_factory=list)

    def skipped_note(self) -> str:
        """``"2 other files skipped: .gif, .txt"`` (their types, most frequent first; the first
        :data:`NAMED_TYPES`), or ``""`` when every file is an image."""
        if not self.skipped:
            return ""
        counts = Counter(p.suffix.lower() or "no suffix" for p in self.skipped)
        types = sorted(counts, key=lambda t: (-counts[t], t))
        more = " ..." if len(types) > NAMED_TYPES else ""
        files = "file" if len(self.skipped) == 1 else "files"
        return f"{len(self.skipped)} other {files} skipped: {', '.join(types[:NAMED_TYPES])}{more}"


def list_images(folder: str | Path, recursive: bool = False) -> ImageFolder:
    """The files of ``folder`` (and below with ``recursive``): images of a supported type and
    the other files. Raises ``DatasetError`` when the folder is missing or holds no image."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in candidates if p.is_file())
    listing = ImageFolder(
        [p for p in files if p.suffix.lower() in USER_IMAGE_SUFFIXES],
        [p for p in files if p.suffix.lower() not in USER_IMAGE_SUFFIXES],
    )
    if not listing.images:
        where = "in or below" if recursive else "in"
        note = f" ({listing.skipped_note()})" if listing.skipped else ""
        raise DatasetError(f"no images ({', '.join(USER_IMAGE_SUFFIXES)}) {where} {root}{note}")
    return listing


class _UserImageDataset(Dataset):
    """``dataset[i] -> (image (3, H, W), i, readable)``: item ``i``'s image upright (its EXIF
    orientation applied) through ``transform``. With ``skip_unreadable`` a file that cannot be
    read gives a zero image ``size = (H, W)`` and ``readable=False``; else it raises
    ``DatasetError``."""

    def __init__(
        self, items: Sequence[Item], transform: Any, size: tuple[int, int], skip_unreadable: bool
    ) -> None:
        self.paths = [path for path, _, _ in items]
        self.transform = transform
        self.blank = torch.zeros(3, *size)
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int, bool]:
        try:
            return self.transform(read_image(self.paths[index], upright=True)), index, True
        except DatasetError:
            if not self.skip_unreadable:
                raise
            return self.blank, index, False


@torch.inference_mode()
def iter_embeddings(
    module: ReIDModule,
    items: Sequence[Item],
    size: tuple[int, int],
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "embedding",
    flip: bool = False,
    skip_unreadable: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Retrieval embeddings of ``items`` (``(path, pid, camid)``) batch by batch, with the test
    transform at ``size = (height, width)`` (images turned upright by their EXIF orientation)
    and the checkpoint's evaluation precision (:meth:`ReIDModule.embed_for_eval`): yields
    ``(positions, embeddings)``, the ``(B,)`` int64 item positions and their ``(B, 2048)``
    float32 CPU embeddings, in item order. With
    ``flip`` each embedding is the mean of the image's and its horizontal mirror's. An
    unreadable image raises ``DatasetError`` naming it, or is left out with
    ``skip_unreadable`` (its position is never yielded)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = _UserImageDataset(items, build_test_transform(*size), size, skip_unreadable)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    module = module.to(device).eval()
    for images, positions, readable in track(loader, description=description, disable=not progress):
        images, positions = images[readable], positions[readable]
        if not len(images):
            continue
        yield positions.long(), module.embed_for_eval(images.to(device), flip).cpu()


def embed_items(
    module: ReIDModule,
    items: Sequence[Item],
    size: tuple[int, int],
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "embedding",
    flip: bool = False,
) -> Tensor:
    """Retrieval embeddings of ``items`` (``(path, pid, camid)``) with the test transform at
    ``size = (height, width)`` and the checkpoint's evaluation precision: a float32 CPU tensor
    ``(N, 2048)`` in item order. With ``flip`` each embedding is the mean of the image's and
    its horizontal mirror's."""
    batches = iter_embeddings(
        module, items, size, batch_size, num_workers, device, progress, description, flip
    )
    return torch.cat([embedding for _, embedding in batches])
