"""A prior-free method of the map as the global prior of another (GlobalPriorRelocalizer)."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.geometry.camera import Camera
from neural_reloc.methods.base import LocalizationResult, PosePrior, Relocalizer
from neural_reloc.methods.common.config import IterativeLocalizationConfig
from neural_reloc.methods.common.global_prior import GlobalPriorRelocalizer
from neural_reloc.methods.common.iterative import IterativeRelocalizer

CAM = Camera(width=8, height=6, fx=10.0, fy=10.0, cx=4.0, cy=3.0)
IMAGE = np.zeros((6, 8, 3), np.uint8)


def pose(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


class Recorder(Relocalizer):
    """Returns a fixed result and records the priors it was given."""

    def __init__(self, method: str, success: bool, w2c=None, latency_ms: float = 1.0):
        self.method, self.success, self.w2c, self.latency_ms = method, success, w2c, latency_ms
        self.priors: list = []

    def localize(self, image_rgb, camera, prior):
        self.priors.append(prior)
        return LocalizationResult(success=self.success, method=self.method, prior=prior,
                                  w2c_opencv=self.w2c if self.success else None,
                                  covariance=np.eye(6) * 0.01 if self.success else None,
                                  num_inliers=40 if self.success else 3, num_matches=60,
                                  latency_ms={"pnp": self.latency_ms}, reason="" if self.success else "too few")


def test_frames_without_a_prior_start_from_the_prior_methods_pose():
    main, regressor = Recorder("crossfire", True, pose(1.0)), Recorder("kscr", True, pose(0.9), latency_ms=7.0)
    res = GlobalPriorRelocalizer(main, regressor).localize(IMAGE, CAM, None)
    assert regressor.priors == [None]
    given = main.priors[0]
    assert given.source == "regressor" and np.allclose(given.w2c_opencv, pose(0.9))
    assert given.detail["method"] == "kscr" and given.detail["num_inliers"] == 40
    assert res.success and res.method == "crossfire"
    assert res.latency_ms["prior"] == 7.0 and res.latency_ms["pnp"] == 1.0


def test_a_given_prior_skips_the_prior_method():
    main, regressor = Recorder("crossfire", True, pose(1.0)), Recorder("kscr", True, pose(0.9))
    odometry = PosePrior(pose(1.1), source="odometry")
    GlobalPriorRelocalizer(main, regressor).localize(IMAGE, CAM, odometry)
    assert regressor.priors == [] and main.priors == [odometry]


def test_when_the_prior_method_fails_the_main_method_uses_its_own_retrieval():
    main, regressor = Recorder("crossfire", False), Recorder("kscr", False)
    res = GlobalPriorRelocalizer(main, regressor).localize(IMAGE, CAM, None)
    assert main.priors == [None]
    assert not res.success and "prior" in res.latency_ms


class RefusesRegressorPriors(Recorder, IterativeRelocalizer):
    """An iterate-match-PnP method that finds an implausible pose from the regressor's
    prior (or fails with ``reason_from_prior``), ``self.w2c`` from retrieval;
    max_prior_mahalanobis is the default (5)."""

    loc = IterativeLocalizationConfig()
    extent = 10.0  # metres: refused_prior_agreement_rel (0.005) is 5 cm
    reason_from_prior = "implausible: 6.9 standard deviations"
    refused_w2c = None  # the pose a refused result still carries

    def localize(self, image_rgb, camera, prior):
        res = super().localize(image_rgb, camera, prior)
        if prior is not None:
            res.success, res.w2c_opencv, res.reason = False, self.refused_w2c, self.reason_from_prior
        else:
            res.prior = PosePrior(self.w2c, source="retrieval")
        return res


def test_an_implausible_result_from_the_prior_methods_pose_falls_back_to_retrieval():
    main = RefusesRegressorPriors("crossfire", True, pose(1.0), latency_ms=5.0)
    regressor = Recorder("kscr", True, pose(0.9), latency_ms=7.0)
    res = GlobalPriorRelocalizer(main, regressor).localize(IMAGE, CAM, None)
    assert [p.source if p else None for p in main.priors] == ["regressor", None]
    assert res.success and np.allclose(res.w2c_opencv, pose(1.0))
    assert "refused: implausible" in res.prior.detail["global_prior_failed"]
    assert res.latency_ms["prior"] == 7.0 + 5.0 and res.latency_ms["pnp"] == 5.0  # the refused attempt counts


def test_only_an_iterative_methods_refusal_by_its_prior_falls_back():
    class NotIterative(Recorder):  # e.g. kscr, which ignores priors and has its own "implausible pose"
        def localize(self, image_rgb, camera, prior):
            res = super().localize(image_rgb, camera, prior)
            res.success, res.reason = False, "implausible pose: far from the mapping cameras"
            return res

    main = NotIterative("kscr", True, pose(1.0))
    GlobalPriorRelocalizer(main, Recorder("posemap", True, pose(0.9))).localize(IMAGE, CAM, None)
    assert [p.source for p in main.priors] == ["regressor"]  # not run a second time


def test_a_retrieval_pose_that_disagrees_with_the_refused_prior_is_unsure():
    # the regressor's covariance is 0.01 (0.1 m, 0.1 rad): pose(2.0) is 11 standard deviations off
    main = RefusesRegressorPriors("crossfire", True, pose(2.0))
    res = GlobalPriorRelocalizer(main, Recorder("kscr", True, pose(0.9))).localize(IMAGE, CAM, None)
    assert not res.success and res.reason.startswith("unsure") and "kscr's pose" in res.reason


def test_a_retrieval_pose_that_agrees_with_the_refused_one_outvotes_the_prior():
    # an APR's pose 1.1 m off (11 standard deviations by its overconfident covariance): the
    # pose refined from it was refused, retrieval's lands within 2 cm of that one
    main = RefusesRegressorPriors("crossfire", True, pose(2.0))
    main.refused_w2c = pose(2.02)
    res = GlobalPriorRelocalizer(main, Recorder("posemap", True, pose(0.9))).localize(IMAGE, CAM, None)
    assert res.success and np.allclose(res.w2c_opencv, pose(2.0))
    assert "agrees with the refused one" in res.prior.detail["global_prior_failed"]
    main.refused_w2c = pose(2.2)  # 20 cm from it: three answers, no two alike
    res = GlobalPriorRelocalizer(main, Recorder("posemap", True, pose(0.9))).localize(IMAGE, CAM, None)
    assert not res.success and "is not the same" in res.reason
    main.refused_w2c = pose(2.02)
    main.loc = IterativeLocalizationConfig(refused_prior_agreement_rel=0.0)  # off
    assert not GlobalPriorRelocalizer(main, Recorder("posemap", True, pose(0.9))).localize(IMAGE, CAM, None).success


class FailsFromRegressorPriors(RefusesRegressorPriors):
    reason_from_prior = "iteration 1: PnP failed: 7 inliers of 222 matches"


def test_no_pose_from_the_prior_methods_pose_falls_back_to_retrieval_unchecked():
    # pose(2.0) is 11 standard deviations from the regressor's pose: a first guess that led
    # nowhere is no second answer, so retrieval's pose stands as it would without the prior
    main = FailsFromRegressorPriors("crossfire", True, pose(2.0), latency_ms=5.0)
    res = GlobalPriorRelocalizer(main, Recorder("posemap", True, pose(0.9), latency_ms=7.0)).localize(IMAGE, CAM, None)
    assert [p.source if p else None for p in main.priors] == ["regressor", None]
    assert res.success and np.allclose(res.w2c_opencv, pose(2.0))
    assert "posemap's pose led to no pose: iteration 1: PnP failed" in res.prior.detail["global_prior_failed"]
    assert res.latency_ms["prior"] == 7.0 + 5.0


def test_the_fallback_after_no_pose_can_be_switched_off():
    main = FailsFromRegressorPriors("crossfire", True, pose(2.0))
    main.loc = IterativeLocalizationConfig(retrieval_after_failed_global_prior=False)
    res = GlobalPriorRelocalizer(main, Recorder("posemap", True, pose(0.9))).localize(IMAGE, CAM, None)
    assert [p.source for p in main.priors] == ["regressor"]
    assert not res.success and res.reason.startswith("iteration 1: PnP failed")
    # an implausible result falls back whatever the switch says
    refuses = RefusesRegressorPriors("crossfire", True, pose(1.0))
    refuses.loc = main.loc
    assert GlobalPriorRelocalizer(refuses, Recorder("kscr", True, pose(0.9))).localize(IMAGE, CAM, None).success


def test_the_prior_method_must_be_another_relocalizer():
    r = Recorder("kscr", True, pose(0.0))
    with pytest.raises(ValueError, match="another relocalizer"):
        GlobalPriorRelocalizer(r, r)


def test_load_relocalizer_names_a_missing_prior_component(crossfire_map):
    from neural_reloc.map_bundle import MapError
    from neural_reloc.map_loading import load_relocalizer

    map_dir = crossfire_map[0]
    with pytest.raises(MapError, match="no 'kscr' component"):
        load_relocalizer(map_dir, "cpu", global_prior="kscr")
    with pytest.raises(ValueError, match="is the method itself"):
        load_relocalizer(map_dir, "cpu", global_prior="crossfire")
