"""``python -m reid_attn.extract ckpt_path=PATH images=DIR [out=feats.pt]``: embed a folder.

Every image in ``DIR`` (sorted by name) goes through the checkpoint's test transform (resize to
the checkpoint's ``data.height x data.width``, normalise) and the network's retrieval embedding
in batches; the result is saved with :func:`torch.save` as ``{"features": (N, 2048) float32,
"paths": [str] * N, "pids": (N,) int64, "camids": (N,) int64}``. Identities and 0-based
cameras come from Market-1501-style names (``0002_c1s1_000451_03.jpg`` -> pid 2, camid 0),
``-1`` where a name does not carry them. Files of another type are left out and counted in the
summary line.

Loading, reading and embedding go through :mod:`reid_attn.inference`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from reid_attn.inference import (
    embed_items,
    input_size,
    list_images,
    load_module,
    parse_market_name,
    resolve_device,
)
from reid_attn.runs.files import run_entry


def extract(cfg: DictConfig) -> dict[str, Any]:
    """Embed every image of ``cfg.images`` with ``cfg.ckpt_path`` and save the dict described
    in the module docstring to ``cfg.out``; return it."""
    folder = list_images(cfg.images, cfg.recursive)
    paths = folder.images
    module = load_module(cfg.ckpt_path)
    size = input_size(module, cfg.height, cfg.width)
    ids = [parse_market_name(p.name) for p in paths]
    items = [(str(p), pid, camid) for p, (pid, camid) in zip(paths, ids, strict=True)]
    features = embed_items(
        module,
        items,
        size,
        cfg.batch_size,
        cfg.num_workers,
        resolve_device(cfg.accelerator),
        cfg.progress_bar,
        description=f"embedding {len(items)} images",
        flip=cfg.flip,
    )
    result = {
        "features": features,
        "paths": [str(p) for p in paths],
        "pids": torch.tensor([pid for pid, _ in ids], dtype=torch.int64),
        "camids": torch.tensor([camid for _, camid in ids], dtype=torch.int64),
    }
    out = Path(cfg.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, out)
    named = sum(pid != -1 for pid, _ in ids)
    skipped = f" ({folder.skipped_note()})" if folder.skipped else ""
    print(
        f"embedded {len(paths)} images{skipped} from {cfg.images} at {size[0]}x{size[1]} -> "
        f"features {tuple(features.shape)} ({named} names carry an identity); saved to {out}"
    )
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    run_entry(extract, cfg)


if __name__ == "__main__":
    main()
