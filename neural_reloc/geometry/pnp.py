"""Robust PnP (poselib LO-RANSAC + refinement) with a calibrated 6x6 pose covariance.

Conventions
-----------
* 2D points are pixels in :class:`~neural_reloc.geometry.camera.Camera`'s convention
  (COLMAP's: pixel i's centre at i + 0.5); 3D points are in the world frame.
* The estimated pose is an OpenCV world-to-camera matrix ``w2c_opencv`` (the PnP side,
  see :mod:`neural_reloc.geometry.frames`); poselib's ``CameraPose`` (R, t) is exactly
  that: x_cam = R x_world + t.
* The covariance is 6x6 over (x, y, z, rot_x, rot_y, rot_z) of the camera pose in the
  world frame, the ROS ``PoseWithCovariance`` parameterization used by
  :class:`~neural_reloc.methods.base.LocalizationResult`: a perturbed pose has camera
  centre c' = c + dc and camera-to-world rotation R_c2w' = exp([dtheta]x) R_c2w
  (small rotations about the fixed world axes).

poselib 2.0.5 facts this module relies on (checked against the installed wheel and the
PoseLib sources ``pybind/helpers.h``, ``pybind/bindings/estimators/absolute_pose.cc``,
``PoseLib/robust.cc``, ``PoseLib/robust/ransac_impl.h``,
``PoseLib/robust/estimators/absolute_pose.{h,cc}``):

* Camera models are COLMAP's: ``PINHOLE`` (fx, fy, cx, cy), ``OPENCV`` (fx, fy, cx, cy,
  k1, k2, p1, p2) and ``FULL_OPENCV`` (fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6;
  rational radial term, equal to OpenCV's 5-coefficient model when k4 = k5 = k6 = 0).
  ``poselib.Camera`` does NOT check the parameter count, so :func:`poselib_camera`
  builds exactly the right list. Projection is ``f * distort(x/z, y/z) + c`` with no
  pixel-centre offset, so our cx, cy pass through unchanged (test_pnp checks agreement
  with :meth:`Camera.project` to < 1e-6 px).
* ``RansacOptions`` has a ``seed`` (unsigned) that seeds the RandomSampler of the
  absolute-pose estimator; the RANSAC is single-threaded, so equal inputs and seed give
  bit-identical output (test_pnp checks it).
* Option dicts silently ignore unknown keys and unknown ``loss_type`` names (the
  default, CAUCHY, stays), so every option is passed explicitly and the loss name is
  validated here. Loss names: TRIVIAL, TRUNCATED, HUBER, CAUCHY, TRUNCATED_LE_ZACH.
* RANSAC scores hypotheses on undistorted normalized points with the pixel threshold
  divided by the focal length; the LO step (truncated least squares, 25 iterations)
  cannot be switched off. Afterwards a bundle adjustment in pixel space (with the
  camera model) runs on the RANSAC inliers with ``BundleOptions``; ``refine=False``
  sets its iterations to 0.

With ``max_ransac_points``, RANSAC runs on a seeded random subset of the
correspondences; the inlier set is then recomputed on all of them and refined as below.

Because poselib's inlier test is in undistorted coordinates, the inlier mask reported
here is recomputed with the true pixel reprojection error of the final pose
(``error <= reprojection_threshold_px``); if it differs from poselib's and ``refine`` is
on, the pose is refined once more on the recomputed set (and the mask recomputed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..config_fields import setting
from .camera import Camera

#: Floor on the per-coordinate residual standard deviation (pixels) used to scale the
#: covariance: a perfect (noise-free, synthetic) fit would otherwise give s^2 = 0 and a
#: zero covariance. Keypoint localization is never better than about a quarter pixel.
COVARIANCE_SIGMA_FLOOR_PX = 0.25

#: J^T J is treated as singular (pose not observable from the inliers, e.g. collinear
#: points) when the condition number of its Jacobi-scaled version (unit diagonal, so the
#: metres/radians unit mix does not count) exceeds this.
JTJ_CONDITION_LIMIT = 1e10

#: poselib's robust losses (pybind/helpers.h: update_bundle_options).
POSELIB_LOSSES = ("TRIVIAL", "TRUNCATED", "HUBER", "CAUCHY", "TRUNCATED_LE_ZACH")

#: Correspondences in one of poselib's absolute-pose RANSAC samples (P3P; every
#: solution of a sample is scored), the exponent of its stopping rule.
P3P_SAMPLE_SIZE = 3

#: Minimum number of correspondences a pose covariance needs (2N - 6 > 0 degrees of
#: freedom) and that RANSAC's P3P + verification needs.
MIN_POINTS_LOWER_BOUND = 4


@dataclass
class PnPConfig:
    """Settings of :func:`pnp_ransac`; every poselib option is passed explicitly."""

    reprojection_threshold_px: float = setting(
        4.0, "Inlier threshold on the reprojection error, in pixels of the camera passed in.", range=(1e-3, 1e3)
    )
    max_iterations: int = setting(10000, "RANSAC iteration cap (poselib default: 100000).", range=(1, 10_000_000))
    min_iterations: int = setting(100, "RANSAC runs at least this many iterations (poselib default: 1000).",
                                  range=(0, 10_000_000))
    success_probability: float = setting(
        0.9999, "RANSAC stops when a better model would be found with less than 1 - this probability.",
        range=(0.0, 1.0),
    )
    dyn_num_trials_mult: float = setting(
        3.0, "poselib's adaptive stopping multiplies the textbook iteration count by this (poselib's default, "
        "written out so it is not silently inherited).", range=(0.0, 1e3),
    )
    refine: bool = setting(
        True, "Bundle adjustment of the final pose on the inliers (poselib's local optimization inside RANSAC "
        "always runs; this switches the post-RANSAC refinement)."
    )
    refine_loss: str = setting("CAUCHY", "Robust loss of that refinement.", choices=POSELIB_LOSSES)
    refine_loss_scale_px: float = setting(
        1.0, "Scale of the robust loss, pixels (poselib's default would be half the threshold).", range=(1e-6, 1e3)
    )
    refine_max_iterations: int = setting(100, "Bundle adjustment iteration cap (poselib's default).",
                                         range=(0, 100_000))
    seed: int = setting(0, "RANSAC sampler seed: same inputs and seed give a bit-identical result.",
                        range=(0, 2**31 - 1))
    min_points: int = setting(4, "Fewer correspondences (or inliers) than this: failure. At least 4.",
                              range=(4, 1_000_000))
    max_ransac_points: int = setting(
        0, "RANSAC (hypotheses and their scoring, with poselib's local optimization) runs on at most this many "
        "correspondences, a seeded random subset; the inlier set (and the refinement, if on) then use all of "
        "them. 0: all. RANSAC's time grows with the points scored, its accuracy hardly does past a few hundred.",
        range=(0, 1_000_000),
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the offending field."""
        problems = []
        thr = float(self.reprojection_threshold_px)
        if not np.isfinite(thr) or thr <= 0:
            problems.append(f"reprojection_threshold_px={thr} must be a positive number")
        if int(self.min_iterations) < 0:
            problems.append(f"min_iterations={self.min_iterations} must be >= 0")
        if int(self.max_iterations) < max(1, int(self.min_iterations)):
            problems.append(
                f"max_iterations={self.max_iterations} must be >= 1 and >= min_iterations={self.min_iterations}"
            )
        if not 0.0 < float(self.success_probability) < 1.0:
            problems.append(f"success_probability={self.success_probability} must be in (0, 1)")
        if not float(self.dyn_num_trials_mult) > 0:
            problems.append(f"dyn_num_trials_mult={self.dyn_num_trials_mult} must be positive")
        if str(self.refine_loss).upper() not in POSELIB_LOSSES:
            problems.append(f"refine_loss={self.refine_loss!r} must be one of {POSELIB_LOSSES}")
        scale = float(self.refine_loss_scale_px)
        if not np.isfinite(scale) or scale <= 0:
            problems.append(f"refine_loss_scale_px={scale} must be a positive number")
        if int(self.refine_max_iterations) < 0:
            problems.append(f"refine_max_iterations={self.refine_max_iterations} must be >= 0")
        if not 0 <= int(self.seed) < 2**63:
            problems.append(f"seed={self.seed} must be a non-negative integer below 2**63")
        if int(self.min_points) < MIN_POINTS_LOWER_BOUND:
            problems.append(f"min_points={self.min_points} must be >= {MIN_POINTS_LOWER_BOUND}")
        if int(self.max_ransac_points) != 0 and int(self.max_ransac_points) < int(self.min_points):
            problems.append(
                f"max_ransac_points={self.max_ransac_points} must be 0 (all) or >= min_points={self.min_points}"
            )
        if problems:
            raise ValueError("invalid PnPConfig: " + "; ".join(problems))


