"""Sparse depth for maps trained without depth images: SIFT keypoints triangulated from
the known poses (as DS-NeRF supervises with COLMAP's points).

Photometric training alone cannot fix the geometry of plain walls, or of any surface
seen by few views: the colour is explained as well by fog near the cameras as by a
surface. Where the training images have texture, the classical pipeline's known-pose
triangulation (:func:`neural_reloc.sfm.known_poses.triangulate_known_poses`:
SIFT, pose-neighbour matching verified against the known epipolar geometry, tracks,
reprojection/angle filtered triangulation) measures the surface directly; those
distances supervise the rays through the keypoints like a depth sensor's, and the
regularizers keep the plain surfaces between them flat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.posed_images import PosedImages
from ..geometry.frames import camera_center_from_opencv_w2c


@dataclass
class KeypointDepth:
    """Per frame of the data: keypoint pixels (K, 2) in the camera of ``data.camera(i)``
    (pixel centres at +0.5) and their distance along the viewing ray (K,)."""

    uv: list[np.ndarray]
    distance: list[np.ndarray]
    stats: dict

    @property
    def count(self) -> int:
        return int(sum(len(d) for d in self.distance))


def keypoint_depth(data: PosedImages, progress: Callable | None = None) -> KeypointDepth:
    """Triangulate SIFT keypoints of ``data``'s frames at their native resolution and
    return them in the cameras of ``data`` (its loaded, possibly downscaled size).
    Raises ValueError when nothing can be triangulated (no texture, bad poses)."""
    from ..sfm.known_poses import triangulate_known_poses

    native = data.with_downscale(1.0)
    rec = triangulate_known_poses(native, progress=progress)
    tri = rec.triangulation
    uvs, dists = [], []
    for i in range(len(data)):
        sel = tri.image == i
        uv = rec.features[i].keypoints[tri.keypoint[sel]]
        cam_native, cam = native.camera(i), data.camera(i)
        scale = np.array([cam.width / cam_native.width, cam.height / cam_native.height])
        centre = camera_center_from_opencv_w2c(data.w2c_opencv(i))
        uvs.append((uv * scale).astype(np.float32))
        dists.append(np.linalg.norm(tri.points3d[tri.point[sel]] - centre, axis=1).astype(np.float32))
    return KeypointDepth(uvs, dists, rec.counts)
