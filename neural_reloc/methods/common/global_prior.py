"""A global prior from another method of the same map.

CROSSFIRE and NeRFMatch refine a pose: without a prior they start from retrieval over
rendered views. A method that needs no prior (``kscr``: keypoint scene-coordinate
regression) can give them that first pose instead. :class:`GlobalPriorRelocalizer`
wraps the refining relocalizer: a frame with a prior (odometry, an initial pose) goes
to it unchanged; a frame without one is first localized by the prior method, whose
pose (source ``"regressor"``) starts the refining method; when the prior method fails
(too few reliable keypoints, implausible pose) the refining method falls back to its
own retrieval. So does a frame whose refined pose is implausible given the prior (e.g.
many standard deviations from it by its covariance: the refining method's rounds left
the prior's basin); the pose found from retrieval then has to agree with the prior's
covariance too (the refining method's ``max_prior_mahalanobis``) or the refused pose
(``refused_prior_agreement_*``: two refinements from different starts that agree outvote
the prior), else the frame is unsure: two answers that disagree are no fix. A frame that
ends in no pose from the prior's (a first guess outside the refining method's basin) is
localized from retrieval as if there were no global prior
(``retrieval_after_failed_global_prior``). The prior's time, and that of a failed or
refused first attempt, is the result's ``prior`` stage.
"""

from __future__ import annotations

import numpy as np

from ...geometry.se3 import invert_pose, pose_error
from ..base import LocalizationResult, PosePrior, Relocalizer
from .iterative import (
    IMPLAUSIBLE_GIVEN_PRIOR,
    IterativeRelocalizer,
    beyond_prior_covariance,
)


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
        prior_ms = g.total_latency_ms
        why = "" if prior is not None else f"{g.method}: {g.reason}"
        if prior is not None and not res.success and isinstance(self.main, IterativeRelocalizer):
            implausible = res.reason.startswith(IMPLAUSIBLE_GIVEN_PRIOR)
            if implausible or self.main.loc.retrieval_after_failed_global_prior:
                why = f"{g.method}'s pose {'refused' if implausible else 'led to no pose'}: {res.reason}"
                prior_ms += res.total_latency_ms
                first, res = res, self.main.localize(image_rgb, camera, None)  # the method's own retrieval
                if implausible and self._check_against(res, prior, first):
                    why += "; the pose from retrieval agrees with the refused one"
        res.latency_ms = {"prior": prior_ms, **res.latency_ms}
        if res.prior is not None and why:
            res.prior.detail = {**res.prior.detail, "global_prior_failed": why}
        return res

    def _check_against(self, res: LocalizationResult, prior: PosePrior, refused: LocalizationResult) -> bool:
        """A pose found from retrieval after the one refined from the prior's was
        ``refused`` must agree with the prior's covariance or with the refused pose; if
        neither, ``res`` becomes unsure. True when it stands on the refused pose alone."""
        lc = self.main.loc  # only an IterativeRelocalizer falls back
        sigmas = beyond_prior_covariance(res.w2c_opencv, prior, lc.max_prior_mahalanobis) if res.success else None
        if sigmas is None:
            return False
        if refused.w2c_opencv is not None and lc.refused_prior_agreement_rel > 0:
            dt, dr = pose_error(invert_pose(res.w2c_opencv), invert_pose(refused.w2c_opencv))
            if dt <= lc.refused_prior_agreement_rel * self.main.extent and dr <= lc.refused_prior_agreement_deg:
                return True
        res.success = False
        res.reason = (f"unsure: the pose from retrieval is {sigmas:.1f} standard deviations from "
                      f"{self.prior_method.method}'s pose (limit {lc.max_prior_mahalanobis}), and the pose refined "
                      f"from {self.prior_method.method}'s was refused and is not the same: two answers that disagree")
        return False


__all__ = ["GlobalPriorRelocalizer"]
