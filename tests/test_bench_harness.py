"""The benchmarks' shared harness (experiments/harness.py): flags, interleaved rounds, medians,
result files and the machine line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from conftest import load_experiment

harness = load_experiment("harness")


def test_rounds_alternate_their_order_so_drift_hits_every_configuration() -> None:
    calls: list[tuple[int, str]] = []
    clock = iter(range(100))

    def measure(name: str) -> int:
        return next(clock)  # a workload that gets slower with every call

    runs = harness.interleaved(
        ["a", "b", "c"], measure, 3, report=lambda r, name, _: calls.append((r, name))
    )
    assert calls == [
        (0, "a"), (0, "b"), (0, "c"),
        (1, "c"), (1, "b"), (1, "a"),
        (2, "a"), (2, "b"), (2, "c"),
    ]  # fmt: skip
    assert runs == {"a": [0, 5, 6], "b": [1, 4, 7], "c": [2, 3, 8]}
    # a pair of rounds (forward, then back) gives every configuration the same mean under a
    # linear drift
    assert {name: sum(values[:2]) for name, values in runs.items()} == {"a": 5, "b": 5, "c": 5}


def test_interleaved_keys_unhashable_configs() -> None:
    configs = [{"size": [64, 32], "attention": "none"}, {"size": [64, 32], "attention": "cbam"}]
    runs = harness.interleaved(
        configs, lambda c: len(c["attention"]), 2, key=lambda c: c["attention"]
    )
    assert runs == {"none": [4, 4], "cbam": [4, 4]}
    assert list(runs) == ["none", "cbam"]


def test_medians_of_known_numbers() -> None:
    assert harness.medians({"odd": [3.0, 1.0, 2.0], "even": [4.0, 1.0, 3.0, 2.0]}) == {
        "odd": 2.0,
        "even": 2.5,
    }


def test_time_calls_warms_up_then_times_each_call() -> None:
    log: list[str] = []
    times = harness.time_calls(
        lambda: log.append("call"), repeats=3, warmup=2, sync=lambda: log.append("sync")
    )
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert log == ["call", "call", *["sync", "call", "sync"] * 3]


def test_shared_flags_take_each_scripts_defaults() -> None:
    parser = harness.add_bench_args(
        argparse.ArgumentParser(), sizes="64x32,256x128", batch=64, rounds=3, out=Path("r")
    )
    args = parser.parse_args(["--batch", "8"])
    assert (args.sizes, args.batch, args.rounds, args.out) == ("64x32,256x128", 8, 3, Path("r"))
    assert not hasattr(args, "repeats")  # only the flags the script asked for
    with pytest.raises(ValueError, match="no shared flag"):
        harness.add_bench_args(argparse.ArgumentParser(), seeds=3)
    assert harness.parse_sizes("256x128,64X32") == [[256, 128], [64, 32]]


def test_command_line_names_the_script_under_experiments() -> None:
    argv = ["/somewhere/experiments/bench_eval.py", "--quick", "--repeats", "1"]
    assert harness.command_line(argv) == "python experiments/bench_eval.py --quick --repeats 1"


def test_markdown_table_of_known_rows() -> None:
    lines = harness.markdown_table(
        ["size", "method", "ms"], [["64x32", "ours", "1.50"], ["64x32", "kornia", "3.00"]], "llr"
    )
    assert lines == [
        "| size | method | ms |",
        "| --- | --- | ---: |",
        "| 64x32 | ours | 1.50 |",
        "| 64x32 | kornia | 3.00 |",
    ]
    with pytest.raises(ValueError, match="2 cells"):
        harness.markdown_table(["a", "b", "c"], [["1", "2"]])


def test_write_results_writes_json_and_markdown_side_by_side(tmp_path) -> None:
    result = {"command": "python experiments/x.py", "machine": "CPU", "rows": [{"a": 1.5}]}
    lines = [*harness.results_header("X", result), "", "| a |", "| --- |", "| 1.5 |"]
    page = harness.write_results(result, lines, "bench_x", tmp_path / "new")
    assert page == tmp_path / "new" / "bench_x.md"
    assert json.loads((tmp_path / "new" / "bench_x.json").read_text()) == result
    assert page.read_text() == (
        "# X\n\nCommand: `python experiments/x.py`  \nMachine: CPU  \n\n| a |\n| --- |\n| 1.5 |\n"
    )


def test_machine_record_names_the_cpu_cores_bf16_torch_and_precision(monkeypatch) -> None:
    import torch

    from reid_attn.runs import machine

    monkeypatch.setattr(machine, "cpu_model", lambda: "AMD EPYC 7763 64-Core Processor")
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: False)
    record = harness.machine_record("32-true", extra="load average 1.5", threads=2)
    info = record["machine_info"]
    assert info["cpu"] == "AMD EPYC 7763 64-Core Processor" and info["threads"] == 2
    assert info["precision"] == "32-true" and info["native_bf16"] is False
    line = record["machine"]
    assert line.startswith(f"AMD EPYC 7763 64-Core Processor, {info['cores']} core")
    assert "(2 threads), native bf16 no" in line
    assert f"torch {torch.__version__}" in line
    assert line.endswith("precision 32-true, load average 1.5")
    json.dumps(record)  # goes into the results' JSON as it is


def test_variants_combine() -> None:
    assert harness.variant_overrides("bf16+channels_last") == [
        "trainer.precision=bf16-mixed",
        "model.channels_last=true",
    ]
    with pytest.raises(KeyError):
        harness.variant_overrides("fp8")
