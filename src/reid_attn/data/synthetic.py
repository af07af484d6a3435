"""A deterministic synthetic person re-id dataset written in the Market-1501 layout.

Every identity has its own clothing (upper/lower colours, a pattern, a bag, body shape);
every camera its own background, illumination and colour cast; every image its own pose
jitter, scale, noise and occasional occluder. The Market-1501 parser reads the result, so
the whole pipeline runs with no download.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and difficulty of the synthetic dataset (all counts are images or identities)."""

    num_train_ids: int = 32
    num_test_ids: int = 32
    num_cameras: int = 6
    min_cameras_per_id: int = 2
    max_cameras_per_id: int = 4
    images_per_camera: int = 3
    num_distractors: int = 40
    num_junk: int = 10
    height: int = 128
    width: int = 64
    noise_std: float = 12.0
    occlusion_prob: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError on counts that cannot form a re-id dataset."""
        if self.num_train_ids < 2 or self.num_test_ids < 2:
            raise ValueError("synthetic data needs at least 2 train and 2 test identities")
        if not 2 <= self.min_cameras_per_id <= self.max_cameras_per_id <= self.num_cameras:
            raise ValueError(
                "synthetic data needs 2 <= min_cameras_per_id <= max_cameras_per_id "
                f"<= num_cameras, got {self.min_cameras_per_id}, {self.max_cameras_per_id}, "
                f"{self.num_cameras}"
            )
        if self.num_cameras > 6:
            raise ValueError(
                f"num_cameras must be <= 6 (Market-1501 layout), got {self.num_cameras}"
            )
        if self.height < 64 or self.width < 32:
            raise ValueError(
                f"synthetic images must be at least 64x32 pixels, got {self.height}x{self.width}"
            )
        if self.images_per_camera < 2:
            raise ValueError("images_per_camera must be >= 2 (one query and one gallery image)")

    def digest(self) -> str:
        """Short hash of the spec: the cache folder name."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hue, sat, val = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.3, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255


def _identity(rng: np.random.Generator) -> dict:
    return {
        "upper": _random_colour(rng),
        "lower": _random_colour(rng),
        "accent": _random_colour(rng),
        "skin": np.array([rng.uniform(90, 240), rng.uniform(60, 190), rng.uniform(40, 160)]),
        "pattern": int(rng.integers(0, 4)),  # solid, h-stripes, v-stripe, two-tone
        "bag": bool(rng.random() < 0.4),
        "build": float(rng.uniform(0.7, 1.0)),  # shoulder width fraction
        "legs": float(rng.uniform(0.4, 0.5)),  # leg length fraction
    }


def _camera(rng: np.random.Generator) -> dict:
    return {
        "background": _random_colour(rng) * 0.6 + 40,
        "texture": _random_colour(rng) * 0.5,
        "gain": rng.uniform(0.7, 1.25, size=3),
        "brightness": rng.uniform(-25, 25),
    }


