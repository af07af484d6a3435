"""Training at the GPU's pace: the fast training step's throughput per attention type, the
memory pipeline's throughput, several jobs at once, and the fast step's losses against the
eager step's, all in one coordinated run (``experiments/gpu_pace.sh`` calls it on a GPU).

    python experiments/pace.py --device cuda --out DIR               # the GPU measurement
    .venv/bin/python experiments/pace.py --device cpu --smoke --out DIR  # seconds: plumbing only

The "fast step" is what ``trainer=gpu_fast`` trains with: a PK batch (16 ids x 4 by default)
gathered from a uint8 image cache on the device and augmented there
(:class:`reid_attn.data.batch_augment.BatchAugment`), ``ReIDModule.step_losses`` compiled with
``model.compile_mode`` (``reduce-overhead``: CUDA graphs) under bf16 autocast on channels-last
maps, backward, and the module's own optimizer (fused Adam on CUDA). Nothing in a step reads a
value on the host. The cache holds random pixels (``--cache-images`` of them, labelled over
``--num-classes`` identities, which the cost of a step does not depend on).

Every configuration runs in its own worker process. All workers start together, compile at the
same time (in parallel on the CPU cores), then take the GPU in turns, as the coordinator says:

1. ``throughput``: one fast worker per attention type, each alone on the GPU for
   ``--window`` seconds (images/s), then its memory pipeline alone (images/s);
2. ``jobs``: 1, 2, 4 CBAM fast workers at once (aggregate images/s);
3. ``tracking``: from the same initial weights and the same batches, ``--track-steps`` steps
   of the fast CBAM step (bf16), the eager step in bf16 and the eager step in fp32. The fast
   step tracks the eager one when the window means of their losses differ by no more than
   ``TRACKING_FACTOR`` x what bf16 itself changes (eager bf16 vs eager fp32), and at least
   ``TRACKING_FLOOR``: a reordered computation in bf16 drifts from the eager one just as bf16
   drifts from fp32, since training amplifies rounding differences step by step.

Results: ``pace.json`` and ``pace.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from harness import (
    build_module,
    command_line,
    compose_train_config,
    machine_record,
    markdown_table,
    results_header,
    write_results,
)

ATTENTIONS = ("none", "se", "eca", "cbam")
#: Tracking tolerance: the fast step's loss may move from the eager one's by this factor times
#: the change bf16 makes to the eager step (window means), and never less than the floor.
TRACKING_FACTOR = 2.0
TRACKING_FLOOR = 0.02
TRACKING_WINDOW = 20
POLL_SECONDS = 0.01


@dataclass
class RunSpec:
    """One worker's training configuration."""

    attention: str = "cbam"
    device: str = "cuda"
    size: tuple[int, int] = (256, 128)
    identities: int = 16
    instances: int = 4
    precision: str = "bf16"  # bf16 (autocast) | fp32
    compile_mode: str | None = "reduce-overhead"  # None: the eager step
    channels_last: bool = True
    num_classes: int = 701  # data=synthetic_large's training identities (compile cache reuse)
    cache_images: int = 2000
    warmup: int = 3
    seed: int = 0


