"""The one place the node crosses from the NeRF's world to the robot's ``map`` frame.

A map bundle may store ``map_from_world`` (:mod:`neural_reloc.geometry.alignment`): the
similarity from the frame its training poses were in (any units, any up) to the metric,
z-up ``map`` that Nav2, AMCL and odometry use. The relocalizer works in world, as
everywhere in the core. :class:`MapFrameRelocalizer` wraps it for the node so that
everything around it is in ``map``: priors come in in ``map`` (``/initialpose``,
``~/set_initial_pose``, odometry since the last fix) and are carried to world before the
relocalizer sees them; results come out in ``map`` (pose, covariance, the prior used,
the per-round history). The node's session (:class:`~neural_reloc.tracking.RelocalizationSession`)
then keeps its fix, ``map -> odom`` and its metre thresholds in the frame odometry is in
(a fix in world units carried by metric odometry would be wrong by the scale), and every
pose and TF the node publishes is in ``map`` without another conversion.

ROS-free (no rclpy): tested on its own.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..geometry.alignment import Similarity
from ..methods.base import IterationRecord, LocalizationResult, PosePrior, Relocalizer


def _prior_in(sim: Similarity, prior: PosePrior | None) -> PosePrior | None:
    if prior is None:
        return None
    cov = None if prior.covariance is None else sim.apply_covariance(prior.covariance)
    return PosePrior(sim.apply_w2c_opencv(prior.w2c_opencv), prior.source, cov, dict(prior.detail))


def result_in(sim: Similarity, result: LocalizationResult) -> LocalizationResult:
    """``result`` (poses, covariance, prior, history) carried by ``sim``."""
    return dataclasses.replace(
        result,
        w2c_opencv=None if result.w2c_opencv is None else sim.apply_w2c_opencv(result.w2c_opencv),
        covariance=None if result.covariance is None else sim.apply_covariance(result.covariance),
        prior=_prior_in(sim, result.prior),
        history=[dataclasses.replace(h, w2c_opencv=None if h.w2c_opencv is None else sim.apply_w2c_opencv(h.w2c_opencv),
                                     pose_update_m=h.pose_update_m * sim.scale)
                 for h in result.history if isinstance(h, IterationRecord)],
    )


class MapFrameRelocalizer(Relocalizer):
    """``inner`` (in world) seen from ``map``: priors in, results out, in ``map``."""

    def __init__(self, inner: Relocalizer, map_from_world: Similarity):
        self.inner = inner
        self.map_from_world = map_from_world
        self.world_from_map = map_from_world.inverse()
        self.method = inner.method

    def localize(self, image_rgb: np.ndarray, camera, prior: PosePrior | None) -> LocalizationResult:
        result = self.inner.localize(image_rgb, camera, _prior_in(self.world_from_map, prior))
        return result_in(self.map_from_world, result)

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return np.array([self.map_from_world.apply_w2c_opencv(T) for T in self.inner.reference_poses_w2c_opencv])

    def __getattr__(self, name):  # anything else the method offers (render models...), as it is, in world
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def in_map_frame(relocalizer: Relocalizer, map_from_world: Similarity) -> Relocalizer:
    """The relocalizer as the node uses it: itself when the map has no alignment."""
    return relocalizer if map_from_world.is_identity else MapFrameRelocalizer(relocalizer, map_from_world)
