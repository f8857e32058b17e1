"""Real (training) views: keypoints, their 3D points from the map's depth at the real
pose, and D2S's per-keypoint reliability target.

A keypoint is *reliable* when it matches a keypoint of one of its nearest real views
and the two keypoints' 3D points (each from the map's depth in its own view) agree
within ``reliability.relative_tolerance`` of its depth: the point is seen again, at
the same place. Keypoints whose ray has too little opacity have no 3D point and are
dropped.
"""

from __future__ import annotations

import numpy as np

from ..data.posed_images import PosedImages
from ..geometry.frames import camera_center_from_opencv_w2c
from ..geometry.neighbours import nearest_pairs
from .config import SynthesisConfig
from .features import ImageFeatures, extract_features
from .render import depth_in_view, keypoint_points
from .views import KeypointView


def real_view_features(model, data: PosedImages, indices: list[int], extractor, cfg: SynthesisConfig,
                       progress=None) -> list[tuple[ImageFeatures, np.ndarray]]:
    """Per real view: its features restricted to keypoints with a 3D point, and those points (N, 3)."""
    out = []
    it = progress(indices, desc="real views", total=len(indices)) if progress else indices
    for i in it:
        f = extract_features(extractor, data.image(i))
        xyz, valid = keypoint_points(model, data.camera(i), data.w2c_opencv(i), f.keypoints_px, cfg.render)
        out.append((f.subset(np.flatnonzero(valid)), xyz[valid]))
    return out


def neighbours(centers: np.ndarray, k: int) -> list[list[int]]:
    """For each view, the views it shares a nearest-neighbour pair with (either direction)."""
    nb: list[set[int]] = [set() for _ in range(len(centers))]
    if len(centers) > 1:
        for i, j in nearest_pairs(centers, k):
            nb[i].add(int(j))
            nb[j].add(int(i))
    return [sorted(s) for s in nb]


def reliable_flags(feats: list[tuple[ImageFeatures, np.ndarray]], w2c_opencv: np.ndarray, matcher,
                   cfg: SynthesisConfig) -> list[np.ndarray]:
    """(N_v,) bool per view: the keypoint's 3D point is confirmed by a neighbouring view."""
    centers = np.stack([camera_center_from_opencv_w2c(T) for T in w2c_opencv])
    nbs = neighbours(centers, cfg.reliability.num_neighbors)
    flags = [np.zeros(len(f), bool) for f, _ in feats]
    tol = float(cfg.reliability.relative_tolerance)
    for v, (fv, xyz_v) in enumerate(feats):
        depth_v = np.abs(depth_in_view(w2c_opencv[v], xyz_v))
        for u in nbs[v]:
            fu, xyz_u = feats[u]
            m = matcher.match(fv, fu)
            if len(m) == 0:
                continue
            dist = np.linalg.norm(xyz_v[m[:, 0]] - xyz_u[m[:, 1]], axis=1)
            ok = dist <= tol * depth_v[m[:, 0]]
            flags[v][m[ok, 0]] = True
    return flags


def real_keypoint_views(model, data: PosedImages, indices: list[int], extractor, matcher, cfg: SynthesisConfig,
                        progress=None) -> list[KeypointView]:
    """The :class:`KeypointView` of each real view ``indices`` (named ``real_<index>``)."""
    feats = real_view_features(model, data, indices, extractor, cfg, progress)
    w2c_opencv = np.stack([data.w2c_opencv(i) for i in indices])
    flags = reliable_flags(feats, w2c_opencv, matcher, cfg)
    views = []
    for i, (f, xyz), rel, T in zip(indices, feats, flags, w2c_opencv):
        cam = data.camera(i)
        views.append(KeypointView(
            name=f"real_{i:04d}", synthetic=False, keypoints_px=f.keypoints_px, descriptors=f.descriptors,
            xyz_world=xyz, reliable=rel, w2c_opencv=T, K=cam.K, width=cam.width, height=cam.height, kept=True,
            num_matches=np.zeros(0, np.int64), source_indices=np.array([i], np.int64),
        ))
    return views


__all__ = ["neighbours", "real_keypoint_views", "real_view_features", "reliable_flags"]
