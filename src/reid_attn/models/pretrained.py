"""Load torchvision's ImageNet ResNet50 weights into the attention backbone, offline only."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import ResNet50_Weights

from reid_attn.models.resnet import ResNet50

PRETRAINED_NAMES = ("imagenet",)


class PretrainedWeightsError(Exception):
    """The weight file is missing, unreadable, or does not fit the backbone."""


def imagenet_weights_path(path: str | Path | None = None) -> Path:
    """The file to read: ``path`` when given, else torchvision's ResNet50 IMAGENET1K_V1 file in
    the torch hub cache (``$TORCH_HOME/hub/checkpoints``). Nothing is ever downloaded."""
    if path is not None:
        return Path(path).expanduser()
    file_name = Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def load_imagenet_weights(backbone: ResNet50, path: str | Path | None = None) -> dict[str, list]:
    """Copy a torchvision ResNet50 state dict into ``backbone``.

    Returns ``{"missing": [...], "unexpected": [...]}``: the attention parameters (the only
    keys allowed to be missing) and the classifier keys ``fc.*`` (the only ones allowed to be
    unexpected). Raises :class:`PretrainedWeightsError` with where to put the file when it is
    absent, and naming the offending keys when the file does not fit.
    """
    file = imagenet_weights_path(path)
    if not file.is_file():
        raise PretrainedWeightsError(
            f"ImageNet weights not found at {file}. No download is attempted: copy torchvision's "
            f"ResNet50 IMAGENET1K_V1 file ({ResNet50_Weights.IMAGENET1K_V1.url}) there, or set "
            "model.pretrained_path=/path/to/resnet50.pth"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"cannot read ImageNet weights {file}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise PretrainedWeightsError(f"{file} does not fit the ResNet50 backbone: {exc}") from exc
    bad_missing = [k for k in result.missing_keys if ".attn." not in k]
    bad_unexpected = [k for k in result.unexpected_keys if not k.startswith("fc.")]
    if bad_missing or bad_unexpected:
        raise PretrainedWeightsError(
            f"{file} is not a torchvision ResNet50 state dict: missing backbone keys "
            f"{bad_missing[:5]}{'...' if len(bad_missing) > 5 else ''}, unexpected keys "
            f"{bad_unexpected[:5]}{'...' if len(bad_unexpected) > 5 else ''}"
        )
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
