"""One synthetic view (Sec. III-C/D): render it, extract its features, match them with
its two reference (real) views, and keep it if enough keypoints match.

A match counts when the synthetic keypoint's 3D point (the map's depth along its ray)
projects within ``filter.max_reprojection_px`` of the matched reference keypoint (0:
every descriptor match counts). The view is kept when the keypoints with a counted
match in either reference view number at least ``filter.min_matches`` (the paper's
eta). A kept view keeps every keypoint that matched a reference keypoint and has a
3D point; the counted ones are its ``reliable`` keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import Camera
from .config import SynthesisConfig
from .features import ImageFeatures, extract_features
from .render import keypoint_points, project, render_rgb
from .views import KeypointView


@dataclass
class Reference:
    """A real view as a reference: its camera, pose and (3D-backed) features."""

    index: int
    camera: Camera
    w2c_opencv: np.ndarray
    features: ImageFeatures


@dataclass
class SyntheticResult:
    view: KeypointView
    image_rgb: np.ndarray
    timings_s: dict
    num_matched: int  # keypoints with a counted match in either reference view (compared with eta)


def process_synthetic_view(model, name: str, camera: Camera, w2c_opencv: np.ndarray, refs: tuple[Reference, ...],
                           extractor, matcher, cfg: SynthesisConfig, clock) -> SyntheticResult:
    """Render, extract, match and filter one synthetic view (``clock``: a perf counter)."""
    t0 = clock()
    rgb = render_rgb(model, camera, w2c_opencv, cfg.render)
    t1 = clock()
    f = extract_features(extractor, rgb)
    xyz, valid = keypoint_points(model, camera, w2c_opencv, f.keypoints_px, cfg.render)
    t2 = clock()
    matched = np.zeros(len(f), bool)
    counted = np.zeros(len(f), bool)
    counts = []
    tol = float(cfg.filter.max_reprojection_px)
    for ref in refs:
        m = matcher.match(f, ref.features)
        m = m[valid[m[:, 0]]] if len(m) else m
        ok = np.ones(len(m), bool)
        if tol > 0 and len(m):
            uv, in_front = project(ref.camera, ref.w2c_opencv, xyz[m[:, 0]])
            ok = in_front & (np.linalg.norm(uv - ref.features.keypoints_px[m[:, 1]], axis=1) <= tol)
        matched[m[:, 0]] = True
        counted[m[ok, 0]] = True
        counts.append(int(ok.sum()))
    t3 = clock()
    num_matched = int(counted.sum())
    kept = num_matched >= int(cfg.filter.min_matches)
    keep = np.flatnonzero(matched) if kept else np.zeros(0, np.int64)
    view = KeypointView(
        name=name, synthetic=True, keypoints_px=f.keypoints_px[keep], descriptors=f.descriptors[keep],
        xyz_world=xyz[keep], reliable=counted[keep], w2c_opencv=np.asarray(w2c_opencv, np.float64), K=camera.K,
        width=camera.width, height=camera.height, kept=kept, num_matches=np.array(counts, np.int64),
        source_indices=np.array([r.index for r in refs], np.int64),
    )
    return SyntheticResult(view, rgb, {"render": t1 - t0, "features": t2 - t1, "match": t3 - t2}, num_matched)


__all__ = ["Reference", "SyntheticResult", "process_synthetic_view"]
