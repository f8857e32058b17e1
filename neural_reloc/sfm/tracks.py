"""Feature tracks: keypoints of several images linked by verified matches.

Every (image, keypoint) is a node, every verified match an edge; a track is a connected
component (the partition union-find computes, here by scipy's connected components,
which scales to millions of matches). A track holding two keypoints of one image is
inconsistent (some match in it is wrong) and is dropped whole; tracks with fewer than
``min_length`` images are dropped too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class Tracks:
    """Observations sorted by track: observation o is keypoint ``keypoint[o]`` of image
    ``image[o]``, part of track ``track[o]`` (0 .. num_tracks - 1, non-decreasing)."""

    image: np.ndarray
    keypoint: np.ndarray
    track: np.ndarray
    num_tracks: int
    #: Components dropped for holding two keypoints of one image.
    num_inconsistent: int = 0


def build_tracks(
    num_keypoints: list[int], matches: dict[tuple[int, int], np.ndarray], min_length: int = 2
) -> Tracks:
    """Tracks from per-image keypoint counts and verified matches ``{(i, j): (M, 2)}``
    (keypoint of image i, keypoint of image j)."""
    offsets = np.concatenate([[0], np.cumsum(num_keypoints)]).astype(np.int64)
    n_nodes = int(offsets[-1])
    src = [offsets[i] + m[:, 0] for (i, _), m in matches.items() if len(m)]
    dst = [offsets[j] + m[:, 1] for (_, j), m in matches.items() if len(m)]
    empty = np.zeros(0, dtype=np.int64)
    if not src or n_nodes == 0:
        return Tracks(empty, empty, empty, 0)
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    node_image = np.repeat(np.arange(len(num_keypoints)), num_keypoints)

    size = np.bincount(label)
    # images per component: count distinct (component, image) pairs
    comp_img = np.unique(label.astype(np.int64) * len(num_keypoints) + node_image)
    distinct = np.bincount(comp_img // len(num_keypoints), minlength=len(size))
    inconsistent = (size >= 2) & (distinct < size)
    good = (size >= max(2, int(min_length))) & ~inconsistent
    nodes = np.flatnonzero(good[label])
    order = np.argsort(label[nodes], kind="stable")
    nodes = nodes[order]
    _, track = np.unique(label[nodes], return_inverse=True)
    return Tracks(
        image=node_image[nodes].astype(np.int64),
        keypoint=(nodes - offsets[node_image[nodes]]).astype(np.int64),
        track=track.astype(np.int64),
        num_tracks=int(good.sum()),
        num_inconsistent=int(inconsistent.sum()),
    )