def _render(
    person: dict, camera: dict, spec: SyntheticSpec, rng: np.random.Generator
) -> Image.Image:
    h, w = spec.height, spec.width
    img = Image.new("RGB", (w, h), tuple(int(c) for c in camera["background"]))
    draw = ImageDraw.Draw(img)
    for _ in range(3):  # background clutter
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        draw.rectangle(
            [x0, y0, x0 + rng.integers(4, w // 2), y0 + rng.integers(4, h // 3)],
            fill=tuple(int(c) for c in camera["texture"]),
        )
    scale = rng.uniform(0.8, 1.0)
    ph, cx = h * scale, w / 2 + rng.uniform(-0.12, 0.12) * w
    top = (h - ph) * rng.uniform(0.2, 0.8)
    half = person["build"] * w * 0.32 * scale
    head_r = ph * 0.075
    neck = top + 2 * head_r
    waist = neck + ph * (0.95 - person["legs"] - 0.15)
    feet = top + ph * 0.98

    def fill(c: np.ndarray) -> tuple[int, int, int]:
        return tuple(int(v) for v in c)

    draw.ellipse([cx - head_r, top, cx + head_r, neck], fill=fill(person["skin"]))
    draw.rectangle([cx - half, neck, cx + half, waist], fill=fill(person["upper"]))
    if person["pattern"] == 1:
        for y in np.arange(neck + 3, waist, 6):
            draw.rectangle([cx - half, y, cx + half, y + 2], fill=fill(person["accent"]))
    elif person["pattern"] == 2:
        draw.rectangle(
            [cx - half * 0.25, neck, cx + half * 0.25, waist], fill=fill(person["accent"])
        )
    elif person["pattern"] == 3:
        draw.rectangle([cx, neck, cx + half, waist], fill=fill(person["accent"]))
    leg_w = half * 0.45
    stride = rng.uniform(0, half * 0.4)
    draw.rectangle(
        [cx - half * 0.9 - stride, waist, cx - half * 0.9 + leg_w, feet], fill=fill(person["lower"])
    )
    draw.rectangle(
        [cx + half * 0.9 - leg_w, waist, cx + half * 0.9 + stride, feet], fill=fill(person["lower"])
    )
    if person["bag"]:
        side = 1 if rng.random() < 0.5 else -1
        bx = cx + side * half
        draw.rectangle([bx - 5, neck + 6, bx + 5, waist - 4], fill=fill(person["accent"] * 0.5))
    if rng.random() < spec.occlusion_prob:
        oy = rng.uniform(0.4, 0.8) * h
        draw.rectangle(
            [0, oy, w, oy + rng.uniform(0.15, 0.3) * h], fill=fill(camera["texture"] + 60)
        )
    pixels = np.asarray(img, dtype=np.float32) * camera["gain"] + camera["brightness"]
    pixels += rng.normal(0.0, spec.noise_std, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write(folder: Path, pid: int, camid: int, frame: int, image: Image.Image) -> None:
    pid_str = "-1" if pid == -1 else f"{pid:04d}"
    image.save(folder / f"{pid_str}_c{camid + 1}s1_{frame:06d}_00.jpg", quality=92)


def generate_synthetic_market(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write (or reuse) the synthetic dataset for ``spec`` under ``root`` and return its folder.

    The folder is ``root/synthetic-<digest>`` and holds ``bounding_box_train``, ``query`` and
    ``bounding_box_test`` in Market-1501 naming. Generation is deterministic in ``spec.seed``;
    a finished folder (manifest present and equal) is reused as a cache.
    """
    spec = spec or SyntheticSpec()
    spec.validate()
    out = Path(root).expanduser() / f"synthetic-{spec.digest()}"
    manifest = out / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == asdict(spec):
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dirs = {name: tmp / name for name in ("bounding_box_train", "query", "bounding_box_test")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    cameras = [_camera(rng) for _ in range(spec.num_cameras)]
    frame = 0
    total_ids = spec.num_train_ids + spec.num_test_ids
    for index in range(total_ids):
        pid = index + 1  # pid 0 is reserved for distractors
        person = _identity(rng)
        n_cams = int(rng.integers(spec.min_cameras_per_id, spec.max_cameras_per_id + 1))
        cams = rng.choice(spec.num_cameras, size=n_cams, replace=False)
        for camid in sorted(int(c) for c in cams):
            for shot in range(spec.images_per_camera):
                frame += 1
                image = _render(person, cameras[camid], spec, rng)
                if index < spec.num_train_ids:
                    folder = dirs["bounding_box_train"]
                else:
                    folder = dirs["query"] if shot == 0 else dirs["bounding_box_test"]
                _write(folder, pid, camid, frame, image)
    for pid, count in ((0, spec.num_distractors), (-1, spec.num_junk)):
        for _ in range(count):
            frame += 1
            camid = int(rng.integers(spec.num_cameras))
            _write(
                dirs["bounding_box_test"],
                pid,
                camid,
                frame,
                _render(_identity(rng), cameras[camid], spec, rng),
            )
    (tmp / MANIFEST).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
