"""Visualisation: ranked lists, the image grid, attention hooks and overlays, CMC plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from reid_attn.metrics import evaluate_rank
from reid_attn.models import build_reid_net
from reid_attn.visualize import visualize
from reid_attn.viz.attention import (
    AttentionRecorder,
    channel_weight_figure,
    compose_panels,
    overlay_heatmap,
    upsample_maps,
)
from reid_attn.viz.cmc import RunFilesError, cmc_figure, load_cmc, plot_cmc
from reid_attn.viz.cmc import main as cmc_main
from reid_attn.viz.figures import format_distance
from reid_attn.viz.grid import GridRow, GridStyle, cell_box, grid_size, render_grid
from reid_attn.viz.ranking import rank_gallery, select_queries

# ----------------------------------------------------------------------------- a known case
# Query 0: pid 1, camera 0. Gallery (distance to query 0, pid, camera):
#   g0 0.1 pid 1 cam 0  -> same id AND camera: removed
#   g1 0.2 pid 2 cam 1  -> wrong            (rank 1)
#   g2 0.3 pid 1 cam 2  -> correct          (rank 2; tie with g3, lower index first)
#   g3 0.3 pid 0 cam 1  -> wrong distractor (rank 3)
#   g4 0.5 pid 1 cam 1  -> correct          (rank 4)
#   g5 0.9 pid 3 cam 0  -> wrong            (rank 5)
# AP = (1/2 + 2/4) / 2 = 0.5. Query 1 (pid 3, camera 0) only matches g5 on its own camera.
DIST = np.array([[0.1, 0.2, 0.3, 0.3, 0.5, 0.9], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
Q_PIDS, Q_CAMS = [1, 3], [0, 0]
G_PIDS, G_CAMS = [1, 2, 1, 0, 1, 3], [0, 1, 2, 1, 1, 0]


def test_ranked_list_of_a_known_case() -> None:
    first, second = rank_gallery(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, topk=10)
    assert first.gallery.tolist() == [1, 2, 3, 4, 5]
    assert first.correct.tolist() == [False, True, False, True, False]
    assert first.distances.tolist() == [0.2, 0.3, 0.3, 0.5, 0.9]
    assert first.num_matches == 2 and first.ap == pytest.approx(0.5)
    assert second.gallery.tolist() == [4, 3, 2, 1, 0]  # g5 removed (same id and camera)
    assert not second.correct.any() and not second.valid and np.isnan(second.ap)
    top2 = rank_gallery(torch.tensor(DIST), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, topk=2)[0]
    assert top2.gallery.tolist() == [1, 2] and top2.ap == pytest.approx(0.5)


def test_ranking_agrees_with_evaluate_rank_on_random_data() -> None:
    rng = np.random.default_rng(0)
    dist = rng.random((30, 80))
    q_pids, g_pids = rng.integers(0, 12, 30), rng.integers(0, 8, 80)  # pids 8..11: no match
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 80)
    ranked = rank_gallery(dist, q_pids, g_pids, q_cams, g_cams, topk=1)
    reference = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=1)
    valid = [r for r in ranked if r.valid]
    assert len(valid) < len(ranked)  # some queries have no match: they must be skipped
    assert np.mean([r.ap for r in valid]) == pytest.approx(reference["mAP"], abs=1e-12)
    assert np.mean([r.correct[0] for r in valid]) == pytest.approx(reference["cmc"][0])


def test_select_queries_worst_even_and_explicit() -> None:
    rng = np.random.default_rng(1)
    dist = rng.random((12, 40))
    ranked = rank_gallery(dist, np.arange(12) % 4, np.arange(40) % 4, np.zeros(12), np.ones(40))
    worst = select_queries(ranked, 3, worst=True)
    aps = sorted(r.ap for r in ranked)
    assert [r.ap for r in worst] == aps[:3]
    even = select_queries(ranked, 4)
    assert [r.query for r in even] == [0, 4, 7, 11]
    assert [r.query for r in select_queries(ranked, 50)] == list(range(12))
    assert [r.query for r in select_queries(ranked, 1, indices=[5, 2])] == [5, 2]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: select_queries(r, 0), "num_queries"),
        (lambda r: select_queries(r, 2, indices=[7]), "out of range"),
        (lambda r: select_queries(r[1:], 2), "no query has a true match"),
        (lambda r: rank_gallery(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, topk=0), "topk"),
        (lambda r: rank_gallery(DIST, [1], G_PIDS, Q_CAMS, G_CAMS), r"q_pids must have shape"),
        (lambda r: rank_gallery(DIST[0], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS), "distmat"),
    ],
)
def test_ranking_bad_input(call, message) -> None:
    ranked = rank_gallery(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match=message):
        call(ranked)


# ----------------------------------------------------------------------------- grid

SMALL = GridStyle(
    cell_height=32, cell_width=16, border=2, caption_height=12, padding=4, query_gap=8, font_size=8
)
GRAY = (128, 128, 128)


def solid(color: tuple[int, int, int], size: tuple[int, int] = (20, 40)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_grid_size_formula_by_hand() -> None:
    # fw = 16 + 4 = 20, fh = 32 + 4 = 36, slot = 36 + 12 = 48
    assert grid_size(3, 4, SMALL) == (5 * 20 + 6 * 4 + 8, 3 * 48 + 4 * 4) == (132, 160)
    assert cell_box(0, 0, SMALL) == (4, 4, 24, 40)
    assert cell_box(1, 1, SMALL) == (4 + 20 + 4 + 8, 4 + 48 + 4, 56, 92)


def test_grid_borders_follow_correctness_of_the_known_case() -> None:
    ranked = rank_gallery(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, topk=4)[0]
    palette = [(10 * i, 200 - 10 * i, 50) for i in range(len(G_PIDS))]  # one colour per image
    row = GridRow(
        query=solid(GRAY),
        gallery=[solid(palette[g]) for g in ranked.gallery],
        correct=ranked.correct.tolist(),
        query_caption="query",
        captions=[f"#{i}\nd" for i in range(1, 5)],
    )
    canvas = render_grid([row, row], SMALL)
    assert canvas.size == grid_size(2, 4, SMALL)
    expected = [SMALL.wrong_color, SMALL.correct_color, SMALL.wrong_color, SMALL.correct_color]
    for r in range(2):
        x0, y0, x1, y1 = cell_box(r, 0, SMALL)
        assert canvas.getpixel((x0, y0)) == SMALL.query_color
        assert canvas.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == GRAY
        for column, (color, g) in enumerate(zip(expected, ranked.gallery, strict=True), 1):
            x0, y0, x1, y1 = cell_box(r, column, SMALL)
            for corner in ((x0, y0), (x1 - 1, y1 - 1), (x0 + 1, (y0 + y1) // 2)):
                assert canvas.getpixel(corner) == color
            assert canvas.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == palette[g]
            caption = np.asarray(canvas.crop((x0, y1, x1, y1 + SMALL.caption_height)))
            assert (caption < 100).any()  # text was drawn under the image
    assert canvas.getpixel((0, 0)) == SMALL.background


def test_grid_leaves_short_rows_blank_and_rejects_bad_rows() -> None:
    canvas = render_grid([GridRow(solid(GRAY), [solid(GRAY)], [True])], SMALL, num_columns=3)
    assert canvas.size == grid_size(1, 3, SMALL)
    x0, y0, _, _ = cell_box(0, 2, SMALL)
    assert canvas.getpixel((x0, y0)) == SMALL.background
    with pytest.raises(ValueError, match="correctness flags"):
        GridRow(solid(GRAY), [solid(GRAY)], [True, False])
    with pytest.raises(ValueError, match=r"0\.\.255"):
        GridStyle(correct_color=(0, 300, 0))
    with pytest.raises(ValueError, match="cell_width"):
        GridStyle(cell_width=0)
    with pytest.raises(ValueError, match="at least one row"):
        render_grid([], SMALL)


def test_format_distance() -> None:
    assert format_distance(1681.4) == "1681"
    assert format_distance(0.51234) == "0.512"
    assert format_distance(12.345, digits=2) == "12"


# ----------------------------------------------------------------------------- attention


def test_upsample_maps_size_and_range() -> None:
    maps = torch.rand(3, 1, 8, 4) * 0.5 + 0.2
    maps[2] = 0.7  # a constant map
    up = upsample_maps(maps, (64, 32), normalize=True)
    assert up.shape == (3, 1, 64, 32)
    assert torch.allclose(up[:2].amin((2, 3)), torch.zeros(2, 1))
    assert torch.allclose(up[:2].amax((2, 3)), torch.ones(2, 1))
    assert torch.equal(up[2], torch.zeros(1, 64, 32))
    raw = upsample_maps(maps, (64, 32), normalize=False)
    assert raw.min() >= maps.min() - 1e-6 and raw.max() <= maps.max() + 1e-6
    with pytest.raises(ValueError, match=r"\(B, 1, h, w\)"):
        upsample_maps(torch.rand(2, 3, 4, 4), (8, 8))


def test_overlay_heatmap_blends_exactly() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    heat = rng.random((64, 32))
    colors = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    out = overlay_heatmap(image, heat, alpha=0.3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, np.round(0.7 * image + 0.3 * colors).astype(np.uint8))
    assert np.array_equal(overlay_heatmap(Image.fromarray(image), heat, alpha=0.0), image)
    assert np.array_equal(overlay_heatmap(image, torch.from_numpy(heat), 1.0), np.round(colors))
    with pytest.raises(ValueError, match="differs from image size"):
        overlay_heatmap(image, heat[:10])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay_heatmap(image, heat + 1)
    with pytest.raises(ValueError, match="colormap"):
        overlay_heatmap(image, heat, colormap="nope")


@pytest.fixture(scope="module")
def cbam_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_reid_net(num_classes=4, attention="cbam").eval()


def test_hooked_spatial_maps_equal_direct_cbam_computation(cbam_net) -> None:
    images = torch.randn(2, 3, 64, 32)
    backbone = cbam_net.backbone
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        getattr(backbone, f"layer{s}")[-1].attn.register_forward_hook(
            lambda m, i, o, s=s: inputs.__setitem__(s, i[0].detach().clone())
        )
        for s in (1, 2, 3, 4)
    ]
    with torch.no_grad():
        plain = cbam_net.embed(images)
        with AttentionRecorder(backbone, stages=[1, 2, 3, 4]) as recorder:
            hooked = cbam_net.embed(images)
    for handle in handles:
        handle.remove()
    assert torch.equal(plain, hooked)  # recording does not change the forward pass
    sizes = {1: (16, 8), 2: (8, 4), 3: (4, 2), 4: (4, 2)}  # last stride 1
    for stage, (h, w) in sizes.items():
        cbam = getattr(backbone, f"layer{stage}")[-1].attn
        with torch.no_grad():
            channel = cbam.channel(inputs[stage])
            spatial = cbam.spatial(inputs[stage] * channel)
        assert recorder.spatial[stage].shape == (2, 1, h, w)
        assert torch.allclose(recorder.spatial[stage], spatial, atol=1e-6)
        assert torch.allclose(recorder.channel[stage], channel.flatten(1), atol=1e-6)
        assert recorder.spatial[stage].min() > 0 and recorder.spatial[stage].max() < 1
        assert not cbam._forward_hooks and not cbam.spatial._forward_hooks  # hooks removed


def test_recorder_channel_weights_of_se_and_errors(cbam_net) -> None:
    torch.manual_seed(0)
    se_net = build_reid_net(num_classes=4, attention="se").eval()
    images = torch.randn(3, 3, 64, 32)
    captured = {}
    attn = se_net.backbone.layer2[1].attn
    handle = attn.register_forward_hook(lambda m, i, o: captured.setdefault("x", i[0].clone()))
    with torch.no_grad(), AttentionRecorder(se_net.backbone, [2], block=1, spatial=False) as rec:
        se_net.embed(images)
        se_net.embed(images[:1])  # a second pass appends along the batch axis
    handle.remove()
    assert rec.channel[2].shape == (4, 512)
    with torch.no_grad():
        assert torch.allclose(rec.channel[2][:3], attn.channel_weights(captured["x"]).flatten(1))
    with pytest.raises(ValueError, match="need a CBAM model"):
        AttentionRecorder(se_net.backbone, [1])
    with pytest.raises(ValueError, match="valid stages"):
        AttentionRecorder(cbam_net.backbone, [5])
    with pytest.raises(ValueError, match="layer4, which has 3 bottlenecks"):
        AttentionRecorder(cbam_net.backbone, [4], block=3)
    plain = build_reid_net(num_classes=4, attention="none")
    with pytest.raises(ValueError, match="no attention"):
        AttentionRecorder(plain.backbone, [1], spatial=False)


def test_compose_panels_size_and_channel_figure() -> None:
    panels = [[np.full((64, 32, 3), v, np.uint8) for v in (0, 100, 200)] for _ in range(2)]
    canvas = compose_panels(panels, ["a", "b", "c"], padding=4, title_height=16)
    assert canvas.size == (3 * 32 + 4 * 4, 16 + 2 * 64 + 3 * 4)
    assert canvas.getpixel((4 + 32 + 4 + 10, 16 + 4 + 10)) == (100, 100, 100)
    weights = {2: torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 0.5]]), 1: torch.rand(4, 8)}
    fig = channel_weight_figure(weights)
    axes = fig.axes
    assert [ax.get_title().split(":")[0] for ax in axes] == ["layer1", "layer2"]
    assert np.allclose(axes[1].lines[0].get_ydata(), [0.8, 0.5, 0.2])


# ----------------------------------------------------------------------------- CMC


def write_run(path: Path, cmc: list[float], mean_ap: float) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"rank1": cmc[0], "mAP": mean_ap, "cmc": cmc}))
    return path


def test_cmc_plot_of_two_runs(tmp_path) -> None:
    a = write_run(tmp_path / "a", [0.5, 0.7, 0.9, 1.0], 0.514)
    b = write_run(tmp_path / "b", [0.2, 0.4, 0.6, 0.8], 0.3)
    fig = cmc_figure([("a", *load_cmc(a)), ("b", *load_cmc(b))], max_rank=3)
    ax = fig.axes[0]
    assert np.allclose(ax.lines[0].get_ydata(), [50, 70, 90])
    assert np.allclose(ax.lines[1].get_xdata(), [1, 2, 3])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "a (mAP 51.4%)",
        "b (mAP 30.0%)",
    ]
    out = plot_cmc([a, b / "metrics.json"], tmp_path / "plots" / "cmc.png", dpi=50)
    with Image.open(out) as image:
        assert image.size == (250, 190)  # figsize (5, 3.8) inches at 50 dpi


def test_cmc_bad_input(tmp_path, capsys) -> None:
    with pytest.raises(RunFilesError, match="does not exist"):
        load_cmc(tmp_path / "missing")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text('{"rank1": 0.5}')
    with pytest.raises(RunFilesError, match="no 'cmc'"):
        load_cmc(tmp_path / "old")
    with pytest.raises(ValueError, match="2 labels given for 1 runs"):
        plot_cmc([tmp_path / "old"], tmp_path / "x.png", labels=["a", "b"])
    with pytest.raises(SystemExit, match=r"^error: .*missing.*does not exist"):
        cmc_main([str(tmp_path / "missing"), "--out", str(tmp_path / "c.png")])


# ----------------------------------------------------------------------------- end to end


def test_ranking_visualisation_of_a_trained_run(trained_run, compose_cfg, tmp_path) -> None:
    run_dir, results = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(
        "visualize",
        [
            f"ckpt_path={ckpt}",
            f"output_dir={tmp_path}",
            "num_queries=3",
            "topk=5",
            "batch_size=32",
            "progress_bar=false",
            "grid.cell_height=64",
            "grid.cell_width=32",
        ],
    )
    out = visualize(cfg)
    # The per-query APs of the ranking tool average to the evaluation's mAP.
    assert out["mean_ap"] == pytest.approx(results["mAP"], abs=1e-4)
    style = GridStyle(**{**GridStyle().__dict__, "cell_height": 64, "cell_width": 32})
    with Image.open(out["image"]) as image:
        assert image.size == grid_size(3, 5, style)
        canvas = image.convert("RGB")
    record = json.loads(out["json"].read_text())["queries"]
    assert len(record) == 3
    for r, query in enumerate(record):
        distances = [g["distance"] for g in query["ranked"]]
        assert distances == sorted(distances)
        for g in query["ranked"]:
            assert g["correct"] == (g["pid"] == query["query_pid"])
            assert not (g["pid"] == query["query_pid"] and g["camid"] == query["query_camid"])
            x0, y0, _, _ = cell_box(r, g["rank"], style)
            color = style.correct_color if g["correct"] else style.wrong_color
            assert canvas.getpixel((x0, y0)) == color
    assert out["image"].name == "ranked_lists.png"


def test_attention_visualisation_of_a_trained_run(trained_run, compose_cfg, tmp_path) -> None:
    run_dir, _ = trained_run
    cfg = compose_cfg(
        "visualize",
        [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"output_dir={tmp_path}",
            "mode=attention",
            "attention.num_images=2",
            "attention.channel_images=5",
            "attention.stages=[2,4]",
            "progress_bar=false",
        ],
    )
    out = visualize(cfg)
    assert out["kind"] == "cbam"
    with Image.open(out["spatial_image"]) as image:  # 3 panels of 64x32, 2 rows
        assert image.size == (3 * 32 + 4 * 4, 16 + 2 * 64 + 3 * 4)
    assert out["channel_image"].is_file()
    saved = torch.load(out["maps"], weights_only=True)
    assert saved["spatial"][2].shape == (2, 1, 8, 4) and saved["spatial"][4].shape == (2, 1, 4, 2)
    assert saved["channel"][4].shape == (5, 2048)
    assert ((saved["spatial"][2] > 0) & (saved["spatial"][2] < 1)).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mode=movie"], "mode='movie' is not valid; allowed values: ranking, attention"),
        (["ckpt_path=/no/such.ckpt"], "checkpoint /no/such.ckpt does not exist"),
        (["topk=0"], "topk must be a positive integer"),
    ],
)
def test_visualize_bad_input_is_one_line(trained_run, compose_cfg, tmp_path, overrides, message):
    run_dir, _ = trained_run
    from reid_attn.runs.files import run_entry

    base = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path}"]
    cfg = compose_cfg("visualize", [*base, "progress_bar=false", *overrides])
    with pytest.raises(SystemExit) as excinfo:
        run_entry(visualize, cfg)
    assert str(excinfo.value).startswith(f"error: {message}")
    assert "\n" not in str(excinfo.value)


def checkpoint_with_attention(run_dir: Path, attention: str, path: Path) -> Path:
    """The trained run's hyper-parameters with another attention type, fresh weights."""
    from reid_attn.module import ReIDModule
    from reid_attn.runs.files import load_checkpoint

    hparams = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["hyper_parameters"]
    hparams = {**hparams, "model": {**hparams["model"], "attention": attention}}
    hparams["model"]["attention_kwargs"] = {"reduction": 16} if attention == "se" else {}
    torch.manual_seed(0)
    module = ReIDModule(**hparams)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, path)
    return path


