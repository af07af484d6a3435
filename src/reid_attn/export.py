"""``python -m reid_attn.export ckpt_path=PATH [format=onnx] [out=...]``: deployable network.

Writes the embedding network (``images (B, 3, H, W) float32 -> embeddings (B, 2048)``, eval
mode, BNNeck feature as in evaluation, batch axis dynamic) as ONNX, then runs the file with
onnxruntime and PyTorch on the same random batch and prints the largest absolute difference of
the embeddings; above ``check.tolerance`` the export fails.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from reid_attn.inference import input_size, load_module
from reid_attn.runs.files import USER_ERRORS, run_entry

EXPORT_FORMATS = ("onnx",)
ONNX_EXPORTERS = ("dynamo", "torchscript")
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
#: Loggers of the exporter stack whose INFO chatter (graph passes) is hidden during an export.
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo")


class ExportError(Exception):
    """An export could not be written or does not reproduce the PyTorch embeddings."""


class EmbeddingNetwork(nn.Module):
    """``forward(images (B, 3, H, W)) -> net.embed(images)`` ``(B, 2048)``: the retrieval
    part of a :class:`reid_attn.models.ReIDNet`, without the classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net.embed(images)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide warnings and sub-WARNING log records of the exporter stack for a while."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecations, graph-break notes
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}: pip install {' '.join(missing)}"
        )


def export_onnx(
    model: nn.Module,
    out: str | Path,
    size: tuple[int, int],
    opset: int = 18,
    exporter: str = "dynamo",
    batch_size: int = 2,
) -> Path:
    """Write ``model`` (``(B, 3, H, W) -> (B, D)``, put in eval mode on the CPU) to the ONNX
    file ``out`` with input ``images``, output ``embeddings`` and a dynamic batch axis.

    Args:
        size: ``(H, W)`` of the example input.
        opset: ONNX opset version.
        exporter: ``dynamo`` (``torch.export`` based; needs onnxscript) or ``torchscript``.
        batch_size: batch of the example input (the exported axis stays dynamic).
    """
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(
            f"onnx.exporter={exporter!r} is not valid; allowed values: {', '.join(ONNX_EXPORTERS)}"
        )
    _require("onnx", *(("onnxscript",) if exporter == "dynamo" else ()))
    model = model.cpu().eval()
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(batch_size, 3, *size)
    common: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
    }
    try:
        with _quiet_exporter():
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(
                    model,
                    (example,),
                    str(out),
                    dynamo=True,
                    dynamic_shapes=({0: batch},),  # positional: any forward arg name
                    external_data=False,
                    verbose=False,
                    **common,
                )
            else:
                torch.onnx.export(
                    model,
                    (example,),
                    str(out),
                    dynamo=False,
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    **common,
                )
    except Exception as exc:  # exporter failures come as many exception types
        raise ExportError(f"ONNX export ({exporter}) failed: {exc}") from exc
    return out


def open_onnx(path: str | Path) -> Any:
    """Check ``path`` with ``onnx.checker`` and open it in an onnxruntime CPU session whose
    input ``images`` has a dynamic batch axis; raise :class:`ExportError` otherwise."""
    _require("onnx", "onnxruntime")
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path} is not a valid ONNX model: {exc}") from exc
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
    batch_dim = session.get_inputs()[0].shape[0]
    if not isinstance(batch_dim, str):
        raise ExportError(f"{path}: the batch axis is fixed to {batch_dim}, not dynamic")
    return session


def onnx_max_abs_diff(
    session: Any, model: nn.Module, size: tuple[int, int], batch_size: int = 3, seed: int = 0
) -> float:
    """Largest absolute difference between the outputs of an onnxruntime ``session`` (see
    :func:`open_onnx`) and of ``model`` on one seeded random batch ``(batch_size, 3, H, W)``."""
    images = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model.cpu().eval()(images).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime gives shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path``'s embedding network to ``cfg.out`` in ``cfg.format`` and check
    it; return ``{"path", "format", "height", "width", "max_abs_diff", "tolerance"}``."""
    if cfg.format not in EXPORT_FORMATS:
        raise ValueError(
            f"format={cfg.format!r} is not valid; valid formats: {', '.join(EXPORT_FORMATS)}"
        )
    if cfg.onnx.exporter not in ONNX_EXPORTERS:
        raise ValueError(
            f"onnx.exporter={cfg.onnx.exporter!r} is not valid; "
            f"allowed values: {', '.join(ONNX_EXPORTERS)}"
        )
    for key in ("batch_size", "tolerance"):
        if cfg.check[key] <= 0:
            raise ValueError(f"check.{key}={cfg.check[key]} must be > 0")
    if cfg.onnx.export_batch_size < 2:
        raise ValueError(
            f"onnx.export_batch_size={cfg.onnx.export_batch_size} must be >= 2 "
            "(an example batch of 1 lets the exporter fix the batch axis)"
        )
    module = load_module(cfg.ckpt_path)
    size = input_size(module, cfg.height, cfg.width)
    model = EmbeddingNetwork(module.net).eval()
    path = export_onnx(
        model, cfg.out, size, cfg.onnx.opset, cfg.onnx.exporter, cfg.onnx.export_batch_size
    )
    diff = onnx_max_abs_diff(open_onnx(path), model, size, cfg.check.batch_size, cfg.check.seed)
    tolerance = float(cfg.check.tolerance)
    verdict = "ok" if diff <= tolerance else "FAILED"
    print(
        f"onnxruntime vs PyTorch on a random batch of {cfg.check.batch_size}x3x{size[0]}x"
        f"{size[1]}: max |embedding difference| = {diff:.3e} (tolerance {tolerance:.0e}): "
        f"{verdict}"
    )
    if diff > tolerance:
        raise ExportError(
            f"the ONNX model differs from PyTorch by {diff:.3e} > check.tolerance={tolerance}"
        )
    print(f"exported {cfg.ckpt_path} -> {path} (images (B,3,{size[0]},{size[1]}) -> (B,2048))")
    return {
        "path": path,
        "format": cfg.format,
        "height": size[0],
        "width": size[1],
        "max_abs_diff": diff,
        "tolerance": tolerance,
    }


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    run_entry(export, cfg, (*USER_ERRORS, ExportError))


if __name__ == "__main__":
    main()