@dataclass
class PnPResult:
    success: bool
    #: Estimated OpenCV world-to-camera pose, 4x4 (None when nothing was estimated).
    w2c_opencv: np.ndarray | None
    #: (N,) bool, True for the correspondences used in the final pose.
    inlier_mask: np.ndarray
    num_inliers: int
    #: sqrt(mean squared reprojection error norm) over the inliers, pixels.
    reprojection_rmse_px: float
    #: 6x6 over (x, y, z, rot_x, rot_y, rot_z), ROS convention (see module docstring);
    #: zeros when the solve failed.
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((6, 6)))
    #: Why the solve failed ("" on success).
    reason: str = ""
    #: RANSAC iterations poselib ran.
    iterations: int = 0
    #: Wall-clock time of the whole call, milliseconds.
    solve_ms: float = 0.0
    #: (K, 2) pixels of the inliers in ``camera`` (the one PnP ran in) and its (width,
    #: height): where the pose's support is, for drawing. None on failure.
    inlier_uv: np.ndarray | None = None
    image_size: tuple[int, int] | None = None
    #: Median depth (camera z) of the inliers' 3D points at the final pose, in the
    #: points' unit; NaN on failure. What a pose error relative to depth scales with.
    median_inlier_depth: float = float("nan")

    @property
    def inlier_ratio(self) -> float:
        n = int(self.inlier_mask.size)
        return self.num_inliers / n if n else 0.0


