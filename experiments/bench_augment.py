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

import torch
from harness import (
    RESULTS,
    add_bench_args,
    command_line,
    interleaved,
    machine_record,
    markdown_table,
    medians,
    results_header,
    synchronizer,
    time_calls,
    write_results,
)
from PIL import Image

from reid_attn.data.batch_augment import BatchAugment
from reid_attn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform


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

        def timed(name: str, methods: dict = methods) -> list[float]:
            run, inputs = methods[name]
            sync = synchronizer(device)
            return time_calls(lambda: run(inputs), args.repeats, args.warmup, sync)

        runs = interleaved(list(methods), timed, args.rounds)
        seconds = {name: [t for times in rounds for t in times] for name, rounds in runs.items()}
        median = medians(seconds)
        for name, values in seconds.items():
            rows.append(
                {
                    "size": size,
                    "method": name,
                    "ms_per_batch": 1000 * median[name],
                    "best_ms_per_batch": 1000 * min(values),
                    "images_per_s": args.batch / median[name],
                    "x_hand_written": median["hand-written"] / median[name],
                }
            )
            print(
                f"{size} {name:<22} {1000 * median[name]:8.2f} ms (best {1000 * min(values):.2f})"
                f"  {args.batch / median[name]:10.0f} img/s"
            )
    return {"rows": rows}


def markdown(result: dict) -> list[str]:
    """The table of :func:`measure` with the command and machine."""
    title = "Batched training augmentation: hand-written vs kornia vs per-image torchvision"
    columns = ["size", "method", "ms / batch", "best ms", "images/s", "speed x hand-written"]
    rows = [
        [
            r["size"],
            r["method"],
            f"{r['ms_per_batch']:.2f}",
            f"{r['best_ms_per_batch']:.2f}",
            f"{r['images_per_s']:.0f}",
            f"{r['x_hand_written']:.2f}",
        ]
        for r in result["rows"]
    ]
    return [
        *results_header(title, result),
        f"Batch {result['batch']} uint8 images -> augmented float32 (flip, pad 10 + crop, "
        f"normalise, random erasing); median (and best) of {result['repeats']} batches x "
        f"{result['rounds']} interleaved rounds.",
        "",
        *markdown_table(columns, rows, "llrrrr"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_args(parser, device="cpu", sizes="64x32,256x128", batch=64, warmup=2)
    add_bench_args(parser, repeats=20, rounds=3, out=RESULTS)
    parser.add_argument("--no-torchvision", action="store_true", help="skip the per-image row")
    args = parser.parse_args()
    args.sizes = args.sizes.split(",")
    result = measure(args)
    result.update(
        command=command_line(),
        **machine_record("float32"),
        batch=args.batch,
        repeats=args.repeats,
        rounds=args.rounds,
    )
    tag = "" if args.device == "cpu" else f"_{args.device}"
    write_results(result, markdown(result), f"bench_augment{tag}", args.out)


if __name__ == "__main__":
    main()
