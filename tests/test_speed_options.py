"""Speed options: channels-last memory format, bf16 mixed precision, torch.compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import load_experiment
from reid_attn.module import ReIDModule
from reid_attn.train import train


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


def test_channels_last_gives_the_same_embeddings_and_gradients(compose_cfg) -> None:
    plain = _module(compose_cfg)
    nhwc = _module(compose_cfg, "model.channels_last=true")
    nhwc.load_state_dict(plain.state_dict())
    conv = nhwc.net.backbone.layer1[0].conv2.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.backbone.layer1[0].conv2.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    images = torch.randn(8, 3, 64, 32)
    pids = torch.arange(4).repeat_interleave(2)
    for module in (plain, nhwc):
        module.train()
        module.compute_losses(module.net(module.prepare_images(images), pids), pids)[
            "loss"
        ].backward()
    # Summation order differs between the memory formats: equal up to float32 rounding.
    for name in ("conv1.weight", "layer4.2.attn.channel.fc1.weight"):
        a = nhwc.net.backbone.get_parameter(name).grad
        b = plain.net.backbone.get_parameter(name).grad
        assert (a - b).norm() <= 1e-3 * b.norm(), name
    plain.eval()
    nhwc.eval()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(images), plain(images), rtol=1e-4, atol=1e-4)


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


@pytest.mark.parametrize("option", ["trainer.precision=bf16-mixed", "model.channels_last=true"])
def test_training_runs_with_speed_option(train_cfg_factory, option: str) -> None:
    cfg = train_cfg_factory(option)
    results = train(cfg)
    saved = json.loads(Path(cfg.output_dir, "metrics.json").read_text())
    assert saved["mAP"] == pytest.approx(results["mAP"])
    assert 0.0 < results["mAP"] <= 1.0


@pytest.mark.slow
def test_compiled_network_trains_and_keeps_parameter_names(compose_cfg) -> None:
    plain = _module(compose_cfg, "attention=se")
    compiled = _module(compose_cfg, "attention=se", "model.compile=true")
    assert list(compiled.state_dict()) == list(plain.state_dict())
    compiled.load_state_dict(plain.state_dict())
    images = torch.randn(4, 3, 64, 32)
    plain.eval()
    compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), plain(images), rtol=1e-3, atol=1e-3)


def test_bench_train_variants_combine() -> None:
    bench = load_experiment("bench_train")
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
    spec = {"size": [32, 16], "variant": "fp32", "device": "cpu", "batch": 4,
            "attention": "cbam"}
    seconds, per_op = profiler.profile_steps(spec, warmup=1, steps=1)
    assert per_op["aten::adaptive_max_pool2d"] > 0  # CBAM's spatial max pooling ran
    assert 0.3 * seconds * 1000 < sum(per_op.values()) < 1.5 * seconds * 1000