# ------------------------------------------------------------------ camera model
def poselib_camera(camera: Camera):
    """The poselib camera equivalent to ``camera``.

    PINHOLE without distortion, OPENCV for (k1, k2, p1, p2), FULL_OPENCV (with
    k4 = k5 = k6 = 0) when k3 != 0. Parameters are passed in COLMAP order; the pixel
    convention is unchanged (poselib adds no half-pixel offset).
    """
    import poselib

    c = camera
    if c.k3 != 0.0:
        model = "FULL_OPENCV"
        params = [c.fx, c.fy, c.cx, c.cy, c.k1, c.k2, c.p1, c.p2, c.k3, 0.0, 0.0, 0.0]
    elif c.is_distorted:
        model = "OPENCV"
        params = [c.fx, c.fy, c.cx, c.cy, c.k1, c.k2, c.p1, c.p2]
    else:
        model = "PINHOLE"
        params = [c.fx, c.fy, c.cx, c.cy]
    return poselib.Camera(model, [float(p) for p in params], int(c.width), int(c.height))


# ------------------------------------------------------------------ validation
def _as_points(a, name: str, dim: int) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be converted to a float array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (N, {dim}), got {arr.shape}")
    return arr


def _check_inputs(points2d, points3d_world, camera) -> tuple[np.ndarray, np.ndarray]:
    p2 = _as_points(points2d, "points2d", 2)
    p3 = _as_points(points3d_world, "points3d_world", 3)
    if p2.shape[0] != p3.shape[0]:
        raise ValueError(
            f"points2d has {p2.shape[0]} points but points3d_world has {p3.shape[0]}; "
            "they must correspond one to one"
        )
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a neural_reloc Camera, got {type(camera).__name__}")
    return p2, p3


