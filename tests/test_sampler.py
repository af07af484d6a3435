"""Tests for reid_attn.data.sampler.PKSampler: batch structure, coverage, determinism, DDP split."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from reid_attn.data.sampler import PKSampler


def _interleaved_pids(counts: dict[int, int], seed: int = 0) -> list[int]:
    """A pids list with ``counts[pid]`` images per identity, in a shuffled (non-grouped) order."""
    pids = [pid for pid, n in counts.items() for _ in range(n)]
    order = np.random.default_rng(seed).permutation(len(pids))
    return [pids[i] for i in order]


# Uneven counts: 11 and 15 have fewer than K=4 images; 7 identities, not divisible by P=3.
UNEVEN = {10: 7, 11: 1, 12: 3, 13: 4, 14: 9, 15: 2, 16: 5}
UNEVEN_PIDS = _interleaved_pids(UNEVEN)


def _indices_by_pid(pids: list[int]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for index, pid in enumerate(pids):
        out[pid].add(index)
    return out


def _epoch(sampler: PKSampler, epoch: int | None = None) -> list[int]:
    if epoch is not None:
        sampler.set_epoch(epoch)
    return list(sampler)


def _batches(indices: list[int], p: int, k: int) -> list[list[int]]:
    assert len(indices) % (p * k) == 0
    return [indices[i : i + p * k] for i in range(0, len(indices), p * k)]


def _chunks_of(batch: list[int], pids: list[int], k: int) -> list[tuple[int, list[int]]]:
    """Split one batch into its K-long per-identity chunks: [(pid, chunk), ...]."""
    out = []
    for start in range(0, len(batch), k):
        chunk = batch[start : start + k]
        chunk_pids = {pids[i] for i in chunk}
        assert len(chunk_pids) == 1, f"chunk {chunk} mixes identities {chunk_pids}"
        out.append((chunk_pids.pop(), chunk))
    return out


# --------------------------------------------------------------------------- batch structure


@pytest.mark.parametrize(
    ("counts", "p", "k"),
    [
        (UNEVEN, 3, 4),
        (UNEVEN, 2, 2),
        (UNEVEN, 7, 3),  # P == number of identities
        ({1: 1, 2: 1, 3: 1, 4: 2}, 2, 5),  # every identity topped up
        ({pid: 3 + pid % 5 for pid in range(20)}, 4, 3),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_batch_is_p_identities_times_k_images(
    counts: dict[int, int], p: int, k: int, seed: int
) -> None:
    pids = _interleaved_pids(counts, seed=seed)
    by_pid = _indices_by_pid(pids)
    sampler = PKSampler(pids, num_identities=p, num_instances=k, seed=seed)
    for epoch in range(3):
        indices = _epoch(sampler, epoch)
        assert indices, "an epoch must yield at least one batch"
        for batch in _batches(indices, p, k):
            assert len(batch) == p * k
            assert all(0 <= i < len(pids) for i in batch)
            chunks = _chunks_of(batch, pids, k)
            batch_pids = [pid for pid, _ in chunks]
            assert len(set(batch_pids)) == p, f"identities repeat in batch {batch}"
            per_pid = Counter(pids[i] for i in batch)
            assert set(per_pid.values()) == {k}
            for pid, chunk in chunks:
                assert set(chunk) <= by_pid[pid]
                if counts[pid] < k:
                    # topped up by resampling: all its images are there, some repeated
                    assert set(chunk) == by_pid[pid]
                    assert len(chunk) - len(set(chunk)) == k - counts[pid]
                else:
                    assert len(set(chunk)) == k, f"chunk {chunk} of pid {pid} repeats an image"


@pytest.mark.parametrize("seed", [0, 3, 11])
@pytest.mark.parametrize(("p", "k"), [(3, 4), (2, 2), (4, 1), (5, 3)])
def test_every_identity_appears_in_every_epoch(seed: int, p: int, k: int) -> None:
    pids = UNEVEN_PIDS  # 7 identities: P=2,3,4,5 do not divide it
    sampler = PKSampler(pids, num_identities=p, num_instances=k, seed=seed)
    for epoch in range(5):
        seen = {pids[i] for i in _epoch(sampler, epoch)}
        assert seen == set(UNEVEN), f"epoch {epoch} misses identities {set(UNEVEN) - seen}"


@pytest.mark.parametrize(("p", "k"), [(3, 4), (2, 2), (7, 1), (4, 3)])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_len_matches_yielded_indices(p: int, k: int, world_size: int) -> None:
    pids = _interleaved_pids({pid: 2 + (3 * pid) % 9 for pid in range(15)}, seed=5)
    for rank in range(world_size):
        sampler = PKSampler(pids, p, k, seed=2, rank=rank, world_size=world_size)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            n = len(sampler)
            assert n == len(list(sampler))
            assert n % (p * k) == 0
            assert n == sampler.batch_size * (len(sampler.global_batches()) // world_size)
    assert PKSampler(pids, p, k).batch_size == p * k


def test_default_rank_and_world_size_without_process_group() -> None:
    sampler = PKSampler(UNEVEN_PIDS, 3, 4)
    assert (sampler.rank, sampler.world_size) == (0, 1)
    assert [int(i) for b in sampler.global_batches() for i in b] == list(sampler)


# --------------------------------------------------------------------------- determinism


def test_same_seed_and_epoch_give_identical_order() -> None:
    a = PKSampler(UNEVEN_PIDS, 3, 4, seed=5)
    b = PKSampler(UNEVEN_PIDS, 3, 4, seed=5)
    first = list(a)
    assert list(a) == first  # iterating again (cached or not) repeats the epoch
    assert list(b) == first
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)


def test_set_epoch_changes_order() -> None:
    sampler = PKSampler(UNEVEN_PIDS, 3, 4, seed=5)
    orders = [tuple(_epoch(sampler, e)) for e in range(5)]
    assert len(set(orders)) == 5
    # going back to an epoch reproduces it exactly
    assert tuple(_epoch(sampler, 1)) == orders[1]


def test_different_seeds_differ() -> None:
    orders = {tuple(PKSampler(UNEVEN_PIDS, 3, 4, seed=s)) for s in range(5)}
    assert len(orders) == 5


def test_fresh_sampler_reproduces_old_sampler_epoch() -> None:
    old = PKSampler(UNEVEN_PIDS, 3, 4, seed=9)
    history = {e: _epoch(old, e) for e in range(4)}
    fresh = PKSampler(UNEVEN_PIDS, 3, 4, seed=9)
    fresh.set_epoch(3)
    assert list(fresh) == history[3]
    fresh.set_epoch(0)
    assert list(fresh) == history[0]


# --------------------------------------------------------------------------- no replacement


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("p", "k"), [(3, 4), (2, 4), (6, 4)])
def test_no_replacement_when_every_identity_fills_one_chunk(seed: int, p: int, k: int) -> None:
    # every identity forms exactly one chunk and P divides the number of identities: no filler
    # identities are needed, so an index repeats only inside a topped-up identity's chunk.
    counts = {100: 1, 101: 2, 102: 4, 103: 5, 104: 7, 105: 4}
    pids = _interleaved_pids(counts, seed=seed)
    sampler = PKSampler(pids, p, k, seed=seed)
    for epoch in range(3):
        indices = _epoch(sampler, epoch)
        assert len(indices) == len(counts) * k  # one chunk per identity
        repeated = {i for i, c in Counter(indices).items() if c > 1}
        assert {pids[i] for i in repeated} <= {pid for pid, n in counts.items() if n < k}
        for pid, n in counts.items():
            own = [i for i in indices if pids[i] == pid]
            assert len(own) == k
            if n >= k:
                assert len(set(own)) == k


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("p", "k"), [(3, 4), (2, 2), (4, 3)])
def test_own_chunks_are_drawn_without_replacement(seed: int, p: int, k: int) -> None:
    # An identity with n >= K images owns n // K chunks per epoch, drawn without replacement.
    # When fewer than P identities have chunks left, the batch is completed with filler
    # chunks of already-exhausted identities (documented); those come after the identity's
    # own chunks and only in the tail batches.
    pids = UNEVEN_PIDS
    sampler = PKSampler(pids, p, k, seed=seed)
    for epoch in range(3):
        batches = _batches(_epoch(sampler, epoch), p, k)
        appearances: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
        for b, batch in enumerate(batches):
            for pid, chunk in _chunks_of(batch, pids, k):
                appearances[pid].append((b, chunk))
        first_filler_batch: int | None = None
        for pid, n in UNEVEN.items():
            own_count = max(1, n // k)
            assert len(appearances[pid]) >= own_count
            own = [i for _, chunk in appearances[pid][:own_count] for i in chunk]
            if n >= k:
                assert len(set(own)) == len(own) == own_count * k, (
                    f"pid {pid}: an image was drawn twice among its own chunks"
                )
            fillers = appearances[pid][own_count:]
            if fillers and (first_filler_batch is None or fillers[0][0] < first_filler_batch):
                first_filler_batch = fillers[0][0]
        total_own = sum(max(1, n // k) for n in UNEVEN.values())
        if first_filler_batch is None:  # no filler: every batch is P own chunks
            assert len(batches) * p == total_own
        else:
            # every batch before the first filler consumed P own chunks, and some own chunk
            # was still left for the filler batch itself
            assert first_filler_batch * p < total_own
            assert len(batches) * p > total_own


# --------------------------------------------------------------------------- DDP split


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("seed", [0, 4])
def test_ddp_ranks_split_the_global_batches(world_size: int, seed: int) -> None:
    pids = _interleaved_pids({pid: 1 + (5 * pid) % 8 for pid in range(23)}, seed=seed)
    p, k = 3, 2
    single = PKSampler(pids, p, k, seed=seed, rank=0, world_size=1)
    for epoch in range(3):
        global_batches = _batches(_epoch(single, epoch), p, k)
        per_rank = len(global_batches) // world_size
        assert per_rank >= 2
        rank_batches = []
        for rank in range(world_size):
            sampler = PKSampler(pids, p, k, seed=seed, rank=rank, world_size=world_size)
            sampler.set_epoch(epoch)
            indices = list(sampler)
            assert len(indices) == len(sampler) == per_rank * p * k
            batches = _batches(indices, p, k)
            assert batches == global_batches[rank::world_size][:per_rank]
            rank_batches.append(batches)
        # each global batch goes to exactly one rank; interleaved by rank they give back the
        # global order (only the last len % world_size batches are dropped)
        interleaved = [rank_batches[r][j] for j in range(per_rank) for r in range(world_size)]
        assert interleaved == global_batches[: per_rank * world_size]


def test_ddp_rank_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="rank"):
        PKSampler(UNEVEN_PIDS, 3, 4, rank=2, world_size=2)


# --------------------------------------------------------------------------- errors


def test_fewer_identities_than_p_raises() -> None:
    with pytest.raises(ValueError, match="num_identities=8"):
        PKSampler(UNEVEN_PIDS, num_identities=8, num_instances=2)


@pytest.mark.parametrize(("p", "k"), [(0, 4), (3, 0), (-1, 2), (2, -3)])
def test_non_positive_p_or_k_raises(p: int, k: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        PKSampler(UNEVEN_PIDS, num_identities=p, num_instances=k)
