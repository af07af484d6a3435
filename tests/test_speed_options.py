"""Speed options: channels-last memory format, bf16 mixed precision, the compiled training
step, fused Adam, the loss read every N steps, the trainer=gpu_fast preset and the pace
benchmark's loss tracking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import load_experiment, make_loss_nan_at_step
from reid_attn.config import ConfigError
from reid_attn.module import ReIDModule
from reid_attn.runs.files import run_entry
from reid_attn.train import build_trainer, train


def _module(compose_cfg, *overrides: str) -> ReIDModule:
    cfg = compose_cfg("train", ["output_dir=unused", *overrides])
    torch.manual_seed(0)
    return ReIDModule(
        num_classes=4,
        **{
            k: OmegaConf.to_container(cfg[k])
            for k in ("model", "loss", "optimizer", "scheduler", "evaluation")
        },
    )


@pytest.mark.numerics
def test_channels_last_gives_the_same_embeddings_and_gradients(compose_cfg) -> None:
    """The memory format changes the layout, not the arithmetic: in float64 the two formats
    agree to rounding (1e-9 relative). In float32 they do not by a margin that holds on every
    CPU: the kernels of each format sum in other orders, and training-mode BatchNorm over 8
    images cancels (x - mean) terms in the backward pass, amplifying the difference to ~1% of
    a gradient's norm on AVX2 kernels (1.4% seen at layer2.0.conv1 on an AMD EPYC) against
    0.2% on AVX-512. float64 tests the logic on any CPU; float32 speed is bench_train's."""
    plain = _module(compose_cfg).double()
    nhwc = _module(compose_cfg, "model.channels_last=true").double()
    nhwc.load_state_dict(plain.state_dict())
    conv = nhwc.net.backbone.layer1[0].conv2.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.backbone.layer1[0].conv2.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    images = torch.randn(8, 3, 64, 32, dtype=torch.float64)
    pids = torch.arange(4).repeat_interleave(2)
    losses = {}
    for module in (plain, nhwc):  # training mode: batch statistics, the joint circle loss
        module.train()
        losses[module] = module.compute_losses(module.net(module.prepare_images(images)), pids)
        losses[module]["loss"].backward()
    torch.testing.assert_close(losses[nhwc]["loss"], losses[plain]["loss"], rtol=1e-9, atol=0)
    for name, param in plain.net.backbone.named_parameters():
        a, b = nhwc.net.backbone.get_parameter(name).grad, param.grad
        assert (a - b).norm() <= 1e-9 * b.norm() + 1e-12, name
    with torch.no_grad():
        plain.eval()
        nhwc.eval()
        torch.testing.assert_close(nhwc(images), plain(images), rtol=1e-9, atol=1e-12)


@pytest.mark.numerics
def test_bf16_autocast_step_is_close_to_fp32(compose_cfg) -> None:
    module = _module(compose_cfg)
    module.eval()
    images = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        full = module(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = module(images)
    assert half.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(half.float(), full).min()
    assert cosine > 0.99  # bf16 keeps 8 bits of mantissa: close, not equal


@pytest.mark.parametrize(
    "option",
    [
        "trainer.precision=bf16-mixed",
        "model.channels_last=true",
        "data.pipeline=loader",
        "loss_check_every_n_steps=3",
    ],
)
def test_training_runs_with_speed_option(train_cfg_factory, option: str) -> None:
    # two steps are enough to show the option trains and evaluates (bf16 autocast on a CPU
    # without native bf16 is emulated, several times slower than float32)
    cfg = train_cfg_factory(option, "trainer.limit_train_batches=2")
    results = train(cfg)
    saved = json.loads(Path(cfg.output_dir, "metrics.json").read_text())
    assert saved["mAP"] == pytest.approx(results["mAP"])
    assert 0.0 < results["mAP"] <= 1.0


def test_training_step_is_one_graph_without_host_synchronisation(compose_cfg) -> None:
    # dynamo traces the step's forward and losses whole: a value read on the host (a
    # data-dependent branch, .item(), boolean-mask indexing) would break the graph
    module = _module(compose_cfg, "attention=cbam")
    module.train()
    images, pids = torch.randn(8, 3, 64, 32), torch.arange(4).repeat_interleave(2)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module.forward_losses)(images, pids)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_compiled_step_tracks_the_eager_step(compose_cfg) -> None:
    # three Adam steps from the same weights on the same batches: fp32 on the CPU, so only the
    # order of the compiled kernels' sums differs
    pace = load_experiment("pace")
    losses = {}
    for mode in (None, "default"):
        spec = pace.RunSpec(
            attention="cbam",
            device="cpu",
            size=(64, 32),
            identities=4,
            instances=2,
            precision="fp32",
            compile_mode=mode,
            channels_last=False,
            num_classes=16,
            cache_images=64,
        )
        runner = pace.PaceRunner(spec)
        losses[mode] = runner.track(3)
        if mode:
            assert runner.module.compiled
            assert list(runner.module.state_dict()) == list(runner.initial_state)
    eager, fast = np.array(losses[None]), np.array(losses["default"])
    assert eager[2] < eager[0]  # it trains
    np.testing.assert_allclose(fast, eager, rtol=1e-3)