def _check_w2c(w2c_opencv) -> np.ndarray:
    T = np.asarray(w2c_opencv, dtype=np.float64)
    if T.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"w2c_opencv: expected a 4x4 (or 3x4) matrix, got shape {T.shape}")
    return T


# ------------------------------------------------------------------ residuals
def reprojection_errors(
    points2d: np.ndarray, points3d_world: np.ndarray, w2c_opencv: np.ndarray, camera: Camera
) -> np.ndarray:
    """Pixel distance between each observed point and its reprojection, (N,).

    ``inf`` for points at or behind the camera (z <= 0), NaN where an input is not
    finite.
    """
    p2, p3 = _check_inputs(points2d, points3d_world, camera)
    T = _check_w2c(w2c_opencv)
    pc = p3 @ T[:3, :3].T + T[:3, 3]
    uv, in_front = camera.project(pc)
    err = np.linalg.norm(uv - p2, axis=1)
    err = np.where(in_front, err, np.inf)
    finite = np.isfinite(p2).all(axis=1) & np.isfinite(p3).all(axis=1)
    return np.where(finite, err, np.nan)


def _residuals(p2: np.ndarray, p3: np.ndarray, T: np.ndarray, camera: Camera) -> np.ndarray:
    """Stacked (N, 2) residuals projection - observation (points assumed in front)."""
    pc = p3 @ T[:3, :3].T + T[:3, 3]
    uv, _ = camera.project(pc)
    return uv - p2


def projection_jacobian_camera_perturbation(
    points3d_world: np.ndarray, w2c_opencv: np.ndarray, camera: Camera
) -> np.ndarray:
    """Analytic Jacobian of the pixel projections, (N, 2, 6), w.r.t. a camera-frame
    perturbation xi = (v, omega) of the pose: ``w2c' = [exp([omega]x) | v] @ w2c``, i.e.
    x_cam' = exp([omega]x) x_cam + v (to first order x_cam - [x_cam]x omega + v).

    Includes the radial-tangential distortion; points must be in front (z > 0).
    """
    T = _check_w2c(w2c_opencv)
    p3 = _as_points(points3d_world, "points3d_world", 3)
    pc = p3 @ T[:3, :3].T + T[:3, 3]
    X, Y, Z = pc[:, 0], pc[:, 1], pc[:, 2]
    iz = 1.0 / Z
    x, y = X * iz, Y * iz
    n = pc.shape[0]
    # d(x, y)/d x_cam
    dn = np.zeros((n, 2, 3))
    dn[:, 0, 0] = iz
    dn[:, 0, 2] = -x * iz
    dn[:, 1, 1] = iz
    dn[:, 1, 2] = -y * iz
    # d distort / d(x, y) (same expressions as the Newton step in camera.py)
    c = camera
    r2 = x * x + y * y
    radial = 1.0 + r2 * (c.k1 + r2 * (c.k2 + r2 * c.k3))
    dradial = c.k1 + r2 * (2.0 * c.k2 + 3.0 * c.k3 * r2)
    dd = np.empty((n, 2, 2))
    dd[:, 0, 0] = radial + 2.0 * x * x * dradial + 2.0 * c.p1 * y + 6.0 * c.p2 * x
    dd[:, 0, 1] = 2.0 * x * y * dradial + 2.0 * c.p1 * x + 2.0 * c.p2 * y
    dd[:, 1, 0] = dd[:, 0, 1]
    dd[:, 1, 1] = radial + 2.0 * y * y * dradial + 6.0 * c.p1 * y + 2.0 * c.p2 * x
    duv_dpc = np.array([c.fx, c.fy])[None, :, None] * np.einsum("nij,njk->nik", dd, dn)
    # d x_cam / d xi = [I | -[x_cam]x]
    dpc = np.zeros((n, 3, 6))
    dpc[:, :, :3] = np.eye(3)
    dpc[:, 0, 4], dpc[:, 0, 5] = Z, -Y
    dpc[:, 1, 3], dpc[:, 1, 5] = -Z, X
    dpc[:, 2, 3], dpc[:, 2, 4] = Y, -X
    return np.einsum("nij,njk->nik", duv_dpc, dpc)


