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
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from peak_memory import reset_peak_rss, status_kib

RESULTS = Path(__file__).resolve().parent / "results"
ATTENTIONS = ("none", "se", "eca", "cbam")


def compose_train_config(overrides: list[str]):
    """The real ``conf/train.yaml`` composed with ``overrides`` (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    import reid_attn

    conf_dir = Path(reid_attn.__file__).parent / "conf"
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("train", overrides=overrides)


VARIANT_OVERRIDES = {
    "fp32": [],
    "channels_last": ["model.channels_last=true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "compile": ["model.compile=true"],
    "heap": [],
}
# "heap": the process's glibc malloc keeps freed memory instead of handing large blocks back
# to the system (no mmap per feature map, no trimming), so a step does not page-fault its
# feature maps in again. The README's "Training speed" gives the same setting for training.
VARIANT_ENV = {
    "heap": {
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=2147483647"
        ":glibc.malloc.trim_threshold=17179869184"
    }
}


def variant_parts(variant: str) -> list[str]:
    """The variants a combined variant ``a+b`` is made of."""
    return variant.split("+")


def variant_overrides(variant: str) -> list[str]:
    """Config overrides that select a benchmark variant; ``a+b`` combines two."""
    return [o for part in variant_parts(variant) for o in VARIANT_OVERRIDES[part]]


def training_step(spec: dict):
    """A closure running one training step of the configuration ``spec`` (size, attention,
    variant, device, batch) on a fixed random batch; returns ``(step, batch_size)``."""
    from omegaconf import OmegaConf

    from reid_attn.module import ReIDModule

    height, width = spec["size"]
    cfg = compose_train_config(
        [f"attention={spec['attention']}", *variant_overrides(spec["variant"])]
    )
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    batch = spec["batch"] or cfg.data.num_identities * cfg.data.num_instances
    num_ids = max(1, batch // cfg.data.num_instances)
    module = ReIDModule(
        num_classes=751,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        evaluation=OmegaConf.to_container(cfg.evaluation, resolve=True),
    ).to(device)
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.optimizer.lr)
    images = torch.randn(batch, 3, height, width, device=device)
    pids = torch.arange(num_ids, device=device).repeat_interleave(cfg.data.num_instances)
    pids = torch.cat([pids, pids[: batch - len(pids)]])[:batch]
    dtype = torch.bfloat16 if "bf16" in variant_parts(spec["variant"]) else None

    def step() -> None:
        if module.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = module.step_losses(images, pids)  # compiled with model.compile
        optimizer.zero_grad(set_to_none=True)
        loss["loss"].backward()
        optimizer.step()

    return step, batch


def worker(spec: dict) -> dict:
    """Time ``spec['steps']`` training steps of one configuration; return the figures."""
    step, batch = training_step(spec)
    device = torch.device(spec["device"])

    def synced() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(spec["warmup"]):
        step()
    synced()
    warmup_seconds = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    rss_before = status_kib("VmRSS") if device.type == "cpu" else 0
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        synced()
        times.append(time.perf_counter() - start)
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
    runs: dict[tuple, list[dict]] = {}
    for round_index in range(args.rounds):
        for spec in specs if round_index % 2 == 0 else specs[::-1]:
            key = (tuple(spec["size"]), spec["variant"], spec["attention"])
            result = run_config(spec)
            runs.setdefault(key, []).append(result)
            print(
                f"round {round_index + 1} {spec['size'][0]}x{spec['size'][1]} "
                f"{spec['variant']:<13} {spec['attention']:<5} "
                f"{result['images_per_s']:8.1f} img/s  {result['peak_memory_mb']:8.0f} MB",
                flush=True,
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


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Training-step throughput by attention type",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Batch {result['rows'][0]['batch']}, default (joint circle) loss, Adam; median over "
        f"{result['rounds']} interleaved rounds of {result['steps']} steps.",
        "",
        "| size | variant | attention | images/s | x none | x fp32 | peak memory (MB) | "
        "memory x none |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        speedup = f"{r['speedup_vs_fp32']:.2f}" if r["speedup_vs_fp32"] is not None else "-"
        lines.append(
            f"| {r['size']} | {r['variant']} | {r['attention']} | {r['images_per_s']:.1f} | "
            f"{r['ratio_to_none']:.3f} | {speedup} | {r['peak_memory_mb']:.0f} | "
            f"{r['memory_ratio_to_none']:.2f} |"
        )
    data = result["data_pipeline"]
    lines += [
        "",
        f"Data pipeline ({result['data_config']}: {data['size'][0]}x{data['size'][1]}, "
        f"data.pipeline={data.get('pipeline', 'loader')}, {data['num_workers']} workers): "
        f"{data['images_per_s']:.1f} images/s = "
        f"{result['data_to_model_ratio']:.2f} x the default model's training throughput in "
        f"{result['model_variant']} "
        f"({result['default_model_images_per_s']:.1f} images/s).",
        "",
    ]
    path.write_text("\n".join(lines))


def parse_size(text: str) -> list[int]:
    height, width = text.lower().split("x")
    return [int(height), int(width)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny run, no result files")
    parser.add_argument("--sizes", default="256x128,128x64", help="comma-separated HxW")
    parser.add_argument("--variants", default="fp32,channels_last,bf16,compile")
    parser.add_argument(
        "--variant-attentions",
        default="none,cbam",
        help="attention types measured in the non-fp32 variants (fp32 measures all four)",
    )
    parser.add_argument("--batch", type=int, default=32, help="0: P x K of the config")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-batches", type=int, default=12)
    parser.add_argument(
        "--data", default="", help="data config for the pipeline (default: train.yaml's)"
    )
    parser.add_argument(
        "--model-variant", default="fp32", help="variant of the model the pipeline is compared to"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.sizes, args.variants, args.batch = "64x32", "fp32,channels_last,bf16", 8
        args.warmup, args.steps, args.rounds, args.data_batches = 1, 2, 1, 3
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
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
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    result.update(
        command=" ".join(["python", "experiments/bench_train.py", *sys.argv[1:]]),
        machine=f"{device or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        rounds=args.rounds,
        steps=args.steps,
        data_config=f"data={args.data}" if args.data else "default config",
        model_variant=args.model_variant,
    )
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        tag = "" if args.device == "cpu" else f"_{args.device}"
        (RESULTS / f"bench_train{tag}.json").write_text(json.dumps(result, indent=2))
        write_markdown(result, RESULTS / f"bench_train{tag}.md")


if __name__ == "__main__":
    main()
