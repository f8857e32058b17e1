"""Multi-view triangulation of tracks with known camera poses, filtered.

Each track's point is the least-squares intersection of its viewing rays (the point
nearest to all rays, the multi-view midpoint: what ``pycolmap.triangulate_multi_view_point``
solves as well), then refined by Gauss-Newton on the reprojection error in undistorted
pixels. Keypoints of distorted cameras are undistorted through
:meth:`~neural_reloc.geometry.camera.Camera.pixel_to_normalized` first; the filters
measure the true pixel error through :meth:`Camera.project` (with distortion).

Filters (see :class:`~.config.TriangulationConfig`): every kept observation is in front
of its camera and reprojects within ``max_reprojection_error_px`` (the worst offender of
each point is dropped and the point re-triangulated, for ``max_filter_rounds`` rounds,
then all remaining offenders at once); a point keeps ``min_track_length`` observations
or more and is seen under ``min_triangulation_angle_deg`` or more between two rays.

Everything is vectorized over all observations (numpy, float64).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry.camera import Camera
from ..geometry.frames import opencv_c2w_from_opencv_w2c
from .config import TriangulationConfig
from .tracks import Tracks

#: A 3x3 normal matrix is treated as singular (the rays or Jacobians of a point do not
#: constrain it, e.g. a single ray or parallel rays) when |det| is below this fraction
#: of its trace cubed.
SINGULAR_RELATIVE_DET = 1e-12


@dataclass
class Triangulation:
    """Points and, sorted by point, the observations that keep them."""

    #: (P, 3) world points.
    points3d: np.ndarray
    #: Observation o: keypoint ``keypoint[o]`` of image ``image[o]`` sees point ``point[o]``.
    image: np.ndarray
    keypoint: np.ndarray
    point: np.ndarray
    #: (O,) pixel reprojection error of each kept observation.
    reprojection_error_px: np.ndarray
    stats: dict = field(default_factory=dict)


class _Observations:
    """Per-observation geometry of the tracks (arrays of length O)."""

    def __init__(self, tracks: Tracks, keypoints: list[np.ndarray], cameras: list[Camera], w2c_opencv: np.ndarray):
        self.tracks = tracks
        img, kp = tracks.image, tracks.keypoint
        w2c = np.asarray(w2c_opencv, dtype=np.float64)
        c2w = opencv_c2w_from_opencv_w2c(w2c)
        self.R = w2c[img, :3, :3]
        self.t = w2c[img, :3, 3]
        self.center = c2w[img, :3, 3]
        self.uv = np.zeros((len(img), 2))
        self.xy = np.zeros((len(img), 2))  # undistorted normalized image coordinates
        self.focal = np.zeros((len(img), 2))
        self.by_image = {}
        for i in np.unique(img):
            sel = np.flatnonzero(img == i)
            cam = cameras[i]
            self.by_image[int(i)] = (sel, cam)
            self.uv[sel] = keypoints[i][kp[sel]]
            self.xy[sel] = cam.pixel_to_normalized(self.uv[sel])
            self.focal[sel] = (cam.fx, cam.fy)
        ray_cam = np.concatenate([self.xy, np.ones((len(img), 1))], axis=1)
        ray = np.einsum("oij,oj->oi", c2w[img, :3, :3], ray_cam)  # world direction
        self.ray_world = ray / np.linalg.norm(ray, axis=1, keepdims=True)

    def camera_points(self, X: np.ndarray) -> np.ndarray:
        """(O, 3) camera-frame coordinates of each observation's point."""
        return np.einsum("oij,oj->oi", self.R, X[self.tracks.track]) + self.t

    def pixel_errors(self, X: np.ndarray) -> np.ndarray:
        """(O,) true pixel reprojection errors; inf behind the camera or for no point."""
        pc = self.camera_points(X)
        err = np.full(len(pc), np.inf)
        for sel, cam in self.by_image.values():
            uv, in_front = cam.project(pc[sel])
            e = np.linalg.norm(uv - self.uv[sel], axis=1)
            err[sel] = np.where(in_front & np.isfinite(e), e, np.inf)
        return err