def ros_covariance_from_camera_perturbation_covariance(
    cov_xi: np.ndarray, w2c_opencv: np.ndarray
) -> np.ndarray:
    """Re-express a covariance of the camera-frame perturbation xi = (v, omega) of
    ``w2c_opencv`` (see :func:`projection_jacobian_camera_perturbation`) in the ROS
    convention: (dc, dtheta) with camera centre c' = c + dc and camera-to-world
    rotation R_c2w' = exp([dtheta]x) R_c2w.

    With w2c = (R, t), c = -R^T t and w2c' = [exp([omega]x) | v] w2c:
    R_c2w' = R^T exp(-[omega]x) = exp(-[R^T omega]x) R^T, so dtheta = -R^T omega;
    c' = -R'^T t' = c - R^T exp(-[omega]x) v, so dc = -R^T v to first order.
    Hence (dc, dtheta) = A xi with A = -diag(R^T, R^T) and Sigma_ros = A Sigma_xi A^T.
    """
    R = _check_w2c(w2c_opencv)[:3, :3]
    A = np.zeros((6, 6))
    A[:3, :3] = -R.T
    A[3:, 3:] = -R.T
    out = A @ np.asarray(cov_xi, dtype=np.float64) @ A.T
    return 0.5 * (out + out.T)


def pose_covariance(
    points2d: np.ndarray, points3d_world: np.ndarray, w2c_opencv: np.ndarray, camera: Camera
) -> tuple[np.ndarray | None, float, str]:
    """Gauss-Newton covariance of a pose fitted to (inlier) correspondences.

    Sigma_xi = s^2 (J^T J)^-1 with J the (2N, 6) Jacobian of the pixel residuals w.r.t.
    the camera-frame perturbation xi and s^2 = max(sum r^2 / (2N - 6),
    COVARIANCE_SIGMA_FLOOR_PX^2), then converted to the ROS convention with
    :func:`ros_covariance_from_camera_perturbation_covariance`.

    Returns (covariance or None, s^2, reason); None with a reason when N < 4, a point
    is not in front of the camera, or J^T J is (numerically) singular.
    """
    p2, p3 = _check_inputs(points2d, points3d_world, camera)
    T = _check_w2c(w2c_opencv)
    n = p2.shape[0]
    if n < MIN_POINTS_LOWER_BOUND:
        return None, float("nan"), f"covariance needs at least {MIN_POINTS_LOWER_BOUND} points, got {n}"
    z = p3 @ T[2, :3] + T[2, 3]
    if not np.all(z > 1e-9):
        return None, float("nan"), "covariance: some points are not in front of the camera"
    r = _residuals(p2, p3, T, camera)
    s2 = max(float(np.sum(r * r)) / (2 * n - 6), COVARIANCE_SIGMA_FLOOR_PX**2)
    J = projection_jacobian_camera_perturbation(p3, T, camera).reshape(2 * n, 6)
    JtJ = J.T @ J
    d = np.sqrt(np.diag(JtJ))
    if not np.all(np.isfinite(JtJ)) or np.any(d <= 0):
        return None, s2, "degenerate geometry: the pose is not observable from the inliers"
    S = JtJ / np.outer(d, d)
    cond = np.linalg.cond(S)
    if not np.isfinite(cond) or cond > JTJ_CONDITION_LIMIT:
        return None, s2, (
            f"degenerate geometry: J^T J is singular (scaled condition number {cond:.2e} > "
            f"{JTJ_CONDITION_LIMIT:.0e}), e.g. collinear or coincident 3D points"
        )
    cov_xi = s2 * (np.linalg.inv(S) / np.outer(d, d))
    return ros_covariance_from_camera_perturbation_covariance(cov_xi, T), s2, ""


