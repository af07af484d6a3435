"""Benchmark: the training augmentation on whole batches, hand-written (reid_attn.data.
batch_augment) against kornia's augmentation module, and against the loader's per-image
torchvision transforms (one process), side by side in one run.

    .venv/bin/python experiments/bench_augment.py                 # writes results/bench_augment.*
    python experiments/bench_augment.py --device cuda --out DIR   # on a GPU

Each method turns a batch of uint8 images of the cache (B, 3, H, W) into augmented, normalised
float32 images: flip (p 0.5), pad 10 + random crop, normalisation, random erasing (p 0.5).
kornia's RandomErasing draws its rectangle differently from torchvision's (uniform aspect on two
halves, sizes clamped instead of re-drawn), so it is timed as a candidate, not as a drop-in.
Median of ``--repeats`` timed batches after ``--warmup``; rounds interleave the methods.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from reid_attn.data.batch_augment import BatchAugment
from reid_attn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform

RESULTS = Path(__file__).resolve().parent / "results"


def hand_written(height: int, width: int, device: torch.device):
    """The library's batched augmentation, seeded per batch as in training."""
    augment = BatchAugment()
    generator = torch.Generator(device=device)

    def run(images: torch.Tensor) -> torch.Tensor:
        generator.manual_seed(0)
        return augment(images, generator)

    return run


def kornia_pipeline(height: int, width: int, device: torch.device):
    """The same steps with kornia.augmentation (uint8 -> float in [0, 1] first)."""
    import kornia.augmentation as K

    pipeline = K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomCrop((height, width), padding=10, fill=0),
        K.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD)),
        K.RandomErasing(p=0.5, value=0.0),
    ).to(device)

    def run(images: torch.Tensor) -> torch.Tensor:
        return pipeline(images.float().div(255))

    return run


def torchvision_per_image(height: int, width: int, device: torch.device):
    """The loader pipeline's transforms image by image on PIL images (no decoding: the images
    are already in memory), one process."""
    transform = build_train_transform(height, width)

    def prepare(images: torch.Tensor) -> list[Image.Image]:
        return [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in images]

    def run(pil_images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([transform(img) for img in pil_images]).to(device)

    return run, prepare


def time_method(run, images, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run(images)`` after ``warmup`` calls."""
    for _ in range(warmup):
        run(images)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measure(args: argparse.Namespace) -> dict:
    """images/s per method and size, median over interleaved rounds."""
    device = torch.device(args.device)
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        images = torch.randint(0, 256, (args.batch, 3, height, width), dtype=torch.uint8)
        images = images.to(device)
        methods = {"hand-written": (hand_written(height, width, device), images)}
        try:
            methods["kornia"] = (kornia_pipeline(height, width, device), images)
        except ImportError:
            print("kornia is not installed: its row is left out")
        if not args.no_torchvision:
            run, prepare = torchvision_per_image(height, width, device)
            methods["torchvision per image"] = (run, prepare(images))
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        for round_index in range(args.rounds):
            order = list(methods) if round_index % 2 == 0 else list(methods)[::-1]
            for name in order:
                run, inputs = methods[name]
                seconds[name] += time_method(run, inputs, device, args.warmup, args.repeats)
        base = statistics.median(seconds["hand-written"])
        for name, values in seconds.items():
            median = statistics.median(values)
            rows.append(
                {
                    "size": size,
                    "method": name,
                    "ms_per_batch": 1000 * median,
                    "best_ms_per_batch": 1000 * min(values),
                    "images_per_s": args.batch / median,
                    "x_hand_written": base / median,
                }
            )
            print(
                f"{size} {name:<22} {1000 * median:8.2f} ms (best {1000 * min(values):.2f})"
                f"  {args.batch / median:10.0f} img/s"
            )
    return {"rows": rows}


def write_markdown(result: dict, path: Path) -> None:
    """The table of :func:`measure` with the command and machine."""
    lines = [
        "# Batched training augmentation: hand-written vs kornia vs per-image torchvision",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Batch {result['batch']} uint8 images -> augmented float32 (flip, pad 10 + crop, "
        f"normalise, random erasing); median (and best) of {result['repeats']} batches x "
        f"{result['rounds']} interleaved rounds.",
        "",
        "| size | method | ms / batch | best ms | images/s | speed x hand-written |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['size']} | {r['method']} | {r['ms_per_batch']:.2f} | "
            f"{r['best_ms_per_batch']:.2f} | {r['images_per_s']:.0f} | "
            f"{r['x_hand_written']:.2f} |"
        )
    path.write_text("\n".join([*lines, ""]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64x32,256x128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-torchvision", action="store_true", help="skip the per-image row")
    parser.add_argument("--out", default=str(RESULTS), help="folder of bench_augment.{json,md}")
    args = parser.parse_args()
    args.sizes = args.sizes.split(",")
    result = measure(args)
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    result.update(
        command=" ".join(["python", "experiments/bench_augment.py", *sys.argv[1:]]),
        machine=f"{name or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        batch=args.batch,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if args.device == "cpu" else f"_{args.device}"
    (out / f"bench_augment{tag}.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, out / f"bench_augment{tag}.md")


if __name__ == "__main__":
    main()