def test_tracking_verdict_scales_the_tolerance_with_the_bf16_effect() -> None:
    pace = load_experiment("pace")
    eager_fp32 = [10.0 - 0.01 * i for i in range(40)]
    eager = [v * 1.01 for v in eager_fp32]  # bf16 moves the window means by 1 %
    assert pace.tracking_deviation(eager, eager_fp32) == pytest.approx(0.01)
    close = [v * 1.015 for v in eager]
    far = [v * 1.05 for v in eager]
    verdict = pace.tracking_verdict(close, eager, eager_fp32)
    assert verdict["tolerance"] == pytest.approx(max(2 * 0.01, pace.TRACKING_FLOOR))
    assert verdict["tracks"] and verdict["deviation"] == pytest.approx(0.015)
    assert not pace.tracking_verdict(far, eager, eager_fp32)["tracks"]
    # a single bad window is enough to fail
    spike = [*eager[:20], *[v * 1.5 for v in eager[20:]]]
    assert not pace.tracking_verdict(spike, eager, eager_fp32)["tracks"]


def test_fused_adam_when_the_parameters_are_on_cuda(compose_cfg) -> None:
    cpu = _module(compose_cfg).configure_optimizers()["optimizer"]
    assert not cpu.defaults["fused"]  # auto: the CPU keeps torch's default
    forced = _module(compose_cfg, "optimizer.fused=true").configure_optimizers()["optimizer"]
    assert forced.defaults["fused"] is True
    plain = _module(compose_cfg, "optimizer.fused=false").configure_optimizers()["optimizer"]
    assert plain.defaults["fused"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_adam_on_cuda(compose_cfg) -> None:
    optimizer = _module(compose_cfg).cuda().configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True


def test_gpu_fast_preset_sets_every_fast_option(compose_cfg) -> None:
    cfg = compose_cfg(
        "train",
        ["experiment=paper_market1501", "trainer=gpu_fast", "data=synthetic_large", "output_dir=x"],
    )
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert cfg.trainer.enable_progress_bar is False
    assert (cfg.model.compile, cfg.model.compile_mode, cfg.model.channels_last) == (
        True,
        "reduce-overhead",
        True,
    )
    assert cfg.optimizer.fused == "auto" and cfg.data.pipeline == "auto"
    assert cfg.loss_check_every_n_steps == cfg.trainer.log_every_n_steps == 50
    assert (cfg.trainer.max_epochs, cfg.scheduler.milestones) == (120, [40, 70])  # the paper's
    assert cfg.data.height == 256 and cfg.data.eval_batch_size == 1024


def test_last_checkpoint_every_n_epochs_holds_the_last_epoch(train_cfg_factory) -> None:
    cfg = train_cfg_factory(
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=1",
        "checkpoint.every_n_epochs=2",
        "trainer.precision=32-true",  # resolved (train resolves auto itself)
    )
    trainer, last = build_trainer(cfg.trainer, Path(cfg.output_dir), None, last_every_n_epochs=2)
    callback = next(c for c in trainer.checkpoint_callbacks if c.monitor is None)
    assert callback._every_n_epochs == 2 and last.name == "last.ckpt"
    train(cfg)
    saved = torch.load(Path(cfg.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (3, 4)
    with pytest.raises(ConfigError, match=r"every_n_epochs=3 must divide trainer\.max_epochs=4"):
        train(train_cfg_factory("trainer.max_epochs=4", "checkpoint.every_n_epochs=3", run="b"))


def test_nan_loss_read_every_n_steps_never_reaches_a_checkpoint(
    train_cfg_factory, monkeypatch
) -> None:
    make_loss_nan_at_step(monkeypatch, 1)
    # one step an epoch, the loss read every 5 steps: the NaN of step 1 is found before the
    # epoch-1 checkpoints (best, on validation, and last) are written
    cfg = train_cfg_factory(
        "trainer.max_epochs=3", "+trainer.limit_train_batches=1", "loss_check_every_n_steps=5"
    )
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as info:
        run_entry(train, cfg)
    assert info.value.code.startswith(
        "error: training stopped: the loss is not finite at or before global step 1 "
        "(loss_check_every_n_steps=5) (epoch 1"
    )
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 1)
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert [p.name for p in last.parent.glob("best-*")] == ["best-epoch000.ckpt"]


def test_bench_train_variants_combine() -> None:
    bench = load_experiment("harness")  # bench_train's and profile_attention's variants
    assert bench.variant_overrides("fp32") == []
    assert bench.variant_overrides("bf16+channels_last") == [
        "trainer.precision=bf16-mixed",
        "model.channels_last=true",
    ]
    with pytest.raises(KeyError):
        bench.variant_overrides("fp8")
    # "heap" changes the worker process's malloc settings, not the config
    assert bench.variant_overrides("heap+bf16") == ["trainer.precision=bf16-mixed"]
    assert "mmap_threshold" in bench.VARIANT_ENV["heap"]["GLIBC_TUNABLES"]


def test_profile_attention_accounts_for_the_extra_time() -> None:
    # The per-operator self times of one profiled step add up to (most of) the step's time.
    profiler = load_experiment("profile_attention")
    spec = {"size": [32, 16], "variant": "fp32", "device": "cpu", "batch": 4, "attention": "cbam"}
    seconds, per_op = profiler.profile_steps(spec, warmup=1, steps=1)
    assert per_op["aten::adaptive_max_pool2d"] > 0  # CBAM's spatial max pooling ran
    assert 0.3 * seconds * 1000 < sum(per_op.values()) < 1.5 * seconds * 1000