# ------------------------------------------------------------------ RANSAC
def _pose_to_w2c(pose) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(pose.R, dtype=np.float64)
    T[:3, 3] = np.asarray(pose.t, dtype=np.float64).ravel()
    return T


def _bundle_options(cfg: PnPConfig) -> dict:
    return {
        "max_iterations": int(cfg.refine_max_iterations) if cfg.refine else 0,
        "loss_type": str(cfg.refine_loss).upper(),
        "loss_scale": float(cfg.refine_loss_scale_px),
    }


def ransac_iterations(num_inliers: int, num_points: int, cfg: PnPConfig) -> int:
    """RANSAC iterations after which a pose with ``num_inliers`` of ``num_points``
    correspondences would have been found with ``cfg.success_probability``: poselib's
    own stopping rule (log(1 - p) / log(1 - w^3), times ``dyn_num_trials_mult``), within
    ``[min_iterations, max_iterations]``. A search that only matters if it finds at
    least that many inliers can stop there."""
    if num_points <= 0 or num_inliers <= 0:
        return int(cfg.max_iterations)
    w = min(1.0, num_inliers / num_points)
    all_inliers = w**P3P_SAMPLE_SIZE
    if all_inliers >= 1.0:
        need = float(cfg.min_iterations)
    else:
        need = cfg.dyn_num_trials_mult * np.log1p(-cfg.success_probability) / np.log1p(-all_inliers)
    return int(np.clip(np.ceil(need), max(1, int(cfg.min_iterations)), int(cfg.max_iterations)))


