"""Sparse depth for maps trained without depth images: SIFT keypoints triangulated from
the known poses (as DS-NeRF supervises with COLMAP's points).

Photometric training alone cannot fix the geometry of plain walls, or of any surface
seen by few views: the colour is explained as well by fog near the cameras as by a
surface. Where the training images have texture, the classical pipeline's known-pose
triangulation (:func:`neural_reloc.sfm.known_poses.triangulate_known_poses`:
SIFT, pose-neighbour matching verified against the known epipolar geometry, tracks,
reprojection/angle filtered triangulation) measures the surface directly; those
distances supervise the rays through the keypoints like a depth sensor's, and the
regularizers keep the plain surfaces between them flat. Flow stereo between neighbouring
views (:mod:`neural_reloc.sfm.flow_stereo`) adds the textured pixels between the corners.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data.posed_images import PosedImages
from ..geometry.frames import camera_center_from_opencv_w2c
from ..sfm.config import FlowStereoConfig
from ..sfm.flow_stereo import PixelDistances, flow_stereo_depth


def keypoint_depth(data: PosedImages, progress: Callable | None = None, flow_stereo: FlowStereoConfig | None = None
                   ) -> PixelDistances:
    """Triangulate SIFT keypoints of ``data``'s frames at their native resolution and
    return them in the cameras of ``data`` (its loaded, possibly downscaled size); with
    ``flow_stereo``, also the textured pixels flow stereo measured
    (:func:`~neural_reloc.sfm.flow_stereo.flow_stereo_depth`), which replace the keypoints
    in the pixels they share. Raises ValueError when nothing can be triangulated (no
    texture, bad poses)."""
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
    stats = dict(rec.counts, sift_points=int(sum(len(d) for d in dists)))
    if flow_stereo is not None:
        typical = np.array([np.median(d) if len(d) else np.nan for d in dists])
        dense = flow_stereo_depth(data, flow_stereo, progress, view_distance=typical)
        for i in range(len(data)):
            uvs[i], dists[i] = _merge_pixels(uvs[i], dists[i], dense.uv[i], dense.distance[i], data.camera(i).width)
        stats.update({f"flow_stereo_{k}": v for k, v in dense.stats.items()})
    return PixelDistances(uvs, dists, stats)


def _merge_pixels(uv_a: np.ndarray, dist_a: np.ndarray, uv_b: np.ndarray, dist_b: np.ndarray, width: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Measurements a and b (pixels (K, 2), distances (K,)) as one set: b's, and a's in
    the pixels b has none in."""
    def pixel(uv):
        return np.floor(uv[:, 1]).astype(np.int64) * width + np.floor(uv[:, 0]).astype(np.int64)

    keep = ~np.isin(pixel(uv_a), pixel(uv_b))
    return (np.concatenate([uv_a[keep], uv_b]).astype(np.float32),
            np.concatenate([dist_a[keep], dist_b]).astype(np.float32))
