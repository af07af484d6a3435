"""``python -m reid_attn.visualize ckpt_path=PATH [mode=ranking|attention]``: see what a
checkpoint learned, on the test split of its data (or of ``data=...``).

* ``mode=ranking`` (default): ``num_queries`` queries and their ``topk`` gallery images, green
  frames for correct and red for wrong matches, rank and distance under each (same-identity
  same-camera gallery images removed, flip augmentation and re-ranking as the checkpoint's
  evaluation unless ``flip=`` / ``rerank=`` say otherwise); ``worst=true`` shows the queries with
  the lowest AP. Writes ``ranked_lists.png`` (``worst_ranked_lists.png``) and a ``.json`` twin
  with every path, identity, distance and flag.
* ``mode=attention``: for CBAM, the spatial attention map of the chosen bottleneck of each
  chosen stage, upsampled to the input size and blended onto the image
  (``attention_spatial.png``); for CBAM, SE and ECA, the mean channel weights per stage
  (``attention_channels.png``); the raw maps in ``attention_maps.pt``. Maps are captured with
  forward hooks; the model's forward pass is not changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from reid_attn.config import validate_data_config
from reid_attn.data import Market1501, ReIDDataModule
from reid_attn.data.datasets import Item
from reid_attn.data.image_dataset import read_image
from reid_attn.data.transforms import build_test_transform
from reid_attn.inference import (
    embed_items,
    evaluation_settings,
    input_size,
    load_module,
    resolve_device,
)
from reid_attn.metrics import compute_distance, re_ranking
from reid_attn.module import ReIDModule
from reid_attn.runs.files import run_entry
from reid_attn.viz.attention import (
    AttentionRecorder,
    attention_kind,
    channel_weight_figure,
    compose_panels,
    overlay_heatmap,
    upsample_maps,
)
from reid_attn.viz.figures import format_distance, save_png
from reid_attn.viz.grid import GridRow, GridStyle, render_grid
from reid_attn.viz.ranking import RankedList, rank_gallery, select_queries

MODES = ("ranking", "attention")


def load_test_split(cfg: DictConfig, module: ReIDModule) -> Market1501:
    """The dataset (query and gallery) of ``cfg.data`` when given, else of the checkpoint."""
    if cfg.get("data") is not None:
        data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    elif module.hparams.get("data"):
        data_cfg = dict(module.hparams["data"])
    else:
        raise ValueError(
            f"{cfg.ckpt_path} stores no data config; pass data=... on the command line"
        )
    validate_data_config(OmegaConf.create(data_cfg))
    datamodule = ReIDDataModule(**data_cfg)
    datamodule.setup("test")
    return datamodule.dataset


def evenly_spaced(items: list[Item], count: int) -> list[Item]:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if count < 1:
        raise ValueError(f"the number of images must be >= 1, got {count}")
    if count >= len(items):
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in picks]


def ranking_rows(
    chosen: list[RankedList], query: list[Item], gallery: list[Item], digits: int = 3
) -> list[GridRow]:
    """Grid rows (images read from disk, captions ``#rank id`` / ``d=distance``) for the
    chosen ranked lists."""
    rows = []
    for r in chosen:
        q_path, q_pid, _ = query[r.query]
        captions = [
            f"#{rank} id {gallery[g][1]}\nd={format_distance(dist, digits)}"
            for rank, (g, dist) in enumerate(zip(r.gallery, r.distances, strict=True), start=1)
        ]
        rows.append(
            GridRow(
                query=read_image(q_path),
                gallery=[read_image(gallery[g][0]) for g in r.gallery],
                correct=[bool(c) for c in r.correct],
                query_caption=f"query id {q_pid}\nAP {r.ap:.2f}",
                captions=captions,
            )
        )
    return rows


def ranking_record(chosen: list[RankedList], query: list[Item], gallery: list[Item]) -> list:
    """The shown ranked lists as plain JSON data."""
    record = []
    for r in chosen:
        q_path, q_pid, q_cam = query[r.query]
        record.append(
            {
                "query_index": r.query,
                "query_path": q_path,
                "query_pid": q_pid,
                "query_camid": q_cam,
                "ap": r.ap,
                "num_matches": r.num_matches,
                "ranked": [
                    {
                        "rank": rank,
                        "gallery_index": int(g),
                        "path": gallery[g][0],
                        "pid": gallery[g][1],
                        "camid": gallery[g][2],
                        "distance": float(d),
                        "correct": bool(c),
                    }
                    for rank, (g, d, c) in enumerate(
                        zip(r.gallery, r.distances, r.correct, strict=True), start=1
                    )
                ],
            }
        )
    return record


def visualize_ranking(
    cfg: DictConfig, module: ReIDModule, dataset: Market1501, output_dir: Path
) -> dict[str, Any]:
    """Embed query and gallery, rank, draw the chosen queries; return paths and the lists."""
    size = input_size(module, None, None)
    device = resolve_device(cfg.accelerator)
    style = GridStyle(**OmegaConf.to_container(cfg.grid, resolve=True))
    evaluation = evaluation_settings(module)
    flip = bool(evaluation["flip"] if cfg.flip is None else cfg.flip)
    rerank = bool(evaluation["rerank"] if cfg.rerank is None else cfg.rerank)
    common = (size, cfg.batch_size, cfg.num_workers, device, cfg.progress_bar)
    q_feats = embed_items(module, dataset.query, *common, "embedding query", flip)
    g_feats = embed_items(module, dataset.gallery, *common, "embedding gallery", flip)
    metric = evaluation["distance"]
    distmat = compute_distance(q_feats, g_feats, metric).numpy()
    if rerank:
        distmat = re_ranking(
            distmat,
            compute_distance(q_feats, q_feats, metric),
            compute_distance(g_feats, g_feats, metric),
            k1=evaluation["rerank_k1"],
            k2=evaluation["rerank_k2"],
            lambda_value=evaluation["rerank_lambda"],
        )
        metric = f"re-ranked {metric}"
    ranked = rank_gallery(
        distmat,
        [p for _, p, _ in dataset.query],
        [p for _, p, _ in dataset.gallery],
        [c for _, _, c in dataset.query],
        [c for _, _, c in dataset.gallery],
        topk=cfg.topk,
    )
    indices = None if cfg.query_indices is None else list(cfg.query_indices)
    chosen = select_queries(ranked, cfg.num_queries, cfg.worst, indices)
    rows = ranking_rows(chosen, dataset.query, dataset.gallery, cfg.distance_digits)
    stem = "worst_ranked_lists" if cfg.worst and indices is None else "ranked_lists"
    image_path = output_dir / f"{stem}.png"
    save_png(render_grid(rows, style, num_columns=cfg.topk), image_path, cfg.png_colors)
    json_path = output_dir / f"{stem}.json"
    record = ranking_record(chosen, dataset.query, dataset.gallery)
    json_path.write_text(json.dumps({"distance": metric, "queries": record}, indent=1))
    valid_ap = [r.ap for r in ranked if r.valid]
    shown_ap = np.mean([r.ap for r in chosen if r.valid]) if any(r.valid for r in chosen) else 0
    print(
        f"{len(chosen)} ranked lists ({metric} distance; mean AP shown {shown_ap:.3f}, "
        f"all queries {np.mean(valid_ap):.3f}) -> {image_path}"
    )
    return {
        "image": image_path,
        "json": json_path,
        "ranked": chosen,
        "aps": valid_ap,
        "mean_ap": float(np.mean(valid_ap)),
    }


def visualize_attention(
    cfg: DictConfig, module: ReIDModule, dataset: Market1501, output_dir: Path
) -> dict[str, Any]:
    """Spatial heat maps (CBAM) and channel-weight summary (CBAM, SE, ECA) of query images."""
    acfg = cfg.attention
    height, width = input_size(module, None, None)
    device = resolve_device(cfg.accelerator)
    backbone = module.net.backbone
    kind = attention_kind(backbone.layer1[0].attn)
    if kind == "none":
        raise ValueError(
            f"{cfg.ckpt_path} has no attention modules (attention 'none'); nothing to show"
        )
    stages = [int(s) for s in acfg.stages]
    transform = build_test_transform(height, width)
    module = module.to(device).eval()

    def run(items: list[Item], spatial: bool) -> AttentionRecorder:
        recorder = AttentionRecorder(backbone, stages, acfg.block, spatial=spatial)
        with recorder, torch.inference_mode():
            for start in range(0, len(items), cfg.batch_size):
                batch = [
                    transform(read_image(p)) for p, _, _ in items[start : start + cfg.batch_size]
                ]
                module.net.embed(torch.stack(batch).to(device))
        return recorder

    outputs: dict[str, Any] = {"kind": kind}
    saved: dict[str, Any] = {}
    if kind == "cbam":
        shown = evenly_spaced(dataset.query, acfg.num_images)
        spatial = run(shown, spatial=True).spatial
        rows = []
        for i, (path, _, _) in enumerate(shown):
            image = np.asarray(read_image(path).resize((width, height), Image.BILINEAR))
            row = [image]
            for stage in stages:
                heat = upsample_maps(spatial[stage][i : i + 1], (height, width), acfg.normalize)
                row.append(overlay_heatmap(image, heat[0, 0], acfg.alpha, acfg.colormap))
            rows.append(row)
        titles = ["input", *(f"layer{s}" for s in stages)]
        panel = compose_panels(rows, titles, acfg.padding, acfg.title_height, acfg.font_size)
        outputs["spatial_image"] = output_dir / "attention_spatial.png"
        save_png(panel, outputs["spatial_image"], cfg.png_colors)
        saved["spatial"] = spatial
        saved["spatial_paths"] = [p for p, _, _ in shown]
        for stage in stages:
            maps = spatial[stage]
            print(
                f"layer{stage} spatial attention {tuple(maps.shape[2:])}: mean "
                f"{maps.mean():.3f}, min {maps.min():.3f}, max {maps.max():.3f}"
            )
    summary_items = evenly_spaced(dataset.query, acfg.channel_images)
    channel = run(summary_items, spatial=False).channel
    fig = channel_weight_figure(
        channel, f"{kind.upper()} channel weights, {len(summary_items)} query images", acfg.figsize
    )
    outputs["channel_image"] = output_dir / "attention_channels.png"
    fig.savefig(outputs["channel_image"], dpi=acfg.dpi)
    saved["channel"] = channel
    saved["channel_paths"] = [p for p, _, _ in summary_items]
    outputs["maps"] = output_dir / "attention_maps.pt"
    torch.save(saved, outputs["maps"])
    written = ", ".join(str(outputs[k]) for k in ("spatial_image", "channel_image") if k in outputs)
    print(f"{kind} attention of stages {stages} -> {written}")
    outputs.update(spatial=saved.get("spatial"), channel=channel)
    return outputs


def validate_visualize_config(cfg: DictConfig) -> None:
    """Check the values :func:`visualize` reads before any work; raise ``ValueError``."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode!r} is not valid; allowed values: {', '.join(MODES)}")
    positive = ["batch_size", "distance_digits"]
    positive += ["num_queries", "topk"] if cfg.mode == "ranking" else []
    positive += ["attention.num_images", "attention.channel_images"]
    for key in positive:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if not 0 <= cfg.png_colors <= 256:
        raise ValueError(f"png_colors={cfg.png_colors} must lie in 0..256 (0 = full colour)")
    if not 0 <= cfg.attention.alpha <= 1:
        raise ValueError(f"attention.alpha={cfg.attention.alpha} must lie in [0, 1]")


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """Run the ``cfg.mode`` visualisation of ``cfg.ckpt_path``; files go to ``cfg.output_dir``."""
    validate_visualize_config(cfg)
    module = load_module(cfg.ckpt_path)
    dataset = load_test_split(cfg, module)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "ranking":
        return visualize_ranking(cfg, module, dataset, output_dir)
    return visualize_attention(cfg, module, dataset, output_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="visualize")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    run_entry(visualize, cfg)


if __name__ == "__main__":
    main()
