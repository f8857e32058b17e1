"""Triangulation from known poses, hloc's ``triangulation`` step, shared by the classical
method's map (:mod:`neural_reloc.methods.classical.build`) and the sparse depth
supervision of RGB-only neural maps (:mod:`neural_reloc.nerf.sparse_depth`):

1. SIFT + RootSIFT of every image (:mod:`.features`);
2. pairs: each image with its ``num_neighbors`` nearest images by pose (:mod:`.pairs`);
3. matching: mutual nearest neighbours + ratio test, verified against the epipolar
   geometry of the KNOWN relative pose (:mod:`.matching`);
4. tracks from the verified matches (:mod:`.tracks`);
5. multi-view triangulation with the known poses, filtered (:mod:`.triangulation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.posed_images import PosedImages
from .config import FeatureConfig, MatchingConfig, TriangulationConfig
from .features import Features, SiftExtractor
from .matching import epipolar_inliers, mutual_nn_ratio, torch_threads
from .pairs import mapping_pairs
from .tracks import build_tracks
from .triangulation import Triangulation, triangulate_tracks


def _iterate(progress: Callable | None, items, desc: str):
    return items if progress is None else progress(items, desc=desc)


@dataclass
class KnownPoseReconstruction:
    """Steps 1-5: features of every image and the points triangulated from them."""

    features: list[Features]
    triangulation: Triangulation
    counts: dict
    seconds: dict


def triangulate_known_poses(
    data: PosedImages,
    features: FeatureConfig | None = None,
    matching: MatchingConfig | None = None,
    triangulation: TriangulationConfig | None = None,
    progress: Callable | None = None,
) -> KnownPoseReconstruction:
    """SIFT, pose-neighbour matching verified by the known poses, tracks and filtered
    triangulation of every frame of ``data`` (the steps above); a config left out takes its
    defaults."""
    features, matching = features or FeatureConfig(), matching or MatchingConfig()
    triangulation = triangulation or TriangulationConfig()
    n = len(data)
    if n < 2:
        raise ValueError(f"{data.source}: triangulation needs at least 2 posed images, got {n}")
    if matching.num_neighbors < 1 or matching.max_epipolar_error_px <= 0 or matching.min_verified_matches < 1:
        raise ValueError("matching: num_neighbors, max_epipolar_error_px and min_verified_matches must be positive")
    seconds: dict[str, float] = {}
    cameras = [data.camera(i) for i in range(n)]
    w2c = np.stack([data.w2c_opencv(i) for i in range(n)])

    t0 = time.perf_counter()
    extractor = SiftExtractor(features)
    feats = []
    for i in _iterate(progress, range(n), "SIFT"):
        feats.append(extractor.extract(data.image(i)))
    seconds["extract_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pairs = mapping_pairs(w2c, matching.num_neighbors, matching.max_view_angle_deg)
    verified: dict[tuple[int, int], np.ndarray] = {}
    raw = kept = 0
    for i, j in _iterate(progress, pairs, "matching"):
        with torch_threads(matching.num_threads):
            m = mutual_nn_ratio(feats[i].descriptors, feats[j].descriptors, matching.ratio_threshold)
        ok = epipolar_inliers(
            feats[i].keypoints, feats[j].keypoints, m, cameras[i], w2c[i], cameras[j], w2c[j],
            matching.max_epipolar_error_px,
        )
        raw += len(m)
        if ok.sum() >= matching.min_verified_matches:
            verified[(i, j)] = m[ok]
            kept += int(ok.sum())
    seconds["match_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tracks = build_tracks([len(f) for f in feats], verified, triangulation.min_track_length)
    tri = triangulate_tracks(tracks, [f.keypoints for f in feats], cameras, w2c, triangulation)
    seconds["triangulate_s"] = time.perf_counter() - t0
    if len(tri.points3d) == 0:
        raise ValueError(
            f"{data.source}: no 3D point survived triangulation ({len(verified)} of {len(pairs)} pairs with "
            f"verified matches); the images may be too weakly textured for SIFT (features.peak_threshold) or "
            f"the poses wrong (matching.max_epipolar_error_px)"
        )
    counts = {
        "keypoints_per_image": float(np.mean([len(f) for f in feats])),
        "pairs": len(pairs),
        "pairs_verified": len(verified),
        "matches": raw,
        "matches_verified": kept,
        **tri.stats,
    }
    return KnownPoseReconstruction(feats, tri, counts, seconds)


__all__ = ["KnownPoseReconstruction", "triangulate_known_poses"]
