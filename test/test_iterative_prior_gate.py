"""The iterate-match-PnP loop refuses a result that a prior's covariance rules out
(``max_prior_mahalanobis``), and only for priors with a positive-definite covariance."""

from __future__ import annotations

import numpy as np

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.se3 import invert_pose, make_pose, pose_error
from neural_reloc.methods.base import PosePrior
from neural_reloc.methods.common.config import IterativeLocalizationConfig
from neural_reloc.methods.common.iterative import Correspondences, IterativeRelocalizer

CAM = Camera.from_ros_k(320, 240, [[250.0, 0, 160.0], [0, 250.0, 120.0], [0, 0, 1]])
IMAGE = np.zeros((CAM.height, CAM.width, 3), np.uint8)


def camera_at(x: float) -> np.ndarray:
    """w2c_opencv of a camera at (x, 0, 0) looking down +z."""
    return invert_pose(make_pose(np.eye(3), [x, 0.0, 0.0]))


TRUE = camera_at(0.0)


class Exact(IterativeRelocalizer):
    """Exact correspondences of TRUE, whatever the pose asked from."""

    method = "exact"
    STAGES = ("correspondences", "pnp")

    def __init__(self, **loc):
        self.loc = IterativeLocalizationConfig(**{"max_iterations": 1, **loc})
        self.extent = 10.0
        self.points = np.random.default_rng(0).uniform([-3, -2, 4], [3, 2, 8], size=(200, 3))

    def correspondences(self, query, w2c_opencv, round_index, clock):
        uv, _ = CAM.project(self.points @ TRUE[:3, :3].T + TRUE[:3, 3])
        return Correspondences(uv, self.points, CAM)


def prior(x: float, sigma_m: float | None) -> PosePrior:
    cov = None if sigma_m is None else np.diag([sigma_m**2] * 3 + [np.deg2rad(2.0) ** 2] * 3)
    return PosePrior(camera_at(x), source="regressor" if cov is not None else "given", covariance=cov)


def test_a_result_many_standard_deviations_from_the_prior_is_implausible():
    r = Exact().localize(IMAGE, CAM, prior(0.8, 0.1))  # 0.8 m away, sigma 0.1 m: 8 sigma
    assert not r.success and r.reason.startswith("implausible") and "standard deviations" in r.reason


def test_a_result_within_the_priors_covariance_is_accepted():
    r = Exact().localize(IMAGE, CAM, prior(0.3, 0.1))  # 3 sigma
    assert r.success and pose_error(invert_pose(r.w2c_opencv), invert_pose(TRUE))[0] < 1e-3


def test_priors_without_a_covariance_or_with_the_gate_off_keep_the_extent_limit_only():
    assert Exact().localize(IMAGE, CAM, prior(0.8, None)).success
    assert Exact(max_prior_mahalanobis=0.0).localize(IMAGE, CAM, prior(0.8, 0.1)).success
