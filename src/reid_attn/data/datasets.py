"""Parsers for re-id datasets stored in the Market-1501 folder and file-name layout.

Each parser exposes ``.train``, ``.query`` and ``.gallery``: lists of ``(img_path, pid, camid)``
with training pids relabelled to ``0..N-1`` and camera ids 0-based. Junk images (pid -1) are
dropped; distractors (pid 0) stay in the gallery.
"""

from __future__ import annotations

import re
from pathlib import Path

Item = tuple[str, int, int]

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

    def __init__(self, root: str | Path, verbose: bool = True) -> None:
        self.root = Path(root).expanduser()
        self._check_layout()
        train = self._parse(self.train_dir)
        self.train = self._relabel(train)
        self.query = self._parse(self.query_dir)
        self.gallery = self._parse(self.gallery_dir)
        for split, items in (
            ("train", self.train),
            ("query", self.query),
            ("gallery", self.gallery),
        ):
            if not items:
                raise DatasetError(f"{self.name}: the {split} split in {self.root} has no images")
        if verbose:
            print(self.statistics_table())

    def _expected_layout(self) -> str:
        dirs = (self.train_dir, self.query_dir, self.gallery_dir)
        return "\n".join(f"  {self.root}/{d}/{self.file_example}" for d in dirs)

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.name}: dataset root {self.root} does not exist; expected the layout\n"
                f"{self._expected_layout()}\n(nothing is downloaded automatically; set data.root)"
            )
        missing = [
            d
            for d in (self.train_dir, self.query_dir, self.gallery_dir)
            if not (self.root / d).is_dir()
        ]
        if missing:
            raise DatasetError(
                f"{self.name}: {self.root} is not a {self.name} folder: missing "
                f"{', '.join(missing)}; expected the layout\n{self._expected_layout()}"
            )

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
            pid, camera = int(match.group(1)), int(match.group(2))
            if pid == -1:
                continue
            if pid < 0:
                raise DatasetError(f"{self.name}: invalid person id {pid} in {path}")
            if not 1 <= camera <= self.num_cameras:
                raise DatasetError(
                    f"{self.name}: camera {camera} in {path} is out of range 1..{self.num_cameras}"
                )
            items.append((str(path), pid, camera - 1))
        return items

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
        for split, items in (
            ("train", self.train),
            ("query", self.query),
            ("gallery", self.gallery),
        ):
            ids = len({pid for _, pid, _ in items})
            cams = len({camid for _, _, camid in items})
            lines.append(f"  {split:<8} | {ids:5d} | {len(items):8d} | {cams:9d}")
        return "\n".join(lines)
