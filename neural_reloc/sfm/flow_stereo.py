"""Dense two-view stereo between mapping views with their known poses: optical flow
from each view to nearby views, triangulated, kept where the views agree.

Known-pose triangulation of SIFT tracks (:mod:`.known_poses`) measures a few hundred
corners per view. The edges between them (a poster's border, a shelf's, a window
frame) are where a localizer's flow against the map's render lands, and a neural map
trained without depth images leaves their depth to the photometric loss: renders at
views off the mapping path then show that texture displaced (NOTES.md, twenty-third
session). Flow measures every textured pixel: DIS optical flow (OpenCV) from a view to
each of ``num_neighbors`` views near it whose baseline sees its scene at about
``target_triangulation_angle_deg`` (:func:`stereo_neighbours`), each warped first onto
the plane facing the view at its typical distance (:func:`plane_homography`: DIS follows
~15 px, a baseline wide enough to triangulate moves a room view 20-40 px), kept where
forward and backward flow agree, each flow vector triangulated with the two known poses
(ray midpoint, its angle and reprojection error tested), and a pixel's distance kept
only where ``min_agreeing_views`` views measured it within ``max_disagreement_rel`` of
each other: a wrong flow vector rarely lands on the same wrong depth from other views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.posed_images import PosedImages
from ..geometry.camera import Camera
from ..geometry.frames import opencv_c2w_from_opencv_w2c
from ..geometry.gradients import gradient_magnitude, grey
from ..geometry.optical_flow import forward_backward_flow
from ..geometry.warp import sample_bilinear
from .config import FlowStereoConfig
from .pairs import centers_and_axes, nearest_views

#: Rays closer to parallel than this (1 - cos) have no triangulated point.
PARALLEL_EPS = 1e-9


@dataclass
class PixelDistances:
    """Depth measured in some pixels of each view of a dataset (by flow stereo here, by
    triangulated SIFT keypoints in :mod:`neural_reloc.nerf.sparse_depth`): per view, the
    pixels (K, 2) in the camera of ``data.camera(i)`` (pixel centres at +0.5) and their
    distance along the viewing ray in metres (K,); ``stats``: counts."""

    uv: list[np.ndarray]
    distance: list[np.ndarray]
    stats: dict

    @property
    def count(self) -> int:
        return int(sum(len(d) for d in self.distance))


def pixel_rays_world(camera: Camera, w2c_opencv: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and unit world directions (N, 3) of the rays through pixels
    ``uv`` (N, 2; pixel centres at +0.5) of ``camera`` at ``w2c_opencv``."""
    c2w_opencv = opencv_c2w_from_opencv_w2c(w2c_opencv)
    return c2w_opencv[:3, 3], camera.pixel_rays_opencv(uv) @ c2w_opencv[:3, :3].T