def pnp_ransac(
    points2d: np.ndarray,
    points3d_world: np.ndarray,
    camera: Camera,
    cfg: PnPConfig | None = None,
) -> PnPResult:
    """Robust absolute pose from 2D-3D correspondences.

    ``points2d`` (N, 2) pixels of ``camera``; ``points3d_world`` (N, 3). Data problems
    (too few points, non-finite values, no consistent pose, degenerate geometry) give
    ``success=False`` with a reason; argument errors (shapes, bad config values) raise
    ValueError naming the argument (TypeError for a wrong ``camera``/``cfg`` type).
    Correspondences with a non-finite coordinate are dropped (never inliers); the
    others are used.
    """
    t0 = time.perf_counter()
    cfg = PnPConfig() if cfg is None else cfg
    if not isinstance(cfg, PnPConfig):
        raise TypeError(f"cfg: expected a PnPConfig, got {type(cfg).__name__}")
    cfg.validate()
    p2, p3 = _check_inputs(points2d, points3d_world, camera)
    n = p2.shape[0]
    mask = np.zeros(n, dtype=bool)

    def fail(reason: str, w2c=None, iterations: int = 0) -> PnPResult:
        # w2c: the best pose found, if any (not trustworthy); mask: inliers so far.
        return PnPResult(
            success=False,
            w2c_opencv=w2c,
            inlier_mask=mask,
            num_inliers=int(mask.sum()),
            reprojection_rmse_px=float("nan"),
            covariance=np.zeros((6, 6)),
            reason=reason,
            iterations=int(iterations),
            solve_ms=(time.perf_counter() - t0) * 1e3,
        )

    min_points = int(cfg.min_points)
    if n < min_points:
        return fail(f"too few correspondences: {n} < min_points={min_points}")
    finite = np.isfinite(p2).all(axis=1) & np.isfinite(p3).all(axis=1)
    idx = np.flatnonzero(finite)
    if idx.size < min_points:
        return fail(
            f"too few finite correspondences: {idx.size} of {n} have finite 2D and 3D "
            f"coordinates (min_points={min_points})"
        )
    q2 = np.ascontiguousarray(p2[idx])
    q3 = np.ascontiguousarray(p3[idx])

    import poselib

    pl_camera = poselib_camera(camera)
    ransac_opt = {
        "max_iterations": int(cfg.max_iterations),
        "min_iterations": int(cfg.min_iterations),
        "dyn_num_trials_mult": float(cfg.dyn_num_trials_mult),
        "success_prob": float(cfg.success_probability),
        "max_reproj_error": float(cfg.reprojection_threshold_px),
        "seed": int(cfg.seed),
        "progressive_sampling": False,
        "real_focal_check": False,
    }
    bundle_opt = _bundle_options(cfg)
    # RANSAC on a seeded subset when there are many correspondences (see
    # PnPConfig.max_ransac_points); the inlier set below is recomputed on all of them.
    ransac_subset = slice(None)
    cap = int(cfg.max_ransac_points)
    if 0 < cap < idx.size:
        ransac_subset = np.sort(np.random.default_rng(int(cfg.seed)).choice(idx.size, cap, replace=False))
    try:
        pose, info = poselib.estimate_absolute_pose(
            q2[ransac_subset], q3[ransac_subset], pl_camera, ransac_opt, bundle_opt
        )
    except (RuntimeError, ValueError) as e:  # pragma: no cover - poselib rejects data
        return fail(f"poselib failed: {e}")
    iterations = int(info.get("iterations", 0))
    if int(info.get("num_inliers", 0)) < min_points:
        scored = idx.size if cap == 0 or cap >= idx.size else f"a random {cap} of {idx.size}"
        return fail(
            f"RANSAC found no pose with at least min_points={min_points} inliers "
            f"(best: {int(info.get('num_inliers', 0))} of {scored})",
            iterations=iterations,
        )
    w2c = _pose_to_w2c(pose)
    if not np.all(np.isfinite(w2c)):
        return fail("RANSAC returned a non-finite pose", iterations=iterations)

    thr = float(cfg.reprojection_threshold_px)
    sub_mask = reprojection_errors(q2, q3, w2c, camera) <= thr
    poselib_mask = np.zeros(idx.size, dtype=bool)
    poselib_inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if poselib_inliers.shape == poselib_mask[ransac_subset].shape:
        poselib_mask[ransac_subset] = poselib_inliers
    mask_changed = not np.array_equal(poselib_mask, sub_mask)
    if cfg.refine and mask_changed and sub_mask.sum() >= min_points:
        pose, _ = poselib.refine_absolute_pose(q2[sub_mask], q3[sub_mask], pose, pl_camera, bundle_opt)
        w2c_ref = _pose_to_w2c(pose)
        if np.all(np.isfinite(w2c_ref)):
            w2c = w2c_ref
            sub_mask = reprojection_errors(q2, q3, w2c, camera) <= thr
    mask[idx[sub_mask]] = True
    num_inliers = int(mask.sum())
    if num_inliers < min_points:
        in_front = int(np.sum((q3 @ w2c[2, :3] + w2c[2, 3]) > 0))
        return fail(
            f"only {num_inliers} correspondences reproject within {thr} px of the best pose "
            f"(min_points={min_points}; {in_front} of {idx.size} points are in front of it)",
            w2c=w2c,
            iterations=iterations,
        )
    cov, _, reason = pose_covariance(p2[mask], p3[mask], w2c, camera)
    if cov is None:
        return fail(reason, w2c=w2c, iterations=iterations)
    err = reprojection_errors(p2[mask], p3[mask], w2c, camera)
    depth = p3[mask] @ w2c[2, :3] + w2c[2, 3]
    return PnPResult(
        success=True,
        w2c_opencv=w2c,
        inlier_mask=mask,
        num_inliers=num_inliers,
        reprojection_rmse_px=float(np.sqrt(np.mean(err * err))),
        covariance=cov,
        reason="",
        iterations=iterations,
        solve_ms=(time.perf_counter() - t0) * 1e3,
        inlier_uv=p2[mask],
        image_size=(camera.width, camera.height),
        median_inlier_depth=float(np.median(depth)),
    )