class PaceRunner:
    """A module, its optimizer and a memory-pipeline batch source for one :class:`RunSpec`."""

    def __init__(self, spec: RunSpec) -> None:
        from reid_attn.data.batch_augment import BatchAugment
        from reid_attn.data.sampler import PKSampler

        self.spec = spec
        self.device = torch.device(spec.device)
        overrides = [f"attention={spec.attention}", f"model.channels_last={spec.channels_last}"]
        if spec.compile_mode is not None:
            overrides += ["model.compile=true", f"model.compile_mode={spec.compile_mode}"]
        cfg = compose_train_config(overrides)
        torch.manual_seed(spec.seed)
        self.module = build_module(cfg, spec.num_classes, self.device)
        self.module.train()
        self.initial_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.optimizer = self._optimizer()
        height, width = spec.size
        pixels = torch.Generator().manual_seed(spec.seed)
        cache = torch.randint(0, 256, (spec.cache_images, 3, height, width), generator=pixels)
        self.cache = cache.to(torch.uint8).to(self.device)
        labels = np.arange(spec.cache_images) % spec.num_classes
        self.labels = torch.as_tensor(labels, device=self.device)
        sampler = PKSampler(labels, spec.identities, spec.instances, seed=spec.seed)
        self.batches = torch.as_tensor(np.stack(sampler.rank_batches()), device=self.device)
        self.augment = BatchAugment()
        self.generator = torch.Generator(self.device)
        self.batch_size = spec.identities * spec.instances
        self.dtype = torch.bfloat16 if spec.precision == "bf16" else None

    def _optimizer(self) -> torch.optim.Optimizer:
        return self.module.configure_optimizers()["optimizer"]

    def reset(self) -> None:
        """Back to the initial weights, batch-norm statistics and a fresh optimizer."""
        with torch.no_grad():
            for key, value in self.module.state_dict().items():
                value.copy_(self.initial_state[key])  # in place: CUDA graphs keep their inputs
        self.optimizer = self._optimizer()

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented images ``(B, 3, H, W)`` and labels ``(B,)`` of step ``index``."""
        rows = self.batches[index % len(self.batches)]
        self.generator.manual_seed(self.spec.seed * 1_000_003 + index)
        return self.augment(self.cache[rows], self.generator), self.labels[rows]

    def step(self, index: int) -> torch.Tensor:
        """One training step on batch ``index``; its loss, left on the device."""
        images, pids = self.batch(index)
        if self.module.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.module.step_losses(images, pids)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach().clone()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def warm_up(self) -> float:
        """Run ``spec.warmup`` steps (compilation, CUDA-graph recording), then :meth:`reset`;
        the seconds it took."""
        start = time.perf_counter()
        for index in range(self.spec.warmup):
            self.step(index)
        self.synchronize()
        self.reset()
        return time.perf_counter() - start

    def time_steps(self, seconds: float) -> dict:
        """Train for about ``seconds``; images/s over the steps run (synchronised at the ends
        only)."""
        self.synchronize()
        start = time.perf_counter()
        steps = 0
        while time.perf_counter() - start < seconds:
            self.step(steps)
            steps += 1
        self.synchronize()
        elapsed = time.perf_counter() - start
        return {"images_per_s": steps * self.batch_size / elapsed, "steps": steps}

    def time_pipeline(self, seconds: float) -> dict:
        """The memory pipeline alone (gather + augment) for about ``seconds``: images/s."""
        self.synchronize()
        start = time.perf_counter()
        batches = 0
        while time.perf_counter() - start < seconds:
            self.batch(batches)
            batches += 1
        self.synchronize()
        elapsed = time.perf_counter() - start
        return {"images_per_s": batches * self.batch_size / elapsed, "batches": batches}

    def track(self, steps: int) -> list[float]:
        """From the initial weights, ``steps`` steps; each step's loss."""
        self.reset()
        losses = torch.stack([self.step(index) for index in range(steps)])
        return losses.float().cpu().tolist()


def window_means(losses: list[float], window: int = TRACKING_WINDOW) -> np.ndarray:
    """Means of consecutive ``window``-step blocks of ``losses`` (the last block may be
    shorter)."""
    values = np.asarray(losses, dtype=float)
    return np.array([values[i : i + window].mean() for i in range(0, len(values), window)])


def tracking_deviation(a: list[float], b: list[float], window: int = TRACKING_WINDOW) -> float:
    """Largest relative difference between the window means of two loss curves."""
    mean_a, mean_b = window_means(a, window), window_means(b, window)
    return float(np.max(np.abs(mean_a - mean_b) / np.abs(mean_b)))


def tracking_verdict(fast: list[float], eager: list[float], eager_fp32: list[float]) -> dict:
    """Whether the fast step's losses track the eager step's, with the tolerance used."""
    bf16_effect = tracking_deviation(eager, eager_fp32)
    tolerance = max(TRACKING_FACTOR * bf16_effect, TRACKING_FLOOR)
    deviation = tracking_deviation(fast, eager)
    return {
        "deviation": deviation,
        "bf16_vs_fp32": bf16_effect,
        "tolerance": tolerance,
        "first_step_difference": abs(fast[0] - eager[0]) / abs(eager[0]),
        "tracks": deviation <= tolerance,
    }


# ----------------------------------------------------------------------------- processes


def worker(spec: RunSpec, control: Path, name: str) -> None:
    """Build, warm up, report ready, then run the coordinator's orders one by one."""
    runner = PaceRunner(spec)
    warmup_seconds = runner.warm_up()
    _write(control / f"{name}.ready", {"warmup_seconds": warmup_seconds})
    order = 0
    while True:
        path = control / f"{name}.todo.{order}"
        while not path.exists():
            time.sleep(POLL_SECONDS)
        action = json.loads(path.read_text())
        if action["do"] == "stop":
            return
        if action["do"] == "time":
            result = {
                "model": runner.time_steps(action["seconds"]),
                "pipeline": runner.time_pipeline(action["seconds"] / 2),
            }
        else:  # track
            result = {"losses": runner.track(action["steps"])}
        _write(control / f"{name}.done.{order}", result)
        order += 1


