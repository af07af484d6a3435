"""Looking at what a model learned: ranked lists, attention maps, CMC curves, ablation figures.

The pure parts (ranking, grid rendering, heat-map overlays, curve plots) take arrays and
images; the model and data part lives in :mod:`reid_attn.visualize`. Names are imported on
first use, so ``python -m reid_attn.viz.cmc`` does not load its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "ablation_figure": "ablation",
    "validation_curves_figure": "ablation",
    "AttentionRecorder": "attention",
    "overlay_heatmap": "attention",
    "upsample_maps": "attention",
    "load_cmc": "cmc",
    "format_distance": "figures",
    "save_png": "figures",
    "plot_cmc": "cmc",
    "GridRow": "grid",
    "GridStyle": "grid",
    "grid_size": "grid",
    "render_grid": "grid",
    "RankedList": "ranking",
    "rank_gallery": "ranking",
    "select_queries": "ranking",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'reid_attn.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"reid_attn.viz.{_SOURCES[name]}"), name)
