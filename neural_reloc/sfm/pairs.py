"""Which views see the same part of the scene, from their poses alone (hloc's
``pairs_from_poses``): the nearest camera centres among those looking the same way.

Used for the mapping pairs (each mapping image with its k nearest mapping images) and,
at localization with a prior pose, for the mapping images the query is matched to.
"""

from __future__ import annotations

import numpy as np

from ..geometry.frames import opencv_c2w_from_opencv_w2c


def centers_and_axes(w2c_opencv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres and unit viewing directions (the camera's +z axis) in the world of
    (..., 4, 4) OpenCV world-to-camera poses."""
    c2w = opencv_c2w_from_opencv_w2c(w2c_opencv)
    return c2w[..., :3, 3], c2w[..., :3, 2]


def nearest_views(
    query_w2c_opencv: np.ndarray, ref_w2c_opencv: np.ndarray, k: int, max_view_angle_deg: float,
    exclude: int | None = None,
) -> np.ndarray:
    """Indices of the ``k`` reference views nearest to the query, nearest first.

    Views whose optical axis is within ``max_view_angle_deg`` of the query's come
    first, by camera-centre distance; if there are fewer than ``k`` of them, the others
    follow by distance (so a query always gets k views when the map has them).
    ``exclude``: a reference index never returned (the query itself when it is one).
    """
    c_q, axis_q = centers_and_axes(query_w2c_opencv)
    c_r, axes_r = centers_and_axes(ref_w2c_opencv)
    dist = np.linalg.norm(c_r - c_q, axis=1)
    far_apart = axes_r @ axis_q < np.cos(np.deg2rad(max_view_angle_deg))
    order = np.lexsort((dist, far_apart))  # same-direction views first, then by distance
    if exclude is not None:
        order = order[order != exclude]
    return order[: max(0, int(k))]


def mapping_pairs(w2c_opencv: np.ndarray, k: int, max_view_angle_deg: float) -> list[tuple[int, int]]:
    """Unordered pairs (i < j) of each view with its ``k`` nearest views whose optical
    axes are within ``max_view_angle_deg`` (views looking elsewhere are never paired)."""
    w2c = np.asarray(w2c_opencv, dtype=np.float64)
    axes = centers_and_axes(w2c)[1]
    min_cos = np.cos(np.deg2rad(max_view_angle_deg))
    pairs: set[tuple[int, int]] = set()
    for i in range(len(w2c)):
        for j in nearest_views(w2c[i], w2c, k, max_view_angle_deg, exclude=i):
            if axes[i] @ axes[j] >= min_cos:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)
