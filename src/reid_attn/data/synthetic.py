"""A deterministic synthetic person re-id dataset written in the Market-1501 layout.

Every identity has its own clothing drawn from a small shared palette (upper and lower
colours, sleeves, shorts, a pattern, shoes, hair, hat, backpack, handbag) and body shape;
every camera its own background clutter, illumination, colour cast, blur and mix of
viewpoints (front, back, side change what is visible); every image its own pose, scale and
crop jitter, stride, noise and occasional occluder. Because colours repeat across identities,
a colour histogram is a weak matcher and the layout has to be learned. The Market-1501
parser reads the result, so the whole pipeline runs with no download.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MANIFEST = "synthetic.json"
#: Bumped whenever the renderer changes, so cached folders of older renderers are not reused.
GENERATOR_VERSION = 2


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
    #: The renderer that drew the data; a checkpoint records it, so evaluating a model on
    #: data of another renderer is an error rather than a silent switch.
    generator_version: int = GENERATOR_VERSION

    def validate(self) -> None:
        """Raise ValueError on counts that cannot form a re-id dataset, or on data of another
        renderer version than this code draws."""
        if self.generator_version != GENERATOR_VERSION:
            raise ValueError(
                f"synthetic data of renderer version {self.generator_version} was asked for "
                f"(e.g. by a checkpoint trained on it); this code draws version "
                f"{GENERATOR_VERSION}: retrain, or evaluate on other data with data=..."
            )
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


# Clothing comes from a small palette, so many identities share the same colours and differ
# only in where they wear them (a colour histogram cannot tell them apart; layout can).
PALETTE = np.array(
    [
        [200, 30, 35],
        [30, 60, 170],
        [25, 25, 30],
        [225, 225, 220],
        [120, 120, 125],
        [40, 130, 60],
        [220, 190, 40],
        [120, 75, 40],
        [20, 30, 80],
        [220, 120, 160],
    ],
    dtype=np.float64,
)
VIEWS = ("front", "back", "side")


def _palette_colour(rng: np.random.Generator) -> np.ndarray:
    return PALETTE[rng.integers(len(PALETTE))] + rng.normal(0.0, 8.0, size=3)


def _identity(rng: np.random.Generator) -> dict:
    return {
        "upper": _palette_colour(rng),
        "lower": _palette_colour(rng),
        "accent": _palette_colour(rng),
        "shoes": _palette_colour(rng) * 0.6,
        "hair": PALETTE[[2, 7, 6, 4][rng.integers(4)]] * rng.uniform(0.6, 1.0),
        "skin": np.array([rng.uniform(150, 235), rng.uniform(105, 185), rng.uniform(80, 150)]),
        "pattern": int(rng.integers(0, 5)),  # solid, h-stripes, v-stripe, open jacket, logo
        "short_sleeves": bool(rng.random() < 0.4),
        "shorts": bool(rng.random() < 0.25),
        "backpack": _palette_colour(rng) if rng.random() < 0.35 else None,
        "handbag": _palette_colour(rng) if rng.random() < 0.25 else None,
        "hat": _palette_colour(rng) if rng.random() < 0.2 else None,
        "build": float(rng.uniform(0.75, 1.0)),  # shoulder width fraction
        "legs": float(rng.uniform(0.42, 0.5)),  # leg length fraction of the height
    }


def _camera(rng: np.random.Generator) -> dict:
    hue = rng.random()
    return {
        "background": np.array(
            colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8))
        )
        * 255,
        "clutter": [_palette_colour(rng) * rng.uniform(0.5, 1.0) for _ in range(4)],
        "gain": rng.uniform(0.65, 1.3, size=3),  # colour cast
        "brightness": rng.uniform(-30, 30),
        "blur": float(rng.uniform(0.0, 1.2)),
        "views": rng.dirichlet(np.ones(3)),  # how often this camera sees front/back/side
    }


def _box(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float, colour) -> None:
    draw.rectangle(
        [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=tuple(int(c) for c in colour)
    )


def _render(
    person: dict, camera: dict, spec: SyntheticSpec, rng: np.random.Generator
) -> Image.Image:
    h, w = spec.height, spec.width
    img = Image.new("RGB", (w, h), tuple(int(c) for c in camera["background"]))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):  # background clutter
        x0, y0 = rng.uniform(-w / 4, w), rng.uniform(-h / 4, h)
        colour = camera["clutter"][rng.integers(len(camera["clutter"]))]
        _box(draw, x0, y0, x0 + rng.uniform(4, w / 2), y0 + rng.uniform(4, h / 3), colour)
    view = VIEWS[rng.choice(3, p=camera["views"])]
    scale = rng.uniform(0.78, 1.0)
    ph = h * scale
    cx = w / 2 + rng.uniform(-0.15, 0.15) * w
    top = (h - ph) * rng.uniform(0.1, 0.9)
    half = person["build"] * w * 0.3 * scale * (0.65 if view == "side" else 1.0)
    head_r = ph * 0.075
    neck = top + 2 * head_r
    waist = neck + ph * (0.95 - person["legs"] - 0.17)
    feet = top + ph * 0.97
    knee = waist + (feet - waist) * 0.5
    arm_w = max(2.0, half * 0.3)

    # head, hair, hat
    face = person["hair"] if view == "back" else person["skin"]
    draw.ellipse([cx - head_r, top, cx + head_r, neck], fill=tuple(int(c) for c in face))
    _box(draw, cx - head_r, top, cx + head_r, top + head_r * 0.6, person["hair"])
    if person["hat"] is not None:
        _box(
            draw,
            cx - head_r * 1.2,
            top - head_r * 0.2,
            cx + head_r * 1.2,
            top + head_r * 0.5,
            person["hat"],
        )
    # legs and shoes (drawn before the torso), stride varies per image
    stride = rng.uniform(0, half * 0.5)
    leg_w = half * 0.45
    for side in (-1, 1):
        x_hip = cx + side * half * 0.5
        x_foot = x_hip + side * stride
        lower_end = knee if person["shorts"] else feet
        _box(draw, x_hip - leg_w / 2, waist, x_foot + leg_w / 2, lower_end, person["lower"])
        if person["shorts"]:
            _box(draw, x_foot - leg_w / 2.5, knee, x_foot + leg_w / 2.5, feet, person["skin"])
        _box(draw, x_foot - leg_w / 2, feet - ph * 0.03, x_foot + leg_w / 2, feet, person["shoes"])
    # torso with its pattern
    _box(draw, cx - half, neck, cx + half, waist, person["upper"])
    pattern, accent = person["pattern"], person["accent"]
    if pattern == 1:
        for y in np.arange(neck + 3, waist, max(4.0, ph / 22)):
            _box(draw, cx - half, y, cx + half, y + max(1.0, ph / 60), accent)
    elif pattern == 2:
        _box(draw, cx - half * 0.25, neck, cx + half * 0.25, waist, accent)
    elif pattern == 3 and view == "front":  # open jacket shows the shirt
        _box(draw, cx - half * 0.35, neck, cx + half * 0.35, waist, accent)
    elif pattern == 4 and view == "front":  # chest logo
        _box(draw, cx - half * 0.4, neck + ph * 0.05, cx + half * 0.4, neck + ph * 0.14, accent)
    # arms (one visible from the side)
    sides = (1,) if view == "side" else (-1, 1)
    swing = rng.uniform(-0.15, 0.15) * ph
    for side in sides:
        x = cx + side * (half + arm_w / 2) if view != "side" else cx + swing * 0.3
        elbow = neck + (waist - neck) * 0.55
        sleeve_end = elbow if person["short_sleeves"] else waist
        _box(draw, x - arm_w / 2, neck, x + arm_w / 2, sleeve_end, person["upper"])
        _box(draw, x - arm_w / 2, sleeve_end, x + arm_w / 2, waist + ph * 0.05, person["skin"])
    # bags: a backpack covers the back, shows as straps from the front and an edge from the side
    if person["backpack"] is not None:
        if view == "back":
            _box(
                draw,
                cx - half * 0.8,
                neck + ph * 0.03,
                cx + half * 0.8,
                waist - ph * 0.02,
                person["backpack"],
            )
        elif view == "front":
            for side in (-1, 1):
                _box(
                    draw,
                    cx + side * half * 0.6,
                    neck,
                    cx + side * half * 0.45,
                    waist - ph * 0.05,
                    person["backpack"],
                )
        else:
            _box(
                draw,
                cx - half * 1.6,
                neck + ph * 0.03,
                cx - half,
                waist - ph * 0.04,
                person["backpack"],
            )
    if person["handbag"] is not None:
        bx = cx + (half + arm_w) * (1 if rng.random() < 0.5 else -1)
        _box(
            draw,
            bx - ph * 0.04,
            waist - ph * 0.02,
            bx + ph * 0.04,
            waist + ph * 0.09,
            person["handbag"],
        )
    if rng.random() < spec.occlusion_prob:  # a passer-by, a pole or a car in front
        if rng.random() < 0.5:
            oy = rng.uniform(0.45, 0.8) * h
            _box(draw, 0, oy, w, oy + rng.uniform(0.15, 0.3) * h, camera["clutter"][0])
        else:
            ox = rng.uniform(0, w)
            _box(draw, ox, 0, ox + rng.uniform(0.15, 0.35) * w, h, camera["clutter"][1])
    if camera["blur"] > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(camera["blur"] * rng.uniform(0.6, 1.2)))
    pixels = np.asarray(img, dtype=np.float32) * camera["gain"] * rng.uniform(0.85, 1.15)
    pixels += camera["brightness"] + rng.normal(0.0, spec.noise_std, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write(folder: Path, pid: int, camid: int, frame: int, image: Image.Image) -> None:
    pid_str = "-1" if pid == -1 else f"{pid:04d}"
    image.save(folder / f"{pid_str}_c{camid + 1}s1_{frame:06d}_00.jpg", quality=92)


def _is_finished(folder: Path, spec: SyntheticSpec) -> bool:
    manifest = folder / MANIFEST
    return manifest.is_file() and json.loads(manifest.read_text()) == asdict(spec)


def generate_synthetic_market(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write (or reuse) the synthetic dataset for ``spec`` under ``root`` and return its folder.

    The folder is ``root/synthetic-<digest>`` and holds ``bounding_box_train``, ``query`` and
    ``bounding_box_test`` in Market-1501 naming. Generation is deterministic in ``spec.seed``;
    a finished folder (manifest present and equal) is reused as a cache. Each process renders
    into a folder of its own and renames it into place, so jobs that start together (a
    multirun's parallel jobs, a SLURM array on a shared disk) never read a half-written one:
    the first to finish wins, the others discard their copy.
    """
    spec = spec or SyntheticSpec()
    spec.validate()
    out = Path(root).expanduser() / f"synthetic-{spec.digest()}"
    if _is_finished(out, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would keep the cache from other users of a shared disk
    try:
        _render_dataset(tmp, spec)
        (tmp / MANIFEST).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))
        if out.exists() and not _is_finished(out, spec):
            shutil.rmtree(out)  # left by an interrupted older version: replace it
        try:
            tmp.rename(out)
        except OSError:  # another process put the same dataset in place first
            if not _is_finished(out, spec):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _render_dataset(tmp: Path, spec: SyntheticSpec) -> None:
    """Render every image of ``spec`` into ``tmp`` (the three Market-1501 folders)."""
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
