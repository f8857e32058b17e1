"""Choosing each frame's prior and keeping the fix: the logic the ROS node and the bag
evaluator share, so that offline and live runs take the same decisions.

Per frame, in order of preference:

1. an explicit initial pose (``/initialpose`` on the node), used once;
2. the last accepted fix carried forward by odometry: the fix fixes
   ``map_from_odom``, and ``map_from_odom @ odom_from_base(t) @ base_from_camera`` is
   the prior at time t (REP-105; continuous tracking);
3. the last accepted fix itself when there is no odometry (a still or slow camera);
4. ``None``: the relocalizer's own global prior (retrieval over the map), after
   ``lost_after_failures`` failures in a row, when the fix is older than
   ``max_fix_age_s``, or before the first fix.

A result is *accepted* as the new fix when it succeeded and passes the confidence
thresholds; only accepted results move ``map_from_odom``.

Pose names: ``map_from_optical`` is the camera's REP-103 optical frame (x right, y
down, z forward, = OpenCV camera axes) in the map frame, i.e. an OpenCV camera-to-world
matrix; the relocalizer speaks ``w2c_opencv``, its inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config_fields import setting
from .geometry.camera import Camera
from .geometry.se3 import check_pose, invert_pose, pose_error
from .methods.base import LocalizationResult, PosePrior, Relocalizer

NS_PER_S = 1_000_000_000


@dataclass
class TrackingConfig:
    """Prior selection and fix acceptance (mirrored by config/relocalize.yaml)."""

    use_odometry: bool = setting(True, "Carry the fix forward with odom->base_link motion.")
    use_last_fix: bool = setting(True, "Without odometry, start from the last fix.")
    use_retrieval_when_lost: bool = setting(
        True, "When lost (or before the first fix), let the relocalizer find its own prior (retrieval over the "
        "map); false: frames without a prior fail."
    )
    lost_after_failures: int = setting(3, "Failures in a row before falling back to retrieval.",
                                       range=(1, 1_000_000))
    max_fix_age_s: float = setting(60.0, "An older fix is not trusted as a prior (0: no limit).", range=(0.0, 1e6))
    accept_min_inliers: int = setting(
        30, "A result needs at least this many PnP inliers to become the fix (and, in Nav2 mode, to be sent "
        "to Nav2).", range=(0, 1_000_000)
    )
    accept_min_inlier_ratio: float = setting(
        0.2, "A result needs at least this inlier ratio to become the fix.", range=(0.0, 1.0)
    )
    accept_max_position_std_m: float = setting(
        0.25, "A result needs a position standard deviation (largest axis, from its covariance) of at most this "
        "many metres to become the fix; a result without a covariance never does.", range=(0.0, 1e9)
    )
    accept_max_yaw_std_deg: float = setting(
        10.0, "A result needs a yaw standard deviation of at most this many degrees to become the fix.",
        range=(0.0, 180.0)
    )


@dataclass
class Frame:
    """One camera frame as the session sees it."""

    image_rgb: np.ndarray
    camera: Camera
    stamp_ns: int
    #: odom->base_link at the image stamp (None: no odometry for this frame).
    odom_from_base: np.ndarray | None = None
    #: base_link->camera optical frame extrinsic (None: identity, base = camera).
    base_from_optical: np.ndarray | None = None


def _pose_std(cov: np.ndarray | None) -> tuple[float, float]:
    """Position std (m, largest axis) and yaw std (deg) of a ROS 6x6 covariance
    (infinite for an unknown one: None)."""
    if cov is None:
        return math.inf, math.inf
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        return math.inf, math.inf
    pos = math.sqrt(max(float(np.max(np.linalg.eigvalsh(cov[:3, :3]))), 0.0))
    yaw = math.degrees(math.sqrt(max(float(cov[5, 5]), 0.0)))
    return pos, yaw


class RelocalizationSession:
    """Stateful per-camera driver of a :class:`Relocalizer`."""

    def __init__(self, relocalizer: Relocalizer, config: TrackingConfig | None = None):
        self.relocalizer = relocalizer
        self.config = config or TrackingConfig()
        self.map_from_odom: np.ndarray | None = None
        self.last_fix_map_from_optical: np.ndarray | None = None
        self.last_fix_stamp_ns: int | None = None
        self.failures_in_a_row = 0
        self._initial: tuple[np.ndarray, str] | None = None
        self.last_result: LocalizationResult | None = None

    # -- inputs besides frames -------------------------------------------------------
    def set_initial_pose(self, map_from_optical: np.ndarray, source: str = "initialpose") -> None:
        """Use this camera pose as the next frame's prior (e.g. from /initialpose)."""
        self._initial = (check_pose(np.asarray(map_from_optical, float), "initial pose"), source)

    def reset(self) -> None:
        self.map_from_odom = None
        self.last_fix_map_from_optical = None
        self.last_fix_stamp_ns = None
        self.failures_in_a_row = 0
        self._initial = None

    # -- the per-frame step ------------------------------------------------------------
    def prior_for(self, frame: Frame) -> PosePrior | None:
        cfg = self.config
        if self._initial is not None:
            T, source = self._initial
            self._initial = None
            return PosePrior(invert_pose(T), source=source)
        have_fix = self.last_fix_map_from_optical is not None
        lost = self.failures_in_a_row >= cfg.lost_after_failures
        too_old = (
            have_fix
            and cfg.max_fix_age_s > 0
            and frame.stamp_ns - self.last_fix_stamp_ns > cfg.max_fix_age_s * NS_PER_S
        )
        if have_fix and not too_old and not (lost and cfg.use_retrieval_when_lost):
            base_from_optical = frame.base_from_optical if frame.base_from_optical is not None else np.eye(4)
            if cfg.use_odometry and self.map_from_odom is not None and frame.odom_from_base is not None:
                T = self.map_from_odom @ frame.odom_from_base @ base_from_optical
                return PosePrior(invert_pose(T), source="odometry")
            if cfg.use_last_fix:
                return PosePrior(invert_pose(self.last_fix_map_from_optical), source="given")
        return None

    def process(self, frame: Frame) -> LocalizationResult:
        prior = self.prior_for(frame)
        if prior is None and not self.config.use_retrieval_when_lost:
            result = LocalizationResult(
                success=False, method=self.relocalizer.method, prior=None, reason="no prior (retrieval disabled)"
            )
        else:
            result = self.relocalizer.localize(frame.image_rgb, frame.camera, prior)
        self.observe(frame, result)
        return result

    def accepts(self, result: LocalizationResult) -> bool:
        """Whether a result is confident enough to become the fix (and go to Nav2)."""
        return not self.rejection_reason(result)

    def rejection_reason(self, result: LocalizationResult) -> str:
        """Why a result does not become the fix ('' when it does): its own failure
        reason, or the confidence threshold it misses (reported by the node)."""
        cfg = self.config
        if not result.success or result.w2c_opencv is None:
            return result.reason or "no pose estimated"
        if result.num_inliers < cfg.accept_min_inliers:
            return f"not confident: {result.num_inliers} inliers < accept_min_inliers {cfg.accept_min_inliers}"
        if result.inlier_ratio < cfg.accept_min_inlier_ratio:
            return (
                f"not confident: inlier ratio {result.inlier_ratio:.2f} < "
                f"accept_min_inlier_ratio {cfg.accept_min_inlier_ratio}"
            )
        pos_std, yaw_std = _pose_std(result.covariance)
        if not pos_std <= cfg.accept_max_position_std_m:
            return f"not confident: position std {pos_std:.3f} m > accept_max_position_std_m {cfg.accept_max_position_std_m}"
        if not yaw_std <= cfg.accept_max_yaw_std_deg:
            return f"not confident: yaw std {yaw_std:.2f} deg > accept_max_yaw_std_deg {cfg.accept_max_yaw_std_deg}"
        return ""

    def observe(self, frame: Frame, result: LocalizationResult) -> bool:
        """Update the fix from a result; returns whether it was accepted."""
        self.last_result = result
        if not self.accepts(result):
            self.failures_in_a_row += 1
            return False
        self.failures_in_a_row = 0
        map_from_optical = invert_pose(result.w2c_opencv)
        self.last_fix_map_from_optical = map_from_optical
        self.last_fix_stamp_ns = frame.stamp_ns
        if frame.odom_from_base is not None:
            base_from_optical = frame.base_from_optical if frame.base_from_optical is not None else np.eye(4)
            map_from_base = map_from_optical @ invert_pose(base_from_optical)
            self.map_from_odom = map_from_base @ invert_pose(frame.odom_from_base)
        else:  # an older fix's map->odom must not outlive this newer fix
            self.map_from_odom = None
        return True

    def prior_delta(self, result: LocalizationResult) -> tuple[float, float]:
        """Translation (m) and rotation (deg) between the prior and the estimate."""
        if result.prior is None or result.w2c_opencv is None:
            return math.nan, math.nan
        return pose_error(invert_pose(result.w2c_opencv), invert_pose(result.prior.w2c_opencv))
