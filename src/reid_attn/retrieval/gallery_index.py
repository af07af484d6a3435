"""The gallery index: embeddings of a folder of images, kept on disk and brought up to date
incrementally.

An index is a folder of immutable part files ``part-<n>.pt`` (``torch.save``, read with
``weights_only=True``), each ``{"format", "key", "paths", "sizes", "mtimes", "features"}``:
absolute paths, file sizes (bytes), modification times (ns) and ``(n, D)`` float32 embeddings.
The ``key`` says what made the embeddings: a digest of the checkpoint's weights and the
embedding settings (input size, flip, evaluation precision). An entry is valid while its file
keeps its path, size and modification time and the key is the current one.

:meth:`GalleryIndex.update` keeps the valid entries, rewrites a part that holds stale ones
(files removed or changed) without them, deletes parts of another key (another checkpoint:
everything is embedded again), and embeds the remaining files batch by batch, writing one part
per batch through :func:`~reid_attn.runs.files.atomic_write`: an interrupted update loses at
most the batch in flight. At the end the parts written by the update are merged into one. A
crash between writing a new part and deleting the old ones leaves duplicate entries, which
the next update drops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reid_attn.runs.files import atomic_write

INDEX_FORMAT = 1
PART_GLOB = "part-*.pt"

#: ``embed(positions)`` -> batches ``(positions, features)`` for the files at those positions
#: of the listing; a position never yielded is an unreadable file.
Embedder = Callable[[list[int]], Iterator[tuple[Tensor, Tensor]]]


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file: absolute ``path``, ``size`` (bytes) and
    modification time ``mtime_ns``."""

    path: str
    size: int
    mtime_ns: int


def stamp_files(paths: Sequence[str | Path]) -> list[FileStamp]:
    """The :class:`FileStamp` of each path (made absolute), in order."""
    stamps = []
    for path in paths:
        absolute = Path(path).expanduser().absolute()
        info = absolute.stat()
        stamps.append(FileStamp(str(absolute), info.st_size, info.st_mtime_ns))
    return stamps


def weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of a state dict: every tensor's name, dtype, shape and bytes, by name."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class IndexUpdate:
    """The gallery after :meth:`GalleryIndex.update`.

    Attributes:
        paths: absolute paths of the indexed files, in listing order (unreadable ones left out).
        features: ``(len(paths), D)`` float32 embeddings, row ``i`` of ``paths[i]``.
        reused: entries taken from the index as they were.
        embedded: files embedded by this update.
        dropped: entries removed because their file is gone or changed.
        rebuilt: the index held embeddings of another key (checkpoint or settings).
        unreadable: paths of files that could not be read (not indexed).
    """

    paths: list[str]
    features: Tensor
    reused: int = 0
    embedded: int = 0
    dropped: int = 0
    rebuilt: bool = False
    unreadable: list[str] = field(default_factory=list)


class GalleryIndex:
    """The index in ``folder`` for embeddings made under ``key`` (plain JSON-like data)."""

    def __init__(self, folder: str | Path, key: dict[str, Any]) -> None:
        self.folder = Path(folder).expanduser()
        self.key = dict(key)

    def parts(self) -> list[Path]:
        """The part files, oldest first."""
        return sorted(self.folder.glob(PART_GLOB))

    def _next_number(self) -> int:
        numbers = [int(p.stem.split("-")[1]) for p in self.parts() if p.stem[5:].isdigit()]
        return max(numbers, default=0) + 1

    def _write_part(self, stamps: Sequence[FileStamp], features: Tensor) -> Path:
        part = {
            "format": INDEX_FORMAT,
            "key": self.key,
            "paths": [s.path for s in stamps],
            "sizes": torch.tensor([s.size for s in stamps], dtype=torch.int64),
            "mtimes": torch.tensor([s.mtime_ns for s in stamps], dtype=torch.int64),
            "features": features.float().contiguous(),
        }
        path = self.folder / f"part-{self._next_number():09d}.pt"
        return atomic_write(path, lambda file: torch.save(part, file))

    def _read_part(self, path: Path) -> dict[str, Any] | None:
        """A part's content, or None (the file is deleted) when it is unreadable or of
        another format or key."""
        try:
            part = torch.load(path, map_location="cpu", weights_only=True)
            usable = part.get("format") == INDEX_FORMAT and part.get("key") == self.key
        except Exception:  # truncated or foreign file: its entries are embedded again
            usable = False
        if not usable:
            path.unlink(missing_ok=True)
            return None
        return part

    def update(self, stamps: Sequence[FileStamp], embed: Embedder) -> IndexUpdate:
        """Bring the index up to date with the files ``stamps`` (the gallery listing) and
        return the gallery's embeddings in listing order; ``embed`` embeds the files at the
        given positions (see :data:`Embedder`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        wanted = {s.path: s for s in stamps}
        sources: list[Tensor] = []  # feature matrices the entries live in
        where: dict[str, tuple[int, int]] = {}  # path -> (source, row)
        dropped, rebuilt = 0, False
        for path in self.parts():
            part = self._read_part(path)
            if part is None:
                rebuilt = True
                continue
            rows = []
            for row, name in enumerate(part["paths"]):
                stamp = FileStamp(name, int(part["sizes"][row]), int(part["mtimes"][row]))
                if name in where:  # a duplicate left by an interrupted update
                    continue
                if wanted.get(name) == stamp:
                    rows.append(row)
                    where[name] = (len(sources), row)
                else:
                    dropped += 1
            sources.append(part["features"])
            if len(rows) < len(part["paths"]):
                if rows:
                    self._write_part(
                        [wanted[part["paths"][r]] for r in rows], part["features"][rows]
                    )
                path.unlink()
        reused = len(where)
        missing = [i for i, s in enumerate(stamps) if s.path not in where]
        written, new = [], []
        for positions, features in embed(missing):
            batch = [stamps[int(p)] for p in positions]
            written.append(self._write_part(batch, features))
            for row, stamp in enumerate(batch):
                where[stamp.path] = (len(sources), row)
            sources.append(features)
            new += batch
        if len(written) > 1:
            self._write_part(new, torch.cat(sources[len(sources) - len(written) :]))
            for path in written:
                path.unlink()
        order = [s.path for s in stamps if s.path in where]
        return IndexUpdate(
            paths=order,
            features=gather_rows(sources, [where[name] for name in order]),
            reused=reused,
            embedded=len(new),
            dropped=dropped,
            rebuilt=rebuilt,
            unreadable=[stamps[i].path for i in missing if stamps[i].path not in where],
        )


def gather_rows(sources: Sequence[Tensor], rows: Sequence[tuple[int, int]]) -> Tensor:
    """``(len(rows), D)`` float32: row ``r`` of ``sources[s]`` for each ``(s, r)``."""
    if not rows:
        return torch.zeros(0, sources[0].shape[1] if sources else 0)
    offsets = list(accumulate((len(t) for t in sources), initial=0))
    flat = torch.tensor([offsets[s] + r for s, r in rows])
    return torch.cat(list(sources)).float()[flat]
