"""Map alignment: the similarity ``map_from_world`` between a NeRF's world and a robot's map.

A map's *world* is whatever frame its training poses were in (COLMAP's, a phone's, in
arbitrary units); Nav2's ``map`` is metric, z up and tied to the occupancy grid.
:class:`Similarity` (scale ``s``, rotation ``R``, translation ``t``; ``x_map = s R
x_world + t``) carries points, camera poses and pose covariances from one to the other.
A camera pose stays rigid: its centre is mapped as a point (scaled), its orientation is
rotated (a rotation has no scale), so a world-to-camera pose in world becomes the same
camera's world-to-camera pose in map.

Estimation:

* :func:`similarity_from_point_pairs`: Umeyama's least-squares similarity from three or
  more world/map point pairs (not collinear), with its RMS residual in map units.
* :func:`gravity_alignment`: "up" from the mapping cameras, rotated onto +z, and a metric
  scale the user gives (:func:`scale_from_distance`: two world points a known distance
  apart). Up is the direction the cameras' x axes (image right) are perpendicular to: a
  handheld or robot camera is held level (little roll) while it pitches and yaws freely,
  so every x axis is close to horizontal whatever the camera looks at; the mean of the
  camera up vectors would lean forward with a camera pitched down the whole walk, and the
  plane of the camera centres is undefined for a straight walk. When the x axes are all
  nearly parallel (a walk without turns), the perpendicular direction is not unique: the
  walk's direction of travel (the main axis of the camera centres, horizontal for a
  robot or a person walking) is the second horizontal direction; with no travel across
  the x axes either, the mean camera up less its part along x is used (biased by the
  cameras' pitch; ``how`` says which). The
  translation is zero (the world origin stays the map origin): gravity gives no yaw and
  no position relative to an occupancy grid; point pairs do.

Covariances are ROS's 6x6 (position, then small rotations about the fixed parent axes):
the position block scales by ``s**2`` and both blocks rotate by ``R``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .frames import opencv_c2w_from_opencv_w2c, opencv_w2c_from_opencv_c2w
from .se3 import check_pose, make_pose, rotation_from_rotvec

#: A walk's direction of travel within this sine of the x axes' direction gives no
#: second horizontal direction.
PARALLEL_TRAVEL_SIN = 0.2
#: Camera centres spread less than this (relative to their coordinates) did not move.
NO_TRAVEL_RELATIVE = 1e-9
#: A rotation matrix may be off orthonormal by this much (stored rounded in JSON).
ROTATION_TOLERANCE = 1e-6
#: Point sets whose second singular value is below this fraction of the first are
#: collinear (a similarity is not determined by them).
COLLINEAR_RATIO = 1e-3
#: When the second smallest eigenvalue of the x-axes' scatter is below this fraction of
#: the largest, the x axes span a single direction and the perpendicular is not unique.
PARALLEL_AXES_RATIO = 1e-2


@dataclass(frozen=True)
class Similarity:
    """``map_from_world``: ``x_map = scale * rotation @ x_world + translation``."""

    scale: float = 1.0
    rotation: np.ndarray = None  # type: ignore[assignment]
    translation: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        R = np.eye(3) if self.rotation is None else np.asarray(self.rotation, dtype=np.float64)
        t = np.zeros(3) if self.translation is None else np.asarray(self.translation, dtype=np.float64).reshape(-1)
        s = float(self.scale)
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"scale must be a finite positive number, got {self.scale!r}")
        if R.shape != (3, 3) or not np.all(np.isfinite(R)):
            raise ValueError(f"rotation must be a finite 3x3 matrix, got shape {R.shape}")
        err = float(np.abs(R.T @ R - np.eye(3)).max())
        if err > ROTATION_TOLERANCE or np.linalg.det(R) < 0:
            raise ValueError(f"rotation is not a proper rotation (|R^T R - I| = {err:.2e}, det {np.linalg.det(R):.3f})")
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise ValueError(f"translation must be 3 finite numbers, got {self.translation!r}")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "rotation", R)
        object.__setattr__(self, "translation", t)

    # ------------------------------------------------------------ algebra
    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and np.array_equal(self.rotation, np.eye(3)) and not self.translation.any()

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 matrix [[sR, t], [0, 1]] (not a rigid transform unless scale is 1)."""
        M = make_pose(self.rotation, self.translation)
        M[:3, :3] *= self.scale
        return M

    def inverse(self) -> Similarity:
        """``world_from_map``."""
        Rt = self.rotation.T
        return Similarity(1.0 / self.scale, Rt, -(Rt @ self.translation) / self.scale)

    def compose(self, other: Similarity) -> Similarity:
        """``self @ other`` (apply ``other`` first)."""
        return Similarity(self.scale * other.scale, self.rotation @ other.rotation,
                          self.scale * self.rotation @ other.translation + self.translation)

    # ------------------------------------------------------------ application
    def apply_points(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) points in world -> in map."""
        p = np.asarray(points_world, dtype=np.float64)
        return self.scale * p @ self.rotation.T + self.translation

    def apply_c2w_opencv(self, c2w_opencv_world: np.ndarray) -> np.ndarray:
        """A camera-to-world pose (any camera axes) in world -> the same camera in map:
        its centre mapped as a point, its orientation rotated (no scale)."""
        T = check_pose(c2w_opencv_world, "camera pose in world")
        return make_pose(self.rotation @ T[:3, :3], self.apply_points(T[:3, 3]))

    def apply_w2c_opencv(self, w2c_opencv_world: np.ndarray) -> np.ndarray:
        """An OpenCV world-to-camera pose in world -> the same camera's in map."""
        c2w = opencv_c2w_from_opencv_w2c(check_pose(w2c_opencv_world, "camera pose in world"))
        return opencv_w2c_from_opencv_c2w(self.apply_c2w_opencv(c2w))

    def apply_covariance(self, cov6_world: np.ndarray) -> np.ndarray:
        """A ROS 6x6 pose covariance in world -> in map (position block times s^2,
        both blocks rotated)."""
        A = np.zeros((6, 6))
        A[:3, :3] = self.scale * self.rotation
        A[3:, 3:] = self.rotation
        return A @ np.asarray(cov6_world, dtype=np.float64) @ A.T

    # ------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        return {"scale": self.scale, "rotation": self.rotation.tolist(), "translation": self.translation.tolist()}

    @classmethod
    def from_dict(cls, d, what: str = "map_from_world") -> Similarity:
        """From :meth:`to_dict`'s mapping; ValueError naming ``what`` and the field."""
        if not isinstance(d, dict):
            raise ValueError(f"{what} must be a mapping with scale, rotation and translation, got {d!r}")  # noqa: TRY004 - one error type for every malformed entry
        missing = [k for k in ("scale", "rotation", "translation") if k not in d]
        if missing:
            raise ValueError(f"{what} lacks {', '.join(missing)}")
        try:
            scale = float(d["scale"])
            R = np.asarray(d["rotation"], dtype=np.float64)
            t = np.asarray(d["translation"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: scale must be a number, rotation 3x3 numbers, translation 3 numbers ({e})") from None
        try:
            return cls(scale, R, t)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None


IDENTITY = Similarity()


# ------------------------------------------------------------------ estimation
@dataclass
class PointFit:
    similarity: Similarity
    #: sqrt(mean |map - s R world - t|^2), map units.
    rms_residual: float
    residuals: np.ndarray


def similarity_from_point_pairs(points_world: np.ndarray, points_map: np.ndarray) -> PointFit:
    """Umeyama (1991): the least-squares similarity taking ``points_world`` (N, 3) onto
    ``points_map`` (N, 3). ValueError for fewer than 3 pairs or collinear points."""
    X = np.asarray(points_world, dtype=np.float64)
    Y = np.asarray(points_map, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 3 or X.shape != Y.shape:
        raise ValueError(f"point pairs must be two (N, 3) arrays of the same N, got {X.shape} and {Y.shape}")
    if len(X) < 3:
        raise ValueError(f"a similarity needs at least 3 point pairs, got {len(X)}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError("point pairs contain NaN or infinite coordinates")
    for name, P in (("world", X), ("map", Y)):
        sv = np.linalg.svd(P - P.mean(0), compute_uv=False)
        if sv[0] == 0 or sv[1] < COLLINEAR_RATIO * sv[0]:
            raise ValueError(f"the {name} points are collinear (or coincide): they do not determine a rotation; "
                             "give at least 3 points not on one line")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    cov = Yc.T @ Xc / len(X)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    var_x = (Xc**2).sum() / len(X)
    s = float(np.trace(np.diag(D) @ S) / var_x)
    t = my - s * R @ mx
    sim = Similarity(s, R, t)
    res = np.linalg.norm(sim.apply_points(X) - Y, axis=1)
    return PointFit(sim, float(np.sqrt(np.mean(res**2))), res)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``a`` onto direction ``b``."""
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return rotation_from_rotvec(math.pi * perp / np.linalg.norm(perp))
    return rotation_from_rotvec(axis / sin * math.atan2(sin, cos))


@dataclass
class GravityEstimate:
    #: unit "up" in world coordinates
    up_world: np.ndarray
    #: "x_axes" (perpendicular to every camera's x axis), "x_axes_and_travel" (a walk
    #: without turns: perpendicular to the x axes and the direction of travel) or
    #: "mean_up" (neither: the mean camera up less its part along x; biased by pitch)
    how: str
    #: RMS angle of the cameras' x axes from the horizontal plane this up defines, degrees
    #: (the cameras' roll spread: large values mean the estimate is doubtful)
    rms_roll_deg: float
    num_cameras: int


def estimate_up(c2w_opencv_world: np.ndarray) -> GravityEstimate:
    """World "up" from (N, 4, 4) OpenCV camera-to-world poses of level-held cameras
    (image right = camera +x, image up = camera -y)."""
    T = np.asarray(c2w_opencv_world, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) < 2:
        raise ValueError(f"gravity needs at least 2 camera poses (N, 4, 4), got shape {T.shape}")
    x_axes = T[:, :3, 0]
    mean_up = -T[:, :3, 1].mean(0)
    if np.linalg.norm(mean_up) < 1e-9:
        raise ValueError("the cameras' up vectors cancel out: they are not held level (no gravity to estimate)")
    M = x_axes.T @ x_axes
    w, V = np.linalg.eigh(M)  # ascending
    centres = T[:, :3, 3] - T[:, :3, 3].mean(0)
    _, sv, Vc = np.linalg.svd(centres, full_matrices=False)
    moved = sv[0] > NO_TRAVEL_RELATIVE * max(1.0, float(np.abs(T[:, :3, 3]).max())) * math.sqrt(len(T))
    travel = Vc[0] if moved else None
    d = V[:, 2]
    if w[1] >= PARALLEL_AXES_RATIO * w[2]:
        up, how = V[:, 0], "x_axes"
    elif travel is not None and np.linalg.norm(np.cross(d, travel)) > PARALLEL_TRAVEL_SIN:
        # every x axis along one direction (a walk without turns): the direction of
        # travel is horizontal too
        up, how = np.cross(d, travel), "x_axes_and_travel"
    else:  # no turns and no travel across x: the mean up, less its part along x
        up, how = mean_up - (mean_up @ d) * d, "mean_up"
    up = up / np.linalg.norm(up)
    if up @ mean_up < 0:
        up = -up
    roll = np.degrees(np.arcsin(np.clip(x_axes @ up / np.linalg.norm(x_axes, axis=1), -1.0, 1.0)))
    return GravityEstimate(up, how, float(np.sqrt(np.mean(roll**2))), len(T))


def gravity_alignment(c2w_opencv_world: np.ndarray, scale: float = 1.0) -> tuple[Similarity, GravityEstimate]:
    """``map_from_world`` with the cameras' up on +z, ``scale`` (map units, e.g. metres,
    per world unit) and no translation."""
    est = estimate_up(c2w_opencv_world)
    return Similarity(scale, rotation_between(est.up_world, [0.0, 0.0, 1.0])), est


def scale_from_distance(p_world: np.ndarray, q_world: np.ndarray, distance: float) -> float:
    """Map units per world unit from two world points ``distance`` map units apart."""
    d_world = float(np.linalg.norm(np.asarray(p_world, float) - np.asarray(q_world, float)))
    if not (math.isfinite(distance) and distance > 0):
        raise ValueError(f"the known distance must be a positive number, got {distance!r}")
    if not (math.isfinite(d_world) and d_world > 0):
        raise ValueError("the two world points coincide (or are not finite): they give no scale")
    return distance / d_world




def read_point_pairs(path) -> tuple[np.ndarray, np.ndarray]:
    """World and map points (N, 3) each from a CSV file of rows ``world_x, world_y,
    world_z, map_x, map_y, map_z`` (a first row that is not numbers is a header; blank
    lines and lines starting with # are skipped). ValueError naming the file and line."""
    import csv
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    world, map_ = [], []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not world and lineno == 1:
                continue  # header
            raise ValueError(f"{path}:{lineno}: expected 6 numbers (world_x,world_y,world_z,map_x,map_y,map_z), "
                             f"got {','.join(cells)!r}") from None
        if len(values) != 6 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}:{lineno}: expected 6 finite numbers (world xyz, map xyz), got {len(values)}: "
                             f"{','.join(cells)!r}")
        world.append(values[:3])
        map_.append(values[3:])
    if not world:
        raise ValueError(f"{path}: no point pairs (rows world_x,world_y,world_z,map_x,map_y,map_z)")
    return np.array(world), np.array(map_)


__all__ = [
    "IDENTITY",
    "GravityEstimate",
    "PointFit",
    "Similarity",
    "estimate_up",
    "gravity_alignment",
    "read_point_pairs",
    "rotation_between",
    "scale_from_distance",
    "similarity_from_point_pairs",
]
