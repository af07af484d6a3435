"""Parsers for re-id datasets stored in the Market-1501 folder and file-name layout.

Each parser exposes ``.train``, ``.query`` and ``.gallery``: lists of ``(img_path, pid, camid)``
with training pids relabelled to ``0..N-1`` and camera ids 0-based. Junk images (pid -1) are
dropped; distractors (pid 0) stay in the gallery.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import ClassVar

Item = tuple[str, int, int]

#: File types the dataset parsers take (the Market-1501 family is JPEG); a user's own folders
#: take more (:data:`reid_attn.inference.USER_IMAGE_SUFFIXES`).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(Exception):
    """A dataset folder is missing, malformed or unreadable."""


class Market1501:
    """Market-1501 (Zheng et al., ICCV 2015).

    Expected layout under ``root``::

        bounding_box_train/PPPP_cCsS_FFFFFF_NN.jpg
        query/PPPP_cCsS_FFFFFF_NN.jpg
        bounding_box_test/PPPP_cCsS_FFFFFF_NN.jpg

    ``PPPP`` is the person id (``-1`` junk, ``0`` distractor), ``C`` the 1-based camera.
    """

    name = "market1501"
    num_cameras = 6
    train_dir = "bounding_box_train"
    query_dir = "query"
    gallery_dir = "bounding_box_test"
    file_pattern = re.compile(r"^(-?\d+)_c(\d+)")
    file_example = "0002_c1s1_000451_03.jpg"
    #: Published split sizes (identities, images); None where the paper gives no figure.
    published: ClassVar[dict[str, tuple[int | None, int]]] = {
        "train": (751, 12936),
        "query": (750, 3368),
        "gallery": (None, 15913),  # 19,732 files, of which the junk ones are dropped
    }

    def __init__(self, root: str | Path, verbose: bool = True, check_counts: bool = True) -> None:
        self.root = Path(root).expanduser()
        self._check_layout()
        train, self.query, self.gallery = self._load_splits()
        self.train = self._relabel(train)
        for split, items in self.splits():
            if not items:
                raise DatasetError(f"{self.name}: the {split} split in {self.root} has no images")
        if verbose:
            print(self.statistics_table())
        if check_counts:
            for message in self.count_mismatches():
                warnings.warn(message, stacklevel=2)

    def splits(self) -> tuple[tuple[str, list[Item]], ...]:
        """``(name, items)`` of the train, query and gallery splits, in that order."""
        return (("train", self.train), ("query", self.query), ("gallery", self.gallery))

    def _load_splits(self) -> tuple[list[Item], list[Item], list[Item]]:
        return (
            self._parse(self.train_dir),
            self._parse(self.query_dir),
            self._parse(self.gallery_dir),
        )

    def count_mismatches(self) -> list[str]:
        """One message per split whose identity or image count differs from the published one."""
        messages = []
        for split, items in self.splits():
            ids, images = self.published[split]
            found_ids = len({pid for _, pid, _ in items})
            if len(items) != images or (ids is not None and found_ids != ids):
                expected = f"{ids} ids / {images} images" if ids else f"{images} images"
                messages.append(
                    f"{self.name} {split} split: found {found_ids} ids / {len(items)} images, "
                    f"published {expected} (incomplete or modified copy at {self.root}?)"
                )
        return messages

    def _expected_layout(self) -> str:
        dirs = (self.train_dir, self.query_dir, self.gallery_dir)
        return "\n".join(f"  {self.root}/{d}/{self.file_example}" for d in dirs)

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.name}: dataset root {self.root} does not exist; expected the layout\n"
                f"{self._expected_layout()}\n(nothing is downloaded automatically; set data.root)"
            )
        missing = self._missing_parts()
        if missing:
            raise DatasetError(
                f"{self.name}: {self.root} is not a {self.name} folder: missing "
                f"{', '.join(missing)}; expected the layout\n{self._expected_layout()}"
            )

    def _missing_parts(self) -> list[str]:
        """Names of the expected folders (or files) that ``root`` lacks."""
        dirs = (self.train_dir, self.query_dir, self.gallery_dir)
        return [d for d in dirs if not (self.root / d).is_dir()]

    def _parse(self, folder: str) -> list[Item]:
        items: list[Item] = []
        for path in sorted((self.root / folder).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            match = self.file_pattern.match(path.name)
            if match is None:
                raise DatasetError(
                    f"{self.name}: cannot parse file name {path}; expected names like "
                    f"{self.file_example} (person id, then _c and the camera number)"
                )
            item = self._item(path, int(match.group(1)), int(match.group(2)))
            if item is not None:
                items.append(item)
        return items

    def _item(self, path: Path, pid: int, camera: int) -> Item | None:
        """Validate one parsed image: ``None`` for junk (pid -1), else ``(path, pid, camid)``
        with the 1-based ``camera`` made 0-based."""
        if pid == -1:
            return None
        if pid < 0:
            raise DatasetError(f"{self.name}: invalid person id {pid} in {path}")
        if not 1 <= camera <= self.num_cameras:
            raise DatasetError(
                f"{self.name}: camera {camera} in {path} is out of range 1..{self.num_cameras}"
            )
        return (str(path), pid, camera - 1)

    @staticmethod
    def _relabel(items: list[Item]) -> list[Item]:
        labels = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in items}))}
        return [(path, labels[pid], camid) for path, pid, camid in items]

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (= classifier outputs)."""
        return len({pid for _, pid, _ in self.train})

    def statistics_table(self) -> str:
        """The usual re-id split table: identities / images / cameras per split."""
        lines = [
            f"=> {self.name} loaded from {self.root}",
            "  subset   | # ids | # images | # cameras",
            "  ---------+-------+----------+----------",
        ]
        for split, items in self.splits():
            ids = len({pid for _, pid, _ in items})
            cams = len({camid for _, _, camid in items})
            lines.append(f"  {split:<8} | {ids:5d} | {len(items):8d} | {cams:9d}")
        return "\n".join(lines)


