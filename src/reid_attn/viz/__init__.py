"""Looking at what a model learned: ranked lists, attention maps, CMC curves.

The pure parts (ranking, grid rendering, heat-map overlays, curve plots) take arrays and
images; the model and data part lives in :mod:`reid_attn.visualize`.
"""

from reid_attn.viz.attention import AttentionRecorder, overlay_heatmap, upsample_maps
from reid_attn.viz.cmc import load_cmc, plot_cmc
from reid_attn.viz.grid import GridRow, GridStyle, grid_size, render_grid
from reid_attn.viz.ranking import RankedList, rank_gallery, select_queries

__all__ = [
    "AttentionRecorder",
    "GridRow",
    "GridStyle",
    "RankedList",
    "grid_size",
    "load_cmc",
    "overlay_heatmap",
    "plot_cmc",
    "rank_gallery",
    "render_grid",
    "select_queries",
    "upsample_maps",
]