def triangulate_ray_pairs(c_a: np.ndarray, d_a: np.ndarray, c_b: np.ndarray, d_b: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest points of ray pairs (centres (3,), unit directions (N, 3)): distances
    along ray a and along ray b (N,) and the angle between the rays in degrees (N,);
    parallel rays get NaN distances."""
    w0 = c_a - c_b
    b = np.einsum("ij,ij->i", d_a, d_b)
    d = d_a @ w0
    e = d_b @ w0
    denom = 1.0 - b * b
    ok = denom > PARALLEL_EPS
    denom = np.where(ok, denom, 1.0)
    t_a = np.where(ok, (b * e - d) / denom, np.nan)
    t_b = np.where(ok, (e - b * d) / denom, np.nan)
    return t_a, t_b, np.degrees(np.arccos(np.clip(b, -1.0, 1.0)))


def plane_homography(camera_i: Camera, camera_j: Camera, w2c_opencv_i: np.ndarray, w2c_opencv_j: np.ndarray,
                     distance: float | None) -> np.ndarray:
    """3x3 homography from view i's pixels to view j's (our pixel convention, lens
    distortion ignored) induced by the plane facing view i at ``distance`` (its optical
    axis's depth); None or non-finite: the plane at infinity (the rotation alone)."""
    i_to_j_opencv = w2c_opencv_j @ opencv_c2w_from_opencv_w2c(w2c_opencv_i)  # camera i's OpenCV frame -> j's
    inv_d = 1.0 / distance if distance is not None and np.isfinite(distance) and distance > 0 else 0.0
    rot, t = i_to_j_opencv[:3, :3], i_to_j_opencv[:3, 3]
    h = camera_j.K @ (rot + np.outer(t, [0.0, 0.0, inv_d])) @ np.linalg.inv(camera_i.K)
    return h / h[2, 2]


def _pair_distances(i: int, j: int, greys, masks, textured, cameras, w2c_opencv, view_distance,
                    cfg: FlowStereoConfig) -> np.ndarray:
    """Distance along view ``i``'s rays (H, W; NaN where not measured) from the flow
    between view ``i`` and view ``j`` warped onto the plane at view ``i``'s typical
    scene distance (:func:`plane_homography`): what is left to the flow is the parallax
    off that plane, not the rotation and the mean shift between the views, so the flow
    follows wide baselines."""
    h, w = greys[i].shape
    hj, wj = greys[j].shape
    out = np.full((h, w), np.nan, np.float32)
    dist = None if view_distance is None else float(view_distance[i])
    hom = plane_homography(cameras[i], cameras[j], w2c_opencv[i], w2c_opencv[j], dist)
    # OpenCV's pixel centres are at integer coordinates, ours at +0.5.
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    hom_cv = np.linalg.inv(shift) @ hom @ shift
    # warped(x) = view j at hom(x); seen: where that lands inside view j (and its mask).
    warped = cv2.warpPerspective(greys[j], hom_cv, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    seen = np.ones((hj, wj), np.uint8) if masks[j] is None else masks[j].astype(np.uint8)
    seen = cv2.warpPerspective(seen, hom_cv, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                               borderValue=0) > 0
    fw, bw = forward_backward_flow(greys[i], warped)
    rows, cols = np.nonzero(textured[i])
    uv_i = np.stack([cols + 0.5, rows + 0.5], -1)
    uv_w = uv_i + fw[rows, cols]
    inside = (uv_w[:, 0] >= 0) & (uv_w[:, 0] < w) & (uv_w[:, 1] >= 0) & (uv_w[:, 1] < h)
    rows, cols, uv_i, uv_w = rows[inside], cols[inside], uv_i[inside], uv_w[inside]
    keep = seen[np.floor(uv_w[:, 1]).astype(int), np.floor(uv_w[:, 0]).astype(int)]
    rows, cols, uv_i, uv_w = rows[keep], cols[keep], uv_i[keep], uv_w[keep]
    back = sample_bilinear(bw, uv_w)
    consistent = np.hypot(*(fw[rows, cols] + back).T) <= cfg.consistency_px
    rows, cols, uv_i, uv_w = rows[consistent], cols[consistent], uv_i[consistent], uv_w[consistent]
    if len(rows) == 0:
        return out
    uv_j = cv2.perspectiveTransform(uv_w[None].astype(np.float64), hom)[0]
    c_i, d_i = pixel_rays_world(cameras[i], w2c_opencv[i], uv_i)
    c_j, d_j = pixel_rays_world(cameras[j], w2c_opencv[j], uv_j)
    t_i, t_j, angle = triangulate_ray_pairs(c_i, d_i, c_j, d_j)
    ok = np.isfinite(t_i) & (t_i > 0) & (t_j > 0) & (angle >= cfg.min_triangulation_angle_deg)
    x = c_i + d_i * np.nan_to_num(t_i)[:, None]
    proj, in_front = cameras[j].project(x @ w2c_opencv[j][:3, :3].T + w2c_opencv[j][:3, 3])
    ok &= in_front & (np.linalg.norm(proj - uv_j, axis=1) <= cfg.max_reprojection_error_px)
    out[rows[ok], cols[ok]] = t_i[ok]
    return out


def stereo_neighbours(w2c_opencv: np.ndarray, view_distance: np.ndarray | None, cfg: FlowStereoConfig
                      ) -> list[list[int]]:
    """Each view's ``cfg.num_neighbors`` stereo partners among the views whose optical axes
    are within ``max_view_angle_deg`` of its own: with the typical distance of each view's
    scene ``view_distance`` (N,), those whose baseline sees it at the angle nearest
    ``target_triangulation_angle_deg`` (and at least ``min_triangulation_angle_deg``); the
    nearest views when the distance is unknown (None, NaN) or the target is 0.

    A dense walk's nearest views are a few centimetres apart: at room distances their
    rays meet at about a degree, under the angle a pixel's distance is trusted from, and
    most views would get no measurement at all (NOTES.md, twenty-fourth session)."""
    n = len(w2c_opencv)
    centres, axes = centers_and_axes(w2c_opencv)
    min_cos = np.cos(np.deg2rad(cfg.max_view_angle_deg))
    out = []
    for i in range(n):
        dist = None if view_distance is None else float(view_distance[i])
        if cfg.target_triangulation_angle_deg <= 0 or dist is None or not np.isfinite(dist) or dist <= 0:
            nearest = nearest_views(w2c_opencv[i], w2c_opencv, cfg.num_neighbors, cfg.max_view_angle_deg, exclude=i)
            out.append([int(j) for j in nearest if axes[i] @ axes[j] >= min_cos])
            continue
        baseline = np.linalg.norm(centres - centres[i], axis=1)
        angle = np.degrees(2.0 * np.arctan2(baseline / 2.0, dist))
        ok = (axes @ axes[i] >= min_cos) & (angle >= cfg.min_triangulation_angle_deg)
        ok[i] = False
        cand = np.nonzero(ok)[0]
        order = cand[np.argsort(np.abs(angle[cand] - cfg.target_triangulation_angle_deg), kind="stable")]
        out.append([int(j) for j in order[: cfg.num_neighbors]])
    return out


def flow_stereo_depth(data: PosedImages, cfg: FlowStereoConfig | None = None, progress: Callable | None = None,
                      view_distance: np.ndarray | None = None) -> PixelDistances:
    """Distances along the rays of the textured pixels of every view of ``data`` (at its
    loaded size), measured by flow to its stereo partners (:func:`stereo_neighbours`;
    ``view_distance``: each view's typical scene distance, e.g. its triangulated
    keypoints' median; the module's docstring)."""
    cfg = cfg or FlowStereoConfig()
    n = len(data)
    cameras = [data.camera(i) for i in range(n)]
    w2c_opencv = np.stack([data.w2c_opencv(i) for i in range(n)])
    greys = [grey(data.image(i)) for i in range(n)]
    masks = [data.mask(i) for i in range(n)]
    textured = []
    for g, m in zip(greys, masks):
        t = gradient_magnitude(g) >= cfg.min_gradient
        textured.append(t if m is None else t & m)
    neighbours = stereo_neighbours(w2c_opencv, view_distance, cfg)
    rng = np.random.default_rng(cfg.seed)
    uvs, dists = [], []
    pairs = measured = 0
    items = range(n) if progress is None else progress(range(n), desc="flow stereo")
    for i in items:
        nbrs = neighbours[i]
        per = np.stack([_pair_distances(i, j, greys, masks, textured, cameras, w2c_opencv, view_distance, cfg)
                        for j in nbrs]) if nbrs else np.zeros((0,) + greys[i].shape, np.float32)
        pairs += len(nbrs)
        measured_by = np.isfinite(per)
        count = measured_by.sum(0)
        lo = np.where(measured_by, per, np.inf).min(0, initial=np.inf)
        hi = np.where(measured_by, per, -np.inf).max(0, initial=-np.inf)
        mean = np.where(measured_by, per, 0.0).sum(0) / np.maximum(count, 1)
        keep = (count >= cfg.min_agreeing_views) & (hi <= lo * (1.0 + cfg.max_disagreement_rel))
        rows, cols = np.nonzero(keep)
        if len(rows) > cfg.max_points_per_view:
            pick = np.sort(rng.choice(len(rows), cfg.max_points_per_view, replace=False))
            rows, cols = rows[pick], cols[pick]
        measured += int(keep.sum())
        uvs.append(np.stack([cols + 0.5, rows + 0.5], -1).astype(np.float32))
        dists.append(mean[rows, cols].astype(np.float32))
    stats = {"views": n, "pairs": pairs, "measured_pixels": measured, "kept": int(sum(len(d) for d in dists))}
    return PixelDistances(uvs, dists, stats)


__all__ = ["PixelDistances", "flow_stereo_depth", "pixel_rays_world", "stereo_neighbours", "triangulate_ray_pairs"]
