"""The localization settings every method shares; a method's ``LocalizationConfig``
extends one of these (and may change a default with
:func:`~neural_reloc.config_fields.with_default`).

* :class:`LocalizationConfigBase`: 2D-3D correspondences -> PnP + RANSAC -> accepted
  or not (every method);
* :class:`IterativeLocalizationConfig`: the iterate-render-match-PnP loop of
  :class:`~neural_reloc.methods.common.iterative.IterativeRelocalizer` on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config_fields import setting
from ...geometry.pnp import PnPConfig

_COUNT = (0, 1_000_000)


@dataclass
class LocalizationConfigBase:
    min_matches: int = setting(20, "Fewer 2D-3D correspondences than this: the frame fails without PnP.",
                               range=_COUNT)
    min_inliers: int = setting(12, "Fewer PnP inliers than this: the frame fails.", range=_COUNT)
    min_inlier_ratio: float = setting(
        0.1, "A frame is localized only if its PnP reaches this inlier ratio; otherwise it fails as unsure.",
        range=(0.0, 1.0),
    )
    pnp: PnPConfig = setting(PnPConfig(), "PnP + RANSAC (poselib).")


@dataclass
class IterativeLocalizationConfig(LocalizationConfigBase):
    max_iterations: int = setting(2, "Correspondence -> PnP rounds at most per frame (each from the last pose).",
                                  range=(1, 100))
    converged_translation_rel: float = setting(
        0.001, "Stop iterating when the pose moved less than this fraction of the scene extent (and rotated "
        "less than converged_rotation_deg).", range=(0.0, 1e9),
    )
    converged_rotation_deg: float = setting(
        0.1, "Stop iterating when the pose rotated less than this (degrees) and moved less than "
        "converged_translation_rel.", range=(0.0, 180.0),
    )
    start_min_inlier_ratio: float = setting(
        0.05, "A round whose PnP reaches only this looser inlier ratio is a starting point for the next round, "
        "not an estimate: success still needs a round at min_inlier_ratio.", range=(0.0, 1.0),
    )
    max_prior_translation_rel: float = setting(
        0.5, "A result that moved further than this fraction of the scene extent from its prior is implausible.",
        range=(0.0, 1e9),
    )
    max_prior_rotation_deg: float = setting(
        90.0, "A result rotated further than this from its prior is implausible (degrees).", range=(0.0, 180.0)
    )


__all__ = ["IterativeLocalizationConfig", "LocalizationConfigBase"]
