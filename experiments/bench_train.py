"""Benchmark: training-step throughput and peak memory per attention type, and the data
pipeline's throughput, side by side in one run.

    .venv/bin/python experiments/bench_train.py            # full run, writes results/bench_train.*
    .venv/bin/python experiments/bench_train.py --quick    # seconds, small batch, no files

A training step is what ``ReIDModule.training_step`` does on a random batch of the configured
P x K structure (``step_losses``: forward and the configured joint loss, compiled with
``model.compile``; backward; Adam step). The GPU successor, with the memory pipeline, CUDA
graphs and fused Adam, is ``pace.py``. Every configuration
(input size x attention x variant) runs in its own subprocess, so peak memory does not mix:
``--warmup`` steps, then ``--steps`` timed steps (median step time -> images/s). The whole list
of configurations is run ``--rounds`` times in interleaved order and the median over rounds is
reported, so a slow phase of a shared machine hits every configuration alike; ratios are to
``none`` with the same size and variant. Peak memory: on CUDA ``max_memory_allocated`` during
the timed steps, on CPU the growth of the process's peak resident set (VmHWM, reset just
before the timed steps) over the resident set then.

Variants (measured for ``--variant-attentions``, by default none and cbam): ``fp32`` (the
default, all four attention types), ``channels_last`` (``model.channels_last=true``), ``bf16``
(``trainer.precision=bf16-mixed``: autocast to bfloat16), ``compile``
(``model.compile=true``: torch.compile of the step, timed after compilation), ``heap`` (glibc malloc
keeps large freed blocks: see ``VARIANT_ENV``); ``+`` combines them, e.g.
``bf16+channels_last`` (mixed precision on channels-last maps, the usual GPU setting).

The data pipeline is the train loader of the default config (or of ``--data``: decode +
transforms, its ``num_workers``), timed over ``--data-batches`` batches after the first; its
throughput is compared with the model's (default attention at the data's size, in
``--model-variant``, fp32 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from harness import (
    RESULTS,
    VARIANT_ENV,
    VARIANT_OVERRIDES,
    add_bench_args,
    command_line,
    compose_train_config,
    interleaved,
    machine_record,
    markdown_table,
    parse_size,
    parse_sizes,
    reset_peak_rss,
    results_header,
    status_kib,
    synchronizer,
    time_calls,
    training_step,
    variant_parts,
    write_results,
)

ATTENTIONS = ("none", "se", "eca", "cbam")


def worker(spec: dict) -> dict:
    """Time ``spec['steps']`` training steps of one configuration; return the figures."""
    step, batch = training_step(spec)
    device = torch.device(spec["device"])
    sync = synchronizer(device)
    start = time.perf_counter()
    time_calls(step, 0, warmup=spec["warmup"])
    sync()
    warmup_seconds = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    rss_before = status_kib("VmRSS") if device.type == "cpu" else 0
    times = time_calls(step, spec["steps"], sync=sync)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = max(0, status_kib("VmHWM") - rss_before) / 1024
    return {
        "images_per_s": batch / statistics.median(times),
        "step_seconds": times,
        "warmup_seconds": warmup_seconds,
        "peak_memory_mb": peak_mb,
        "batch": batch,
    }


def run_config(spec: dict) -> dict:
    """Run :func:`worker` for ``spec`` in a fresh interpreter."""
    env = dict(os.environ)
    for part in variant_parts(spec["variant"]):
        env.update(VARIANT_ENV.get(part, {}))
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_pipeline_throughput(batches: int, overrides: list[str], device: str = "cpu") -> dict:
    """Images/s of the config's train loader over ``batches`` batches (the first batch, which
    includes worker start-up, is not timed); with ``data.pipeline=memory`` (or ``auto``
    choosing it) the images are cached on ``device`` first (``setup_seconds``)."""
    from omegaconf import OmegaConf

    from reid_attn.data import ReIDDataModule

    cfg = compose_train_config(overrides)
    datamodule = ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.cache_device = torch.device(device)
    datamodule.prepare_data()
    datamodule.setup("fit")
    setup_start = time.perf_counter()
    datamodule.train_dataloader()  # decodes the memory pipeline's cache
    setup_seconds = time.perf_counter() - setup_start
    count, start, epochs = 0, None, 0
    while count < batches:
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epochs)
        for _batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            count += 1
            if count == batches:
                break
        epochs += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    batch = cfg.data.num_identities * cfg.data.num_instances
    return {
        "images_per_s": batches * batch / seconds,
        "pipeline": datamodule.active_pipeline,
        "setup_seconds": setup_seconds,
        "num_workers": cfg.data.num_workers,
        "size": [cfg.data.height, cfg.data.width],
        "batches": batches,
    }


def run_all(args: argparse.Namespace) -> dict:
    """Every configuration, ``args.rounds`` interleaved rounds; medians and ratios to none."""
    specs = []
    for size in args.sizes:
        for variant in args.variants:
            if "compile" in variant_parts(variant) and size != args.sizes[-1]:
                continue  # compilation takes minutes on CPU: the smallest size only
            attentions = ATTENTIONS if variant == "fp32" else args.variant_attentions
            for attention in attentions:
                specs.append(
                    {
                        "size": size,
                        "attention": attention,
                        "variant": variant,
                        "device": args.device,
                        "batch": args.batch,
                        "warmup": args.warmup + ("compile" in variant_parts(variant)),
                        "steps": args.steps,
                    }
                )

    def report(round_index: int, spec: dict, result: dict) -> None:
        print(
            f"round {round_index + 1} {spec['size'][0]}x{spec['size'][1]} "
            f"{spec['variant']:<13} {spec['attention']:<5} "
            f"{result['images_per_s']:8.1f} img/s  {result['peak_memory_mb']:8.0f} MB",
            flush=True,
        )

    runs = interleaved(
        specs,
        run_config,
        args.rounds,
        key=lambda spec: (tuple(spec["size"]), spec["variant"], spec["attention"]),
        report=report,
    )
    rows = []
    for (size, variant, attention), results in runs.items():
        rows.append(
            {
                "size": f"{size[0]}x{size[1]}",
                "variant": variant,
                "attention": attention,
                "images_per_s": statistics.median(r["images_per_s"] for r in results),
                "peak_memory_mb": max(r["peak_memory_mb"] for r in results),
                "batch": results[0]["batch"],
            }
        )
    for row in rows:
        base = next(
            r
            for r in rows
            if r["size"] == row["size"]
            and r["variant"] == row["variant"]
            and r["attention"] == "none"
        )
        fp32 = next(
            (
                r
                for r in rows
                if r["size"] == row["size"]
                and r["variant"] == "fp32"
                and r["attention"] == row["attention"]
            ),
            None,
        )
        row["ratio_to_none"] = row["images_per_s"] / base["images_per_s"]
        row["memory_ratio_to_none"] = row["peak_memory_mb"] / max(base["peak_memory_mb"], 1e-9)
        row["speedup_vs_fp32"] = row["images_per_s"] / fp32["images_per_s"] if fp32 else None
    return {"rows": rows}


def markdown(result: dict) -> list[str]:
    """The results page: the table of :func:`run_all`, then the data pipeline's line."""
    lines = [
        *results_header("Training-step throughput by attention type", result),
        f"Batch {result['rows'][0]['batch']}, default (joint circle) loss, Adam; median over "
        f"{result['rounds']} interleaved rounds of {result['steps']} steps.",
        "",
    ]
    columns = ["size", "variant", "attention", "images/s", "x none", "x fp32"]
    columns += ["peak memory (MB)", "memory x none"]
    rows = [
        [
            r["size"],
            r["variant"],
            r["attention"],
            f"{r['images_per_s']:.1f}",
            f"{r['ratio_to_none']:.3f}",
            "-" if r["speedup_vs_fp32"] is None else f"{r['speedup_vs_fp32']:.2f}",
            f"{r['peak_memory_mb']:.0f}",
            f"{r['memory_ratio_to_none']:.2f}",
        ]
        for r in result["rows"]
    ]
    data = result["data_pipeline"]
    return [
        *lines,
        *markdown_table(columns, rows, "lllrrrrr"),
        "",
        f"Data pipeline ({result['data_config']}: {data['size'][0]}x{data['size'][1]}, "
        f"data.pipeline={data.get('pipeline', 'loader')}, {data['num_workers']} workers): "
        f"{data['images_per_s']:.1f} images/s = "
        f"{result['data_to_model_ratio']:.2f} x the default model's training throughput in "
        f"{result['model_variant']} "
        f"({result['default_model_images_per_s']:.1f} images/s).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny run, no result files")
    parser.add_argument("--variants", default="fp32,channels_last,bf16,compile")
    parser.add_argument(
        "--variant-attentions",
        default="none,cbam",
        help="attention types measured in the non-fp32 variants (fp32 measures all four)",
    )
    add_bench_args(parser, sizes="256x128,128x64", batch=32, warmup=1, steps=4, rounds=2)
    add_bench_args(parser, device="cuda" if torch.cuda.is_available() else "cpu", out=RESULTS)
    parser.add_argument("--data-batches", type=int, default=12)
    parser.add_argument(
        "--data", default="", help="data config for the pipeline (default: train.yaml's)"
    )
    parser.add_argument(
        "--model-variant", default="fp32", help="variant of the model the pipeline is compared to"
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.sizes, args.variants, args.batch = "64x32", "fp32,channels_last,bf16", 8
        args.warmup, args.steps, args.rounds, args.data_batches = 1, 2, 1, 3
    args.sizes = parse_sizes(args.sizes)
    args.variants = args.variants.split(",")
    args.variant_attentions = args.variant_attentions.split(",")
    named = [*args.variants, args.model_variant]
    parts = {part for variant in named for part in variant_parts(variant)}
    unknown = sorted(parts - set(VARIANT_OVERRIDES))
    if unknown or "fp32" not in args.variants:
        parser.error(f"--variants must include fp32; unknown: {unknown}")

    result = run_all(args)
    data_overrides = [f"data={args.data}"] if args.data else []
    result["data_pipeline"] = data_pipeline_throughput(
        args.data_batches, data_overrides, args.device
    )
    default_cfg = compose_train_config(data_overrides)
    default_size = f"{default_cfg.data.height}x{default_cfg.data.width}"
    default_row = next(
        (
            r
            for r in result["rows"]
            if r["size"] == default_size
            and r["variant"] == args.model_variant
            and r["attention"] == default_cfg.model.attention
        ),
        None,
    )
    if default_row is None:  # this configuration was not benchmarked: measure it now
        default_row = run_config(
            {
                "size": parse_size(default_size),
                "attention": default_cfg.model.attention,
                "variant": args.model_variant,
                "device": args.device,
                "batch": args.batch,
                "warmup": args.warmup,
                "steps": args.steps,
            }
        )
    result["default_model_images_per_s"] = default_row["images_per_s"]
    result["data_to_model_ratio"] = (
        result["data_pipeline"]["images_per_s"] / default_row["images_per_s"]
    )
    bf16 = any("bf16" in variant_parts(v) for v in [*args.variants, args.model_variant])
    result.update(
        command=command_line(),
        **machine_record("32-true, bf16-mixed in bf16 variants" if bf16 else "32-true"),
        rounds=args.rounds,
        steps=args.steps,
        data_config=f"data={args.data}" if args.data else "default config",
        model_variant=args.model_variant,
    )
    print(json.dumps(result, indent=2))
    if not args.quick:
        tag = "" if args.device == "cpu" else f"_{args.device}"
        write_results(result, markdown(result), f"bench_train{tag}", args.out)


if __name__ == "__main__":
    main()
