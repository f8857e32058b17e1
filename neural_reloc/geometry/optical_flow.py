"""Dense optical flow between two grey images, both ways (OpenCV's DIS): the
localizers' refinement against the map's render and the mapping views' flow stereo."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

#: DIS optical flow preset (OpenCV): MEDIUM is sub-pixel and ~3 ms a direction at
#: 160x120; it follows displacements up to ~15 px on a room's textures.
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
#: The second thread of :func:`forward_backward_flow`.
_BACKWARD_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backward-flow")


def forward_backward_flow(a_u8: np.ndarray, b_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS flow from grey image ``a_u8`` to ``b_u8`` and back ((H, W, 2) float32 each),
    the two directions at once: OpenCV releases the GIL, so the backward flow runs on a
    second thread while this one computes the forward flow (the same values as one
    after the other, in ~60-70% of the time on two cores)."""
    a_u8, b_u8 = np.ascontiguousarray(a_u8), np.ascontiguousarray(b_u8)  # DIS asserts contiguous input
    backward = _BACKWARD_THREAD.submit(cv2.DISOpticalFlow_create(DIS_PRESET).calc, b_u8, a_u8, None)
    forward = cv2.DISOpticalFlow_create(DIS_PRESET).calc(a_u8, b_u8, None)
    return forward, backward.result()


__all__ = ["DIS_PRESET", "forward_backward_flow"]
