"""Ranking metrics (CMC, mAP, mINP) for person re-identification.

Implements the Market-1501 evaluation protocol (as used by torchreid): for every query the
gallery is sorted by ascending distance, gallery images that share both the identity and the
camera of the query are discarded, and queries without any remaining true match are skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["evaluate_rank"]

#: Default number of query rows processed at once (bounds peak memory to O(chunk * num_g)).
DEFAULT_CHUNK_SIZE = 256


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array / torch tensor (CPU or CUDA) / array-like to a numpy array."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise ValueError(f"{name}: could not convert {type(x).__name__} to an array") from exc


def _check_1d(arr: np.ndarray, name: str, expected_len: int, axis_desc: str) -> None:
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with shape ({expected_len},) ({axis_desc}), "
            f"got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] != expected_len:
        raise ValueError(
            f"{name} must have length {expected_len} ({axis_desc}), got length {arr.shape[0]}"
        )


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    q_pids: np.ndarray | torch.Tensor,
    g_pids: np.ndarray | torch.Tensor,
    q_camids: np.ndarray | torch.Tensor,
    g_camids: np.ndarray | torch.Tensor,
    max_rank: int = 50,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Any]:
    """Compute CMC, mAP and mINP with the Market-1501 protocol.

    For each query the gallery is sorted by ascending distance (ties broken by gallery index,
    i.e. a stable sort). Gallery images with the same pid *and* the same camid as the query are
    removed. A query with no remaining true match (same pid, different camera) is skipped.

    * ``cmc[k]``: fraction of valid queries whose first true match is at rank ``<= k + 1``
      (ranks counted after the removal). If fewer than ``max_rank`` gallery images remain for a
      query, its CMC curve is padded with its last value (which is 1 for a valid query), so the
      returned curve always has ``max_rank`` entries.
    * AP: mean over the true matches of the precision at that match's rank. ``mAP`` is the mean
      AP over valid queries.
    * INP: ``num_true_matches / rank_of_last_true_match``. ``mINP`` is the mean over valid
      queries.

    Args:
        distmat: Distance matrix of shape ``(num_q, num_g)``; smaller means more similar.
        q_pids: Query person ids, shape ``(num_q,)``.
        g_pids: Gallery person ids, shape ``(num_g,)``.
        q_camids: Query camera ids, shape ``(num_q,)``.
        g_camids: Gallery camera ids, shape ``(num_g,)``.
        max_rank: Length of the returned CMC curve (must be ``>= 1``).
        chunk_size: Number of queries processed per vectorised chunk (memory is
            ``O(chunk_size * num_g)``).

    All array arguments may be numpy arrays or torch tensors (CPU or CUDA).

    Returns:
        ``{"cmc": np.ndarray of shape (max_rank,) float64, "mAP": float, "mINP": float}``,
        all values being fractions in ``[0, 1]``.

    Raises:
        ValueError: On malformed shapes/arguments, or if no query has a valid true match.
    """
    dist = _to_numpy(distmat, "distmat")
    if dist.ndim != 2:
        raise ValueError(
            f"distmat must be 2-D with shape (num_q, num_g), got shape {tuple(dist.shape)}"
        )
    num_q, num_g = dist.shape
    qp = _to_numpy(q_pids, "q_pids")
    gp = _to_numpy(g_pids, "g_pids")
    qc = _to_numpy(q_camids, "q_camids")
    gc = _to_numpy(g_camids, "g_camids")
    _check_1d(qp, "q_pids", num_q, "num_q = distmat.shape[0]")
    _check_1d(qc, "q_camids", num_q, "num_q = distmat.shape[0]")
    _check_1d(gp, "g_pids", num_g, "num_g = distmat.shape[1]")
    _check_1d(gc, "g_camids", num_g, "num_g = distmat.shape[1]")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    max_rank = int(max_rank)

    # first_hist[r] = number of valid queries whose first true match is at rank r (1-based);
    # ranks beyond max_rank are accumulated in the last bin and ignored for the CMC.
    first_hist = np.zeros(max_rank + 2, dtype=np.int64)
    ap_sum = 0.0
    inp_sum = 0.0
    num_valid = 0

    if num_g > 0:
        for start in range(0, num_q, chunk_size):
            stop = min(start + chunk_size, num_q)
            n = stop - start
            order = np.argsort(dist[start:stop], axis=1, kind="stable")  # (n, num_g)
            same_pid = gp[order] == qp[start:stop, None]  # (n, num_g)
            same_cam = gc[order] == qc[start:stop, None]  # (n, num_g)
            keep = ~(same_pid & same_cam)
            match = same_pid & ~same_cam  # true matches among kept gallery images
            del same_cam, order

            num_rel = match.sum(axis=1)  # (n,)
            valid = num_rel > 0
            if not valid.any():
                continue
            # 1-based rank of each gallery image after removal (meaningful where keep is True).
            rank = np.cumsum(keep, axis=1, dtype=np.int64)
            cum_match = np.cumsum(match, axis=1, dtype=np.int64)
            rows = np.arange(n)

            first_pos = np.argmax(match, axis=1)
            last_pos = num_g - 1 - np.argmax(match[:, ::-1], axis=1)
            first_rank = rank[rows, first_pos][valid]
            last_rank = rank[rows, last_pos][valid]

            # AP: sum over true matches of (#matches so far / rank), divided by #matches.
            m_rows, m_cols = np.nonzero(match)
            prec = cum_match[m_rows, m_cols] / rank[m_rows, m_cols]
            ap = np.bincount(m_rows, weights=prec, minlength=n)[valid] / num_rel[valid]
            inp = num_rel[valid] / last_rank

            ap_sum += float(ap.sum())
            inp_sum += float(inp.sum())
            num_valid += int(valid.sum())
            first_hist += np.bincount(np.minimum(first_rank, max_rank + 1), minlength=max_rank + 2)

    if num_valid == 0:
        raise ValueError(
            "evaluate_rank: no query has a valid true match in the gallery (a gallery image "
            "with the same pid but a different camid); cannot compute CMC/mAP/mINP "
            f"(num_q={num_q}, num_g={num_g})"
        )

    cmc = np.cumsum(first_hist[1 : max_rank + 1]).astype(np.float64) / num_valid
    return {
        "cmc": cmc,
        "mAP": ap_sum / num_valid,
        "mINP": inp_sum / num_valid,
    }
