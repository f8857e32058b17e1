"""Image retrieval without learned weights: VLAD over RootSIFT.

Vocabulary: k-means (Lloyd) on a seeded random subset of the mapping images'
descriptors, started from seeded random descriptors; empty clusters are re-seeded from
the same generator, so the same data and seed give the same vocabulary.

VLAD (Jegou et al. 2010): each descriptor is assigned to its nearest visual word and
the residuals (descriptor - word) are summed per word; then intra-normalization (each
word's block to unit L2, Arandjelovic & Zisserman 2013), power normalization (signed
|x|^alpha) and a global L2 normalization. Images are ranked by cosine similarity.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from ...sfm.features import DESCRIPTOR_DIM, NORM_EPS


def _nearest_word(desc: np.ndarray, words: np.ndarray) -> np.ndarray:
    # argmin |d - w|^2 = argmax (d.w - |w|^2 / 2)
    return np.argmax(desc @ words.T - 0.5 * np.sum(words * words, axis=1), axis=1)


def _sum_by_word(values: np.ndarray, assign: np.ndarray, num_words: int) -> np.ndarray:
    """(num_words, D) sums of the rows of ``values`` assigned to each word."""
    one_hot = csr_matrix((np.ones(len(assign), dtype=np.float32), (assign, np.arange(len(assign)))),
                         shape=(num_words, len(assign)))
    return np.asarray(one_hot @ values, dtype=np.float32)


def train_vocabulary(
    descriptors: list[np.ndarray], num_words: int, iterations: int, max_descriptors: int, seed: int
) -> np.ndarray:
    """(num_words, 128) float32 k-means centroids of the stacked descriptors."""
    if num_words < 1 or iterations < 0 or max_descriptors < 1:
        raise ValueError("retrieval: num_words and kmeans_max_descriptors must be positive, kmeans_iterations >= 0")
    X = np.concatenate([np.asarray(d, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM) for d in descriptors])
    if len(X) < num_words:
        raise ValueError(
            f"retrieval: the mapping images have {len(X)} descriptors, fewer than num_words={num_words} "
            "visual words; lower retrieval.num_words or extract more features"
        )
    rng = np.random.default_rng(seed)
    if len(X) > max_descriptors:
        X = X[np.sort(rng.choice(len(X), max_descriptors, replace=False))]
    words = X[rng.choice(len(X), num_words, replace=False)].copy()
    for _ in range(iterations):
        assign = _nearest_word(X, words)
        counts = np.bincount(assign, minlength=num_words)
        sums = _sum_by_word(X, assign, num_words)
        empty = counts == 0
        words[~empty] = sums[~empty] / counts[~empty, None]
        if empty.any():
            words[empty] = X[rng.choice(len(X), int(empty.sum()), replace=False)]
    return words.astype(np.float32)


def vlad(descriptors: np.ndarray, words: np.ndarray, power_alpha: float) -> np.ndarray:
    """(num_words * 128,) float32 unit VLAD vector of one image (zeros for none)."""
    K, D = words.shape
    desc = np.asarray(descriptors, dtype=np.float32).reshape(-1, D)
    v = np.zeros((K, D), dtype=np.float32)
    if len(desc):
        assign = _nearest_word(desc, words)
        v = _sum_by_word(desc - words[assign], assign, K)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), NORM_EPS)  # intra-normalization
    v = np.sign(v) * np.abs(v) ** float(power_alpha)
    v = v.reshape(-1)
    return v / max(float(np.linalg.norm(v)), NORM_EPS)


def top_k(query_vlad: np.ndarray, map_vlads: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most similar mapping images (index, cosine), best first (ties by index)."""
    sims = np.asarray(map_vlads, dtype=np.float32) @ np.asarray(query_vlad, dtype=np.float32)
    order = np.lexsort((np.arange(len(sims)), -sims))[: max(0, int(k))]
    return [(int(i), float(sims[i])) for i in order]
