"""Neighbouring cameras: pairs of nearest camera centres, the segments that pose
synthesis and the retrieval index interpolate along."""

from __future__ import annotations

import numpy as np


def nearest_pairs(centers: np.ndarray, k: int) -> np.ndarray:
    """(P, 2) index pairs (i < j): each camera with its ``k`` nearest others by centre
    distance (ties broken by index), a pair found from both ends kept once, sorted."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    n = len(centers)
    if n < 2:
        raise ValueError(f"nearest camera pairs need at least 2 cameras, got {n}")
    d2 = ((centers[:, None] - centers[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    kk = min(int(k), n - 1)
    pairs = set()
    for i in range(n):
        for j in np.lexsort((np.arange(n), d2[i]))[:kk]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


__all__ = ["nearest_pairs"]
