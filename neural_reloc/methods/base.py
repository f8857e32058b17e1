"""The ROS-free relocalization interface every method implements.

``Relocalizer.localize(image, camera, prior)`` returns a :class:`LocalizationResult`
whose pose is an OpenCV world-to-camera matrix (``w2c_opencv``: the PnP side's
convention, see :mod:`neural_reloc.geometry.frames`), with a 6x6 covariance, inlier
counts, iterations, per-stage latency, and on failure a reason.

Priors are a :class:`PosePrior` (a given pose, odometry since the last fix, retrieval
over the map, a constant pose...; chosen per frame by
:class:`~neural_reloc.tracking.RelocalizationSession`). The node, the CLI and the bag
evaluator all call exactly this. The shared iterate-correspondences-PnP loop is
:class:`~neural_reloc.methods.common.iterative.IterativeRelocalizer`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from ..geometry.camera import Camera
from ..geometry.frames import camera_center_from_opencv_w2c, opengl_c2w_from_opencv_w2c
from ..geometry.se3 import check_pose

#: Prior sources, as reported in results and in the ROS status message.
PRIOR_SOURCES = ("given", "initialpose", "odometry", "retrieval", "constant", "regressor")


@dataclass
class PosePrior:
    """A starting pose for localization (OpenCV world-to-camera)."""

    w2c_opencv: np.ndarray
    source: str = "given"
    #: Optional 6x6 covariance of the prior (ROS parameterization, world frame).
    covariance: np.ndarray | None = None
    #: Free-form detail, e.g. the retrieved reference view's name and score.
    detail: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in PRIOR_SOURCES:
            raise ValueError(f"prior source must be one of {PRIOR_SOURCES}, got {self.source!r}")
        self.w2c_opencv = check_pose(np.asarray(self.w2c_opencv, dtype=np.float64), f"{self.source} prior pose")

    @classmethod
    def from_opengl_c2w(cls, c2w_opengl: np.ndarray, source: str = "given", **kw) -> "PosePrior":
        from ..geometry.frames import opencv_w2c_from_opengl_c2w

        return cls(opencv_w2c_from_opengl_c2w(c2w_opengl), source, **kw)


#: History stage of a final flow round whose confident pose lay beyond its reach of the settled
#: one: recorded for the verdict (and for studies), never adopted as the frame's estimate.
FINAL_CONTRADICTS = "flow_final_contradicts"
#: Stages whose records are evidence, not an estimate the frame moved to.
NOT_ADOPTED_STAGES = (FINAL_CONTRADICTS,)


@dataclass
class IterationRecord:
    """One estimate of a frame: a correspondence -> PnP round or a refinement step (for
    convergence studies, Table-2 style); a record of :data:`NOT_ADOPTED_STAGES` is an
    estimate found and not taken."""

    w2c_opencv: np.ndarray | None
    num_matches: int
    num_inliers: int
    pose_update_m: float = float("nan")
    pose_update_deg: float = float("nan")
    #: What made it: "match" (a correspondence round), "flow", "flow_final" (the flow round at the query's
    #: finer resolution), "flow_final_contradicts" (that round's confident pose beyond its reach of the
    #: settled one: not adopted; the flow's verdict refuses the frame) or "photometric" (refinement).
    stage: str = "match"


@dataclass
class LocalizationResult:
    success: bool
    method: str
    prior: PosePrior | None
    #: Estimated OpenCV world-to-camera pose (None when nothing was estimated).
    w2c_opencv: np.ndarray | None = None
    #: 6x6 covariance: (x, y, z, rot_x, rot_y, rot_z) of the camera pose in the world
    #: frame — position of the camera centre, then small rotations about the fixed world
    #: axes (ROS PoseWithCovariance convention). None: unknown (a method that gives none);
    #: such a result never becomes a fix (tracking.RelocalizationSession.accepts).
    covariance: np.ndarray | None = None
    num_matches: int = 0
    num_inliers: int = 0
    iterations: int = 0
    #: Per-stage wall-clock latency in milliseconds, summed over iterations.
    latency_ms: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    history: list[IterationRecord] = field(default_factory=list)
    #: How a localized pose was verified: "match" (a correspondence round reached the
    #: method's inlier ratio and no later round from it failed), "refinement" (only the
    #: refinement's own evidence confirmed it: a weaker proof, reported with a wider
    #: covariance), "" (failed, or a method without that distinction).
    verified_by: str = ""
    #: (K, 2) pixels (x right, y down) of the query image where the final pose's inlier
    #: correspondences are, for drawing (the node's ~/debug_image); None: not reported.
    inlier_uv: np.ndarray | None = None

    @property
    def total_latency_ms(self) -> float:
        return float(sum(self.latency_ms.values()))

    @property
    def inlier_ratio(self) -> float:
        return self.num_inliers / self.num_matches if self.num_matches else 0.0

    @property
    def c2w_opengl(self) -> np.ndarray | None:
        return None if self.w2c_opencv is None else opengl_c2w_from_opencv_w2c(self.w2c_opencv)

    @property
    def camera_center(self) -> np.ndarray | None:
        return None if self.w2c_opencv is None else camera_center_from_opencv_w2c(self.w2c_opencv)


class Relocalizer(abc.ABC):
    """Estimates the pose of a query image against a loaded map."""

    #: Method name, e.g. "crossfire".
    method: str = ""

    @abc.abstractmethod
    def localize(self, image_rgb: np.ndarray, camera: Camera, prior: PosePrior | None) -> LocalizationResult:
        """Localize an RGB uint8 (H, W, 3) image taken by ``camera``.

        ``prior=None`` asks the relocalizer for its own global prior (e.g. retrieval);
        methods that cannot do that fail with a reason.
        """

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:  # pragma: no cover - optional
        """(N, 4, 4) reference views of the map, for retrieval and evaluation."""
        raise NotImplementedError