def test_attention_visualisation_of_se_and_none(trained_run, compose_cfg, tmp_path) -> None:
    run_dir, _ = trained_run
    base = ["mode=attention", "attention.channel_images=3", "progress_bar=false"]
    se = checkpoint_with_attention(run_dir, "se", tmp_path / "se.ckpt")
    out = visualize(
        compose_cfg("visualize", [f"ckpt_path={se}", f"output_dir={tmp_path / 'se'}", *base])
    )
    assert out["kind"] == "se" and "spatial_image" not in out and out["spatial"] is None
    assert out["channel_image"].is_file()
    assert {s: tuple(w.shape) for s, w in out["channel"].items()} == {
        1: (3, 256),
        2: (3, 512),
        3: (3, 1024),
        4: (3, 2048),
    }
    assert all(((w > 0) & (w < 1)).all() for w in out["channel"].values())
    plain = checkpoint_with_attention(run_dir, "none", tmp_path / "none.ckpt")
    cfg = compose_cfg("visualize", [f"ckpt_path={plain}", f"output_dir={tmp_path / 'n'}", *base])
    with pytest.raises(ValueError, match="has no attention modules"):
        visualize(cfg)


def test_worst_ranking_with_flip_and_rerank_like_evaluation(trained_run, compose_cfg, tmp_path):
    from reid_attn.evaluate import evaluate

    run_dir, results = trained_run
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    both = ["rerank=true", "flip=true"]
    evaluated = evaluate(compose_cfg("evaluate", [ckpt, f"output_dir={tmp_path / 'e'}", *both]))
    overrides = [ckpt, f"output_dir={tmp_path / 'v'}", *both, "worst=true", "num_queries=2"]
    out = visualize(compose_cfg("visualize", [*overrides, "batch_size=32", "progress_bar=false"]))
    assert out["mean_ap"] == pytest.approx(evaluated["mAP"], abs=1e-4)
    # the settings change the ranking (by how much depends on the tiny model, which the CPU's
    # kernels and precision shape: 5e-4 of mAP on one run, more on others)
    assert evaluated["mAP"] != results["mAP"]
    assert json.loads(out["json"].read_text())["distance"] == "re-ranked euclidean"
    assert out["image"].name == "worst_ranked_lists.png"
    assert [r.ap for r in out["ranked"]] == sorted(out["aps"])[:2]
