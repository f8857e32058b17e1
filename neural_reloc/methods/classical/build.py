"""Build the classical map from posed mapping images (``build-map --method classical``).

hloc's "triangulation from known poses", step by step:

1. SIFT + RootSIFT of every mapping image (:mod:`.features`);
2. pairs: each image with its ``num_neighbors`` nearest images by pose (:mod:`.pairs`);
3. matching: mutual nearest neighbours + ratio test, verified against the epipolar
   geometry of the KNOWN relative pose (:mod:`.matching`);
4. tracks from the verified matches (:mod:`.tracks`);
5. multi-view triangulation with the known poses, filtered (:mod:`.triangulation`);
6. the VLAD vocabulary and the images' VLAD vectors (:mod:`.retrieval`).

Called by :func:`neural_reloc.mapping.build_map` (through ``MethodSpec.build``), which
checks whether the map is up to date and writes the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.posed_images import PosedImages
from ...map_bundle import ReferenceViews
from ..registry import BuiltMap
from .config import ClassicalConfig
from .features import Features, SiftExtractor, quantize_descriptors
from .matching import epipolar_inliers, mutual_nn_ratio, torch_threads
from .pairs import mapping_pairs
from .retrieval import train_vocabulary, vlad
from .storage import PREFIX, ClassicalMap
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
    data: PosedImages, cfg: ClassicalConfig, progress: Callable | None = None
) -> KnownPoseReconstruction:
    """SIFT, pose-neighbour matching verified by the known poses, tracks and filtered
    triangulation of every frame of ``data`` (steps 1-5 above). Also the sparse depth
    supervision of RGB-only neural maps (:mod:`neural_reloc.nerf.sparse_depth`)."""
    n = len(data)
    if n < 2:
        raise ValueError(f"{data.source}: triangulation needs at least 2 posed images, got {n}")
    mc = cfg.matching
    if mc.num_neighbors < 1 or mc.max_epipolar_error_px <= 0 or mc.min_verified_matches < 1:
        raise ValueError("matching: num_neighbors, max_epipolar_error_px and min_verified_matches must be positive")
    seconds: dict[str, float] = {}
    cameras = [data.camera(i) for i in range(n)]
    w2c = np.stack([data.w2c_opencv(i) for i in range(n)])

    t0 = time.perf_counter()
    extractor = SiftExtractor(cfg.features)
    feats = []
    for i in _iterate(progress, range(n), "SIFT"):
        feats.append(extractor.extract(data.image(i)))
    seconds["extract_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pairs = mapping_pairs(w2c, mc.num_neighbors, mc.max_view_angle_deg)
    verified: dict[tuple[int, int], np.ndarray] = {}
    raw = kept = 0
    for i, j in _iterate(progress, pairs, "matching"):
        with torch_threads(mc.num_threads):
            m = mutual_nn_ratio(feats[i].descriptors, feats[j].descriptors, mc.ratio_threshold)
        ok = epipolar_inliers(
            feats[i].keypoints, feats[j].keypoints, m, cameras[i], w2c[i], cameras[j], w2c[j], mc.max_epipolar_error_px
        )
        raw += len(m)
        if ok.sum() >= mc.min_verified_matches:
            verified[(i, j)] = m[ok]
            kept += int(ok.sum())
    seconds["match_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tracks = build_tracks([len(f) for f in feats], verified, cfg.triangulation.min_track_length)
    tri = triangulate_tracks(tracks, [f.keypoints for f in feats], cameras, w2c, cfg.triangulation)
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


def build_classical_map(
    train: PosedImages,
    cfg: ClassicalConfig,
    device=None,
    work_dir: Path | None = None,
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> BuiltMap:
    """The classical map of ``train`` (all its frames are mapping images). ``device``
    and ``work_dir`` are unused: SIFT and matching run on the CPU, nothing is cached."""
    rec = triangulate_known_poses(train, cfg, progress)
    feats, tri, counts, seconds = rec.features, rec.triangulation, rec.counts, rec.seconds
    cameras = [train.camera(i) for i in range(len(train))]

    t0 = time.perf_counter()
    rc = cfg.retrieval
    vocabulary = train_vocabulary(
        [f.descriptors for f in feats], rc.num_words, rc.kmeans_iterations, rc.kmeans_max_descriptors, rc.seed
    )
    vlads = np.stack([vlad(f.descriptors, vocabulary, rc.power_alpha) for f in feats])
    seconds["retrieval_s"] = time.perf_counter() - t0

    point_ids = [np.full(len(f), -1, dtype=np.int64) for f in feats]
    for i, ids in enumerate(point_ids):
        sel = tri.image == i
        ids[tri.keypoint[sel]] = tri.point[sel]
    cmap = ClassicalMap(
        keypoints=[f.keypoints for f in feats],
        descriptors_uint8=[quantize_descriptors(f.descriptors) for f in feats],
        point3d_ids=point_ids,
        points3d=tri.points3d,
        vocabulary=vocabulary,
        vlad=vlads,
    )
    log(
        f"classical map: {counts['points3d']} points from {counts['tracks']} tracks "
        f"({counts['keypoints_per_image']:.0f} keypoints/image, {counts['matches_verified']} of {counts['matches']} "
        f"matches verified in {counts['pairs_verified']} of {counts['pairs']} pairs), mean reprojection error "
        f"{counts['mean_reprojection_error_px']:.2f} px"
    )
    references = ReferenceViews(
        names=list(train.names), cameras=[c.to_dict() for c in cameras], c2w_opengl=train.c2w_opengl
    )
    return BuiltMap(
        modules={PREFIX: cmap.to_tensors()},
        scene={"mode": "none"},
        references=references,
        info={"device": "cpu", "counts": counts, "stage_s": {k: round(v, 3) for k, v in seconds.items()}},
    )
