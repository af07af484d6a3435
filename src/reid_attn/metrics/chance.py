"""Chance level of a retrieval split: the expected Rank-1 and mAP of random distances.

With random distances every ordering of a query's gallery is equally likely. Under the
Market-1501 protocol of :func:`reid_attn.metrics.evaluate_rank` a query keeps ``n`` gallery
images (same identity and same camera removed), ``m`` of them true matches, and is skipped
when ``m = 0``. For a uniformly random order of ``n`` items with ``m`` relevant:

* Rank-1 is 1 with probability ``m / n``;
* ``E[AP] = (H_n + (m - 1) / (n - 1) * (n - H_n)) / n`` with ``H_n = 1 + 1/2 + ... + 1/n``
  (``AP = 1`` when ``n = 1``). It follows from ``E[AP] = 1/m * sum_k 1/k * P(item k is
  relevant) * E[relevant items in the top k | item k is]``, with ``P = m / n`` and
  ``E[...] = 1 + (k - 1)(m - 1)/(n - 1)``.

The split's chance level is the mean of both over the valid queries (exact, no sampling).
"""

from __future__ import annotations

import numpy as np


def chance_level(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> dict[str, float]:
    """Expected Rank-1 and mAP (fractions in [0, 1]) of uniformly random distances.

    Args:
        q_pids, q_camids: query identities and cameras, shape ``(num_q,)``.
        g_pids, g_camids: gallery identities and cameras, shape ``(num_g,)``.

    Returns:
        ``{"rank1": float, "mAP": float}``, averaged over the queries that have a true match
        (same identity, other camera), as :func:`reid_attn.metrics.evaluate_rank` averages.

    Raises:
        ValueError: mismatched lengths, or no query with a true match in the gallery.
    """
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    if q_pids.shape != q_camids.shape or g_pids.shape != g_camids.shape:
        raise ValueError(
            f"chance_level: pids and camids differ in length (query {q_pids.shape} vs "
            f"{q_camids.shape}, gallery {g_pids.shape} vs {g_camids.shape})"
        )
    same_pid = q_pids[:, None] == g_pids[None, :]
    same_cam = q_camids[:, None] == g_camids[None, :]
    kept = (~(same_pid & same_cam)).sum(1)  # n per query
    matches = (same_pid & ~same_cam).sum(1)  # m per query
    valid = matches > 0
    if not valid.any():
        raise ValueError(
            "chance_level: no query has a true match (same pid, other camera) in the gallery"
        )
    n, m = kept[valid].astype(np.float64), matches[valid].astype(np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, int(n.max()) + 1))])
    h_n = harmonic[n.astype(np.int64)]
    slope = np.divide(m - 1, n - 1, out=np.zeros_like(n), where=n > 1)
    expected_ap = (h_n + slope * (n - h_n)) / n
    return {"rank1": float(np.mean(m / n)), "mAP": float(np.mean(expected_ap))}