def _solve3(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched 3x3 solves; (x, ok) with x = NaN where A is (numerically) singular."""
    tr = np.trace(A, axis1=1, axis2=2)
    ok = np.abs(np.linalg.det(A)) > SINGULAR_RELATIVE_DET * np.abs(tr) ** 3
    x = np.full(b.shape, np.nan)
    if ok.any():
        x[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    return x, ok


def _midpoint(obs: _Observations, active: np.ndarray) -> np.ndarray:
    """(T, 3) least-squares intersection of each track's active rays (NaN: singular)."""
    T = obs.tracks.num_tracks
    d, c, tr = obs.ray_world[active], obs.center[active], obs.tracks.track[active]
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # projector orthogonal to the ray
    A = np.zeros((T, 3, 3))
    b = np.zeros((T, 3))
    np.add.at(A, tr, P)
    np.add.at(b, tr, np.einsum("oij,oj->oi", P, c))
    return _solve3(A, b)[0]


def _refine(obs: _Observations, active: np.ndarray, X: np.ndarray, iterations: int) -> np.ndarray:
    """Gauss-Newton on the undistorted-pixel reprojection error of the active
    observations in front of their camera (points that cannot be solved keep X)."""
    T = obs.tracks.num_tracks
    for _ in range(iterations):
        pc = obs.camera_points(np.nan_to_num(X))
        use = active & (pc[:, 2] > 0) & np.isfinite(X[obs.tracks.track]).all(axis=1)
        if not use.any():
            break
        p, f, R = pc[use], obs.focal[use], obs.R[use]
        iz = 1.0 / p[:, 2]
        r = f * (p[:, :2] * iz[:, None] - obs.xy[use])
        dproj = np.zeros((len(p), 2, 3))
        dproj[:, 0, 0] = iz
        dproj[:, 1, 1] = iz
        dproj[:, :, 2] = -p[:, :2] * (iz * iz)[:, None]
        J = f[:, :, None] * np.einsum("oij,ojk->oik", dproj, R)
        JtJ = np.zeros((T, 3, 3))
        Jtr = np.zeros((T, 3))
        tr = obs.tracks.track[use]
        np.add.at(JtJ, tr, np.einsum("oji,ojk->oik", J, J))
        np.add.at(Jtr, tr, np.einsum("oji,oj->oi", J, r))
        step, ok = _solve3(JtJ, Jtr)
        X = np.where(ok[:, None], X - step, X)
    return X


def _max_ray_angle_deg(obs: _Observations, active: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(T,) largest angle between two active rays from the camera centres to each
    point (0 for tracks with fewer than two)."""
    T = obs.tracks.num_tracks
    out = np.zeros(T)
    idx = np.flatnonzero(active)  # sorted by track (observations are)
    tr = obs.tracks.track[idx]
    u = X[tr] - obs.center[idx]
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    lengths = np.bincount(tr, minlength=T)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for L in np.unique(lengths[lengths >= 2]):
        ts = np.flatnonzero(lengths == L)
        rows = starts[ts][:, None] + np.arange(L)[None]  # (n, L) positions in idx
        U = u[rows]
        min_cos = np.einsum("nid,njd->nij", U, U).min(axis=(1, 2))
        out[ts] = np.degrees(np.arccos(np.clip(min_cos, -1.0, 1.0)))
    return out


def triangulate_tracks(
    tracks: Tracks, keypoints: list[np.ndarray], cameras: list[Camera], w2c_opencv: np.ndarray,
    cfg: TriangulationConfig,
) -> Triangulation:
    """Triangulate and filter ``tracks`` (see the module docstring)."""
    if cfg.max_reprojection_error_px <= 0 or cfg.min_track_length < 2 or cfg.min_triangulation_angle_deg < 0:
        raise ValueError(
            "triangulation: max_reprojection_error_px must be positive, min_track_length >= 2, "
            "min_triangulation_angle_deg >= 0"
        )
    obs = _Observations(tracks, keypoints, cameras, w2c_opencv)
    T = tracks.num_tracks
    active = np.ones(len(tracks.track), dtype=bool)
    thr = float(cfg.max_reprojection_error_px)

    def solve() -> tuple[np.ndarray, np.ndarray]:
        X = _refine(obs, active, _midpoint(obs, active), int(cfg.refine_iterations))
        return X, obs.pixel_errors(X)

    X, err = solve() if T else (np.zeros((0, 3)), np.zeros(0))
    dropped_obs = 0
    for rnd in range(int(cfg.max_filter_rounds) + 1):
        bad = active & ~(err <= thr)
        if not bad.any():
            break
        if rnd == int(cfg.max_filter_rounds):
            drop = bad  # last round: every remaining offender
        else:  # the worst active observation of each point with an offender
            idx = np.flatnonzero(active)
            order = idx[np.lexsort((-np.nan_to_num(err[idx], posinf=np.finfo(np.float64).max), tracks.track[idx]))]
            first = order[np.r_[True, tracks.track[order][1:] != tracks.track[order][:-1]]]
            drop = np.zeros_like(active)
            drop[first[np.isin(tracks.track[first], tracks.track[bad])]] = True
        active &= ~drop
        dropped_obs += int(drop.sum())
        X, err = solve()

    count = np.bincount(tracks.track[active], minlength=T)
    still_bad = np.bincount(tracks.track[active & ~(err <= thr)], minlength=T) > 0
    long_enough = count >= int(cfg.min_track_length)
    finite = np.isfinite(X).all(axis=1)
    wide = _max_ray_angle_deg(obs, active, np.nan_to_num(X)) >= float(cfg.min_triangulation_angle_deg)
    keep = long_enough & finite & ~still_bad & wide

    new_id = np.full(T, -1, dtype=np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    sel = active & keep[tracks.track]
    stats = {
        "tracks": int(T),
        "tracks_inconsistent": int(tracks.num_inconsistent),
        "observations_dropped_reprojection": dropped_obs,
        "tracks_too_short": int((~long_enough).sum()),
        "tracks_unsolvable_or_over_threshold": int((long_enough & (~finite | still_bad)).sum()),
        "tracks_narrow_angle": int((long_enough & finite & ~still_bad & ~wide).sum()),
        "points3d": int(keep.sum()),
        "observations": int(sel.sum()),
        "mean_track_length": float(sel.sum() / max(1, keep.sum())),
        "mean_reprojection_error_px": float(err[sel].mean()) if sel.any() else float("nan"),
    }
    return Triangulation(
        points3d=X[keep],
        image=tracks.image[sel],
        keypoint=tracks.keypoint[sel],
        point=new_id[tracks.track[sel]],
        reprojection_error_px=err[sel],
        stats=stats,
    )
