"""A global prior from another method of the same map.

CROSSFIRE and NeRFMatch refine a pose: without a prior they start from retrieval over
rendered views. A method that needs no prior (``kscr``: keypoint scene-coordinate
regression) can give them that first pose instead. :class:`GlobalPriorRelocalizer`
wraps the refining relocalizer: a frame with a prior (odometry, an initial pose) goes
to it unchanged; a frame without one is first localized by the prior method, whose
pose (source ``"regressor"``) starts the refining method; when the prior method fails
(too few reliable keypoints, implausible pose) the refining method falls back to its
own retrieval. The prior's time is the result's ``prior`` stage.
"""

from __future__ import annotations

import numpy as np

from ..base import LocalizationResult, PosePrior, Relocalizer


class GlobalPriorRelocalizer(Relocalizer):
    def __init__(self, main: Relocalizer, prior_method: Relocalizer):
        if main is prior_method:
            raise ValueError("global prior: the prior method must be another relocalizer than the refining one")
        self.main = main
        self.prior_method = prior_method
        self.method = main.method

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return self.main.reference_poses_w2c_opencv

    def global_prior(self, image_rgb: np.ndarray, camera) -> tuple[PosePrior | None, LocalizationResult]:
        """The prior method's pose as a :class:`PosePrior` (None when it failed), and its result."""
        g = self.prior_method.localize(image_rgb, camera, None)
        if not g.success:
            return None, g
        detail = {"method": g.method, "num_inliers": g.num_inliers, "num_matches": g.num_matches,
                  "latency_ms": round(g.total_latency_ms, 2)}
        return PosePrior(g.w2c_opencv, source="regressor", covariance=g.covariance, detail=detail), g

    def localize(self, image_rgb: np.ndarray, camera, prior: PosePrior | None) -> LocalizationResult:
        if prior is not None:
            return self.main.localize(image_rgb, camera, prior)
        prior, g = self.global_prior(image_rgb, camera)
        res = self.main.localize(image_rgb, camera, prior)
        res.latency_ms = {"prior": g.total_latency_ms, **res.latency_ms}
        if prior is None and res.prior is not None:
            res.prior.detail = {**res.prior.detail, "global_prior_failed": f"{g.method}: {g.reason}"}
        return res


__all__ = ["GlobalPriorRelocalizer"]