class SyntheticMarket(Market1501):
    """The built-in synthetic data (:mod:`reid_attn.data.synthetic`), written in Market-1501's
    layout and parsed as Market-1501; named for what it is in the split table and errors."""

    name = "synthetic"


class DukeMTMC(Market1501):
    """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): Market-1501's layout, 8 cameras,
    names like ``0001_c2_f0046182.jpg``."""

    name = "dukemtmc"
    num_cameras = 8
    file_example = "0001_c2_f0046182.jpg"
    published: ClassVar[dict[str, tuple[int | None, int]]] = {
        "train": (702, 16522),
        "query": (702, 2228),
        "gallery": (None, 17661),
    }


class MSMT17(Market1501):
    """MSMT17 (Wei et al. 2018), 15 cameras, split by list files.

    Expected layout under ``root`` (V1; V2 uses ``mask_train_v2/`` and ``mask_test_v2/``)::

        train/0000/0000_000_01_0303morning_0015_0.jpg   list_train.txt  list_val.txt
        test/0000/0000_000_01_0303morning_0008_0.jpg    list_query.txt  list_gallery.txt

    Each list line is ``<relative path> <pid>``; the camera is the third ``_`` field of the
    file name. Training uses train + val, as is customary.
    """

    name = "msmt17"
    num_cameras = 15
    file_example = "0000/0000_000_01_0303morning_0015_0.jpg 0"
    published: ClassVar[dict[str, tuple[int | None, int]]] = {
        "train": (1041, 32621),
        "query": (3060, 11659),
        "gallery": (3060, 82161),
    }
    layouts = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
    lists = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")

    def _expected_layout(self) -> str:
        files = ", ".join(self.lists)
        return (
            f"  {self.root}/train/ and {self.root}/test/ (V1) or mask_train_v2/ and "
            f"mask_test_v2/ (V2), with {files} in {self.root}"
        )

    def _missing_parts(self) -> list[str]:
        """Missing list files, or the image folders when neither layout is present; selects
        the V1 or V2 folders that are."""
        found = [pair for pair in self.layouts if all((self.root / d).is_dir() for d in pair)]
        if found:
            self.train_dir, self.gallery_dir = found[0]
            self.query_dir = self.gallery_dir
        missing = [f for f in self.lists if not (self.root / f).is_file()]
        return missing or ([] if found else ["train/test image folders"])

    def _read_list(self, list_name: str, folder: str) -> list[Item]:
        items: list[Item] = []
        for number, line in enumerate((self.root / list_name).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            fields = Path(parts[0]).name.split("_")
            if (
                len(parts) != 2
                or not parts[1].lstrip("-").isdigit()
                or len(fields) < 3
                or not fields[2].isdigit()
            ):
                raise DatasetError(
                    f"{self.name}: cannot parse line {number} of {self.root / list_name}: "
                    f"{line!r}; expected lines like {self.file_example!r}"
                )
            item = self._item(self.root / folder / parts[0], int(parts[1]), int(fields[2]))
            if item is not None:
                items.append(item)
        return items

    def splits(self) -> tuple[tuple[str, list[Item]], ...]:
        """``(name, items)`` of the train, query and gallery splits, in that order."""
        return (("train", self.train), ("query", self.query), ("gallery", self.gallery))

    def _load_splits(self) -> tuple[list[Item], list[Item], list[Item]]:
        train = self._read_list("list_train.txt", self.train_dir)
        train += self._read_list("list_val.txt", self.train_dir)
        return (
            train,
            self._read_list("list_query.txt", self.query_dir),
            self._read_list("list_gallery.txt", self.gallery_dir),
        )
