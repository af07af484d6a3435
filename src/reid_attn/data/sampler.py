"""Identity-balanced P x K sampling for metric learning."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


class PKSampler(Sampler[int]):
    """Yields dataset indices; each consecutive ``P*K`` form one batch of P identities x K images.

    One epoch: every identity's images are shuffled and cut into chunks of K (an identity with
    fewer than K images is topped up by sampling its images again). Batches take P distinct
    identities at random, weighted by their remaining chunks, until fewer than P identities have
    chunks left; those last identities are completed with random other identities, so every
    identity appears in every epoch. The order is a pure function of ``seed`` and the epoch
    (:meth:`set_epoch`). Under DDP, rank ``r`` of ``W`` takes batches ``r, r+W, ...`` of the
    same global order (an equal count per rank), so ranks see disjoint batches.

    Args:
        pids: identity label of each dataset index, length N.
        num_identities: P, identities per batch.
        num_instances: K, images per identity in a batch.
        seed: base seed of the shuffles.
        rank, world_size: default to the initialised process group, else 0 and 1.
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_identities: int = 16,
        num_instances: int = 4,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if num_identities < 1 or num_instances < 1:
            raise ValueError(
                f"num_identities and num_instances must be >= 1, got {num_identities}, "
                f"{num_instances}"
            )
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        if len(by_pid) < num_identities:
            raise ValueError(
                f"PKSampler needs at least num_identities={num_identities} identities, "
                f"the dataset has {len(by_pid)}"
            )
        distributed = dist.is_available() and dist.is_initialized()
        self.world_size = (
            world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        )
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} out of range for world_size {self.world_size}")
        self.index_by_pid = [np.asarray(v) for _, v in sorted(by_pid.items())]
        self.num_identities = num_identities
        self.num_instances = num_instances
        self.seed = seed
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    @property
    def batch_size(self) -> int:
        """P * K."""
        return self.num_identities * self.num_instances

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose deterministic order :meth:`__iter__` yields."""
        self.epoch = epoch

    def _chunks(self, rng: np.random.Generator, indices: np.ndarray) -> list[np.ndarray]:
        k = self.num_instances
        shuffled = rng.permutation(indices)
        if len(shuffled) < k:
            shuffled = np.concatenate([shuffled, rng.choice(indices, k - len(shuffled))])
        usable = len(shuffled) - len(shuffled) % k
        return [shuffled[i : i + k] for i in range(0, usable, k)]

    def global_batches(self) -> list[np.ndarray]:
        """All batches of the current epoch before the split across ranks (P*K indices each)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = [self._chunks(rng, idx) for idx in self.index_by_pid]
        remaining = np.array([len(c) for c in chunks])
        p = self.num_identities
        batches = []
        while remaining.sum() > 0:
            available = np.flatnonzero(remaining)
            if len(available) >= p:
                chosen = rng.choice(
                    available, p, replace=False, p=remaining[available] / remaining[available].sum()
                )
            else:
                others = np.setdiff1d(np.arange(len(chunks)), available)
                chosen = np.concatenate(
                    [available, rng.choice(others, p - len(available), replace=False)]
                )
            batch = []
            for pid in chosen:
                if remaining[pid] > 0:
                    remaining[pid] -= 1
                    batch.append(chunks[pid][remaining[pid]])
                else:  # filler identity: a fresh random chunk
                    batch.append(self._chunks(rng, self.index_by_pid[pid])[0])
            batches.append(np.concatenate(batch))
        self._cache = (self.epoch, batches)
        return batches

    def rank_batches(self) -> list[np.ndarray]:
        """This rank's batches of the current epoch (P*K indices each), in order."""
        batches = self.global_batches()
        per_rank = len(batches) // self.world_size
        return batches[self.rank : per_rank * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        for batch in self.rank_batches():
            yield from (int(i) for i in batch)

    def __len__(self) -> int:
        return len(self.rank_batches()) * self.batch_size
