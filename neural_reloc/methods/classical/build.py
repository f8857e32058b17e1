"""Build the classical map from posed mapping images (``build-map --method classical``).

hloc's "triangulation from known poses" (:mod:`neural_reloc.sfm.known_poses`: SIFT,
pose-neighbour pairs, matching verified by the known poses, tracks, triangulation), then
the VLAD vocabulary and the images' VLAD vectors (:mod:`.retrieval`).

Called by :func:`neural_reloc.mapping.build_map` (through ``MethodSpec.build``), which
checks whether the map is up to date and writes the bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...data.posed_images import PosedImages
from ...map_bundle import ReferenceViews
from ...sfm.features import quantize_descriptors
from ...sfm.known_poses import triangulate_known_poses
from ..registry import BuiltMap
from .config import ClassicalConfig
from .retrieval import train_vocabulary, vlad
from .storage import PREFIX, ClassicalMap


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
    rec = triangulate_known_poses(train, cfg.features, cfg.matching, cfg.triangulation, progress)
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
