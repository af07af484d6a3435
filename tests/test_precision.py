"""trainer.precision=auto and evaluation.precision."""

from __future__ import annotations

import pytest

from reid_attn.config import (
    ConfigError,
    cpu_has_native_bf16,
    resolve_precision,
    validate_train_config,
)

ZEN4_FLAGS = "flags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE_FLAGS = "processor\t: 0\nflags\t\t: fpu vme avx2 avx512f avx512bw\nbugs\t\t: amx_bf16\n"


def test_native_bf16_is_read_from_the_cpu_flags_line_only(monkeypatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_has_native_bf16(ZEN4_FLAGS)
    assert cpu_has_native_bf16("flags : sse amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16(SKYLAKE_FLAGS)  # the name elsewhere does not count
    assert not cpu_has_native_bf16("")


@pytest.mark.parametrize(
    ("isa", "native"),
    [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True), ("ALL", True)],
)
def test_a_onednn_isa_cap_below_bf16_means_no_native_bf16(monkeypatch, isa, native) -> None:
    """ONEDNN_MAX_CPU_ISA=AVX2 (how the suite runs as a CPU without AVX-512 would) leaves
    PyTorch's convolutions without bf16 instructions: precision=auto then picks float32."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert cpu_has_native_bf16(ZEN4_FLAGS) is native


def test_auto_precision_on_the_cpu_follows_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr("reid_attn.config.cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr("reid_attn.config.cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("32-true", "cpu") == "32-true"  # explicit values are kept
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_auto_precision_on_a_gpu_prefers_bf16_where_supported(monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "gpu") == "16-mixed"


def test_unknown_evaluation_precision_lists_the_allowed_values(train_cfg_factory) -> None:
    cfg = train_cfg_factory("evaluation.precision=fp16")
    with pytest.raises(
        ConfigError, match=r"evaluation.precision='fp16' .* allowed values: 32, bf16"
    ):
        validate_train_config(cfg)


def test_cpu_model_and_machine_line() -> None:
    from reid_attn.runs.machine import cpu_model, machine_line

    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: sse avx2\n"
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model("flags : sse\n")  # no model name: the platform's description
    info = {
        "cpu": "AMD EPYC 7B13",
        "cores": 2,
        "threads": 1,
        "native_bf16": False,
        "torch": "2.9.0",
        "cuda": None,
        "precision": "32-true",
    }
    assert machine_line(info) == (
        "AMD EPYC 7B13, 2 cores (1 thread), native bf16 no, torch 2.9.0, precision 32-true"
    )