def _write(path: Path, payload: dict) -> None:
    """Write JSON atomically (the other side polls for the file)."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload))
    partial.replace(path)


@dataclass
class Coordinator:
    """Starts the workers and hands out orders through files in ``control``."""

    control: Path
    timeout: float
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, spec: RunSpec) -> None:
        log = open(self.control / f"{name}.log", "w")  # noqa: SIM115 (open while it runs)
        self.processes[name] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                json.dumps(asdict(spec)),
                "--name",
                name,
                "--control",
                str(self.control),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.orders[name] = 0

    def _wait(self, name: str, path: Path) -> dict:
        deadline = time.monotonic() + self.timeout
        while not path.exists():
            if self.processes[name].poll() is not None:
                tail = (self.control / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"worker {name} ended: {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {name}: no {path.name} in {self.timeout:.0f} s")
            time.sleep(POLL_SECONDS)
        return json.loads(path.read_text())

    def ready(self, name: str) -> dict:
        """Wait until worker ``name`` has warmed up; its report."""
        return self._wait(name, self.control / f"{name}.ready")

    def send(self, name: str, action: dict) -> int:
        """Give worker ``name`` its next order; the order's number."""
        number = self.orders[name]
        _write(self.control / f"{name}.todo.{number}", action)
        self.orders[name] += 1
        return number

    def result(self, name: str, number: int) -> dict:
        """Wait for the result of order ``number`` of worker ``name``."""
        return self._wait(name, self.control / f"{name}.done.{number}")

    def order(self, names: list[str], action: dict) -> list[dict]:
        """Give every worker in ``names`` the same order at once; their results."""
        numbers = {name: self.send(name, action) for name in names}
        return [self.result(name, number) for name, number in numbers.items()]

    def stop(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                _write(self.control / f"{name}.todo.{self.orders[name]}", {"do": "stop"})
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def run(args: argparse.Namespace) -> dict:
    """The whole measurement (see the module docstring); the result dictionary."""
    base = RunSpec(
        device=args.device,
        size=tuple(int(v) for v in args.size.split("x")),
        identities=args.identities,
        instances=args.instances,
        compile_mode=None if args.compile_mode == "none" else args.compile_mode,
        num_classes=args.num_classes,
        cache_images=args.cache_images,
        warmup=args.warmup,
        precision=args.precision,
    )
    fast = {f"fast-{a}": RunSpec(**{**asdict(base), "attention": a}) for a in ATTENTIONS}
    jobs = [f"fast-cbam-{i}" for i in range(1, args.max_jobs)]
    for name in jobs:
        fast[name] = fast["fast-cbam"]
    eager = {
        "eager-cbam-bf16": RunSpec(**{**asdict(base), "compile_mode": None}),
        "eager-cbam-fp32": RunSpec(**{**asdict(base), "compile_mode": None, "precision": "fp32"}),
    }
    control = Path(tempfile.mkdtemp(prefix="pace-"))  # orders, results, the workers' logs
    coordinator = Coordinator(control, args.timeout)
    result: dict = {"spec": asdict(base), "warmup_seconds": {}}
    try:
        for name, spec in {**eager, **fast}.items():
            coordinator.start(name, spec)
        # the eager runs track their losses while the fast workers compile
        track = {"do": "track", "steps": args.track_steps}
        pending = {}
        for name in eager:
            coordinator.ready(name)
            pending[name] = coordinator.send(name, track)
        for name in fast:
            result["warmup_seconds"][name] = coordinator.ready(name)["warmup_seconds"]
            print(f"{name} ready ({result['warmup_seconds'][name]:.0f} s)", flush=True)
        # the timed workers have the GPU to themselves from here
        eager_losses = {name: coordinator.result(name, n)["losses"] for name, n in pending.items()}
        window = {"do": "time", "seconds": args.window}
        rows = []
        for attention in ATTENTIONS:
            (done,) = coordinator.order([f"fast-{attention}"], window)
            rows.append({"attention": attention, **_rates(done)})
            print(
                f"{attention}: {rows[-1]['images_per_s']:.0f} img/s, pipeline "
                f"{rows[-1]['pipeline_images_per_s']:.0f} img/s",
                flush=True,
            )
        plain = rows[0]["images_per_s"]
        for row in rows:
            row["ratio_to_none"] = row["images_per_s"] / plain
        result["throughput"] = rows
        result["jobs"] = []
        for count in sorted({1, 2, args.max_jobs}):
            names = ["fast-cbam", *jobs][:count]
            done = coordinator.order(names, window)
            total = sum(d["model"]["images_per_s"] for d in done)
            result["jobs"].append({"jobs": count, "images_per_s": total})
            print(f"{count} jobs: {total:.0f} img/s together", flush=True)
        (done,) = coordinator.order(["fast-cbam"], track)
        losses = {"fast-cbam-bf16": done["losses"], **eager_losses}
        result["tracking"] = {
            "losses": losses,
            **tracking_verdict(
                losses["fast-cbam-bf16"], losses["eager-cbam-bf16"], losses["eager-cbam-fp32"]
            ),
        }
    finally:
        coordinator.stop()
    return result


def _rates(done: dict) -> dict:
    return {
        "images_per_s": done["model"]["images_per_s"],
        "steps": done["model"]["steps"],
        "pipeline_images_per_s": done["pipeline"]["images_per_s"],
    }


def markdown(result: dict) -> list[str]:
    """``pace.md``: the three tables."""
    spec = result["spec"]
    batch = spec["identities"] * spec["instances"]
    columns = ["attention", "images/s", "x none", "memory pipeline images/s"]
    columns += ["pipeline / model", "compile + warm-up s"]
    rows = [
        [
            row["attention"],
            f"{row['images_per_s']:.1f}",
            f"{row['ratio_to_none']:.3f}",
            f"{row['pipeline_images_per_s']:.0f}",
            f"{row['pipeline_images_per_s'] / row['images_per_s']:.1f}",
            f"{result['warmup_seconds']['fast-' + row['attention']]:.0f}",
        ]
        for row in result["throughput"]
    ]
    jobs = [[row["jobs"], f"{row['images_per_s']:.1f}"] for row in result["jobs"]]
    track = result["tracking"]
    steps = len(track["losses"]["fast-cbam-bf16"])
    means = {k: window_means(v) for k, v in track["losses"].items()}
    windows = [
        [
            f"{start}-{min(start + TRACKING_WINDOW, steps) - 1}",
            *(
                f"{means[name][i]:.3f}"
                for name in ("fast-cbam-bf16", "eager-cbam-bf16", "eager-cbam-fp32")
            ),
        ]
        for i, start in enumerate(range(0, steps, TRACKING_WINDOW))
    ]
    return [
        *results_header("Training at the GPU's pace (experiments/pace.py)", result),
        f"Fast step: batch {batch} = {spec['identities']} x {spec['instances']}, "
        f"{spec['size'][0]}x{spec['size'][1]}, {spec['precision']}, channels-last "
        f"{spec['channels_last']}, compile mode {spec['compile_mode']}, memory pipeline on the "
        f"device, fused Adam on CUDA; {result['window']} s windows.",
        "",
        *markdown_table(columns, rows, "lrrrrr"),
        "",
        *markdown_table(["CBAM jobs at once", "images/s together"], jobs, "rr"),
        "",
        f"Loss tracking over {steps} steps from the same weights and batches (CBAM): largest "
        f"relative gap of {TRACKING_WINDOW}-step means, fast vs eager (bf16): "
        f"{track['deviation']:.4f}; eager bf16 vs eager fp32: {track['bf16_vs_fp32']:.4f}; "
        f"tolerance {track['tolerance']:.4f} (max({TRACKING_FACTOR} x the bf16 effect, "
        f"{TRACKING_FLOOR})): **{'tracks' if track['tracks'] else 'does not track'}**; first "
        f"step (same weights, same batch) {track['first_step_difference']:.4f}.",
        "",
        *markdown_table(["steps", "fast bf16", "eager bf16", "eager fp32"], windows, "lrrr"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="256x128")
    parser.add_argument("--identities", type=int, default=16)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--compile-mode", default="reduce-overhead", help="'none': eager")
    parser.add_argument("--num-classes", type=int, default=701)
    parser.add_argument("--cache-images", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing")
    parser.add_argument("--window", type=float, default=6.0, help="seconds per timed window")
    parser.add_argument("--track-steps", type=int, default=200)
    parser.add_argument("--max-jobs", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=400, help="seconds a worker may take")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU settings, no compile")
    parser.add_argument("--out", default="/tmp/pace")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        spec["size"] = tuple(spec["size"])
        worker(RunSpec(**spec), Path(args.control), args.name)
        return
    if args.smoke:
        args.size, args.identities, args.instances = "64x32", 4, 2
        args.compile_mode, args.cache_images, args.num_classes = "none", 64, 16
        args.warmup, args.window, args.track_steps, args.max_jobs = 1, 1.0, 3, 2
    result = run(args)
    precision = "bf16-mixed (eager fp32 for tracking)" if args.precision == "bf16" else "32-true"
    result.update(command=command_line(), **machine_record(precision), window=args.window)
    print(write_results(result, markdown(result), "pace", args.out).read_text())


if __name__ == "__main__":
    main()
