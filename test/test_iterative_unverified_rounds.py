"""Rounds past ``max_iterations`` while no round is confident yet
(``max_unverified_iterations``): a frame whose rounds only reach the start ratio gets
more rounds; a confident one stops at ``max_iterations`` as before. Such a frame may
still be confirmed by the flow refinement's inliers (``flow_confirm_min_inliers``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from neural_reloc.methods.base import IterationRecord, PosePrior
from neural_reloc.methods.common.config import RenderingLocalizationConfig
from neural_reloc.methods.common.iterative import Correspondences
from neural_reloc.methods.common.refinement import FlowRefinement, check_flow_settings
from test_iterative_prior_gate import CAM, IMAGE, TRUE, Exact, camera_at


class Rounds(Exact):
    """Exact correspondences of TRUE, of which round k has ``good[k]`` of 200 (the rest scrambled)."""

    def __init__(self, good: list[int], **loc):
        super().__init__(**{"start_min_inlier_ratio": 0.2, "min_inlier_ratio": 0.5, "converged_translation_rel": 0.0,
                            "converged_rotation_deg": 0.0, **loc})
        self.good, self.rounds = good, []

    def correspondences(self, query, w2c_opencv, round_index, clock):
        self.rounds.append(round_index)
        c = super().correspondences(query, w2c_opencv, round_index, clock)
        good = self.good[min(round_index, len(self.good) - 1)]
        uv = c.uv.copy()
        uv[good:] = np.random.default_rng(round_index).uniform([0, 0], [CAM.width, CAM.height], (len(uv) - good, 2))
        return Correspondences(uv, c.points, CAM)


PRIOR = PosePrior(camera_at(0.1), source="given")
#: Rounds 0-2 reach only the start ratio (30% < 50%), round 3 is confident (75%).
LATE = [60, 60, 60, 150]


def test_an_unverified_frame_gets_rounds_up_to_max_unverified_iterations():
    reloc = Rounds(LATE, max_iterations=2, max_unverified_iterations=4)
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert r.success and reloc.rounds == [0, 1, 2, 3] and r.num_inliers >= 150
    assert np.allclose(r.w2c_opencv, TRUE, atol=1e-6)


@pytest.mark.parametrize("limit", [2, 3])
def test_without_enough_extra_rounds_the_frame_stays_unsure(limit):
    reloc = Rounds(LATE, max_iterations=2, max_unverified_iterations=limit)
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert not r.success and r.reason.startswith("unsure") and reloc.rounds == list(range(limit))


def test_a_verified_frame_stops_at_max_iterations():
    reloc = Rounds([150], max_iterations=2, max_unverified_iterations=4)
    assert reloc.localize(IMAGE, CAM, PRIOR).success and reloc.rounds == [0, 1]
    # verified in round 0, unverified rounds after: still stops at max_iterations
    reloc = Rounds([150, 60], max_iterations=2, max_unverified_iterations=4)
    assert reloc.localize(IMAGE, CAM, PRIOR).success and reloc.rounds == [0, 1]


class Confirming(FlowRefinement, Rounds):
    """Rounds whose refinement appends flow records with ``flow`` = [(inliers, update_m[,
    update_deg]), ...] (0.1 deg by default) and moves the pose 1 cm along x (so the
    reported pose shows it was the refined one)."""

    def __init__(self, good, flow: list[tuple[int, float]], **loc):
        super().__init__(good, **loc)
        self.loc = RenderingLocalizationConfig(**{k: getattr(self.loc, k) for k in vars(self.loc)})
        self.flow = flow

    def refine(self, image_rgb, camera, query, best, result, clock):
        pnp = replace(best[0], w2c_opencv=camera_at(0.01))
        for inliers, update_m, *update_deg in self.flow:
            result.history.append(IterationRecord(pnp.w2c_opencv, 2000, inliers, update_m, *(update_deg or [0.1]),
                                                  stage="flow"))
        return (pnp, 2000) if self.flow else best


def localize(good, flow, **loc):
    reloc = Confirming(good, flow, **{"max_iterations": 2, "max_unverified_iterations": 2, **loc})
    return reloc, reloc.localize(IMAGE, CAM, PRIOR)


def test_the_flow_refinement_confirms_an_unverified_frame_with_enough_settled_inliers():
    reloc, r = localize([60], [(999, 0.3), (1500, 0.01)])
    assert reloc.loc.flow_confirm_min_inliers == 1000 and reloc.extent == 10.0
    assert r.success and r.verified_by == "refinement" and [h.stage for h in r.history] == ["match"] * 2 + ["flow"] * 2
    assert np.allclose(r.w2c_opencv, camera_at(0.01))  # the refined pose is the one reported
    # the matching rounds' covariance floor: 4% of the depth (points 4-8 m away), not 0.35%
    assert np.sqrt(r.covariance[0, 0]) > 0.04 * 4


@pytest.mark.parametrize("flow, why", [
    ([(1500, 0.01), (999, 0.01)], "999 inliers < flow_confirm_min_inliers=1000"),  # the last round counts
    ([(1500, 0.2)], "had not settled: its last round moved 0.200 m"),  # > 0.3% of the 10 m extent
    ([(1500, 0.05)], "had not settled: its last round moved 0.050 m"),  # still converging (the 1% of old let it by)
    ([(1500, 0.01, 1.0)], "had not settled"),  # 1 deg > 0.5 deg
    # a settled round with 1000+ inliers, but only 55% of its correspondences: the wrong place lining up
    ([(1100, 0.01)], "1100 inliers of 2000 correspondences < flow_confirm_min_inlier_ratio=0.7"),
    ([], "the flow refinement accepted no round"),
])
def test_without_that_evidence_the_frame_stays_unsure(flow, why):
    _, r = localize([60], flow)
    assert not r.success and r.reason.startswith("unsure") and why in r.reason
    assert r.w2c_opencv is None and r.verified_by == ""
    assert (r.num_inliers, r.num_matches) == (r.history[1].num_inliers, 200)  # the last matching round's counts


def test_a_failed_round_is_evidence_against_the_estimate():
    reloc, r = localize([60, 60, 5], [(1500, 0.01)], max_unverified_iterations=4)
    assert not r.success and "iteration 3: PnP failed" in r.reason and reloc.rounds == [0, 1, 2]
    assert all(h.stage == "match" for h in r.history)  # no refinement ran


def test_a_verified_frame_stands_unless_the_flow_contradicts_it():
    _, r = localize([150], [(1500, 0.01)])
    assert r.success and r.verified_by == "match" and np.allclose(r.w2c_opencv, camera_at(0.01))
    assert np.sqrt(r.covariance[0, 0]) < 0.0035 * 8 + 0.01  # the refined floor
    _, r = localize([150], [])  # the flow accepted no round (a textureless view): the round's pose stands
    assert r.success and r.verified_by == "match" and np.allclose(r.w2c_opencv, TRUE, atol=1e-6)
    for flow, why in [([(655, 0.04)], "655 inliers"), ([(1500, 0.38)], "had not settled")]:
        _, r = localize([150], flow)  # a verified round, but the flow disagrees: refused
        assert not r.success and r.reason.startswith("unsure: the flow refinement") and why in r.reason
        assert r.w2c_opencv is None and r.verified_by == ""


def test_a_verified_frame_whose_next_round_finds_no_pose_needs_the_flow_verdict():
    # round 0 verified (150 of 200), round 1 from its estimate finds no pose (5 of 200): the
    # map rendered at the estimate contradicts it (a wrong retrieved place, 4 m off, once
    # stood this way because its flow accepted no round, as a textureless view's does)
    _, r = localize([150, 5], [])
    assert not r.success and r.w2c_opencv is None and r.verified_by == ""
    assert r.reason.startswith("unsure: a round from the verified estimate found no pose (iteration 2: PnP failed")
    assert "the flow refinement accepted no round" in r.reason
    _, r = localize([150, 5], [(655, 0.01)])  # the flow's verdict refuses it too
    assert not r.success and "655 inliers < flow_confirm_min_inliers" in r.reason
    _, r = localize([150, 5], [(1500, 0.01)])  # the flow confirms it: it stands on the flow's evidence
    assert r.success and r.verified_by == "refinement" and np.allclose(r.w2c_opencv, camera_at(0.01))
    assert np.sqrt(r.covariance[0, 0]) > 0.04 * 4  # the matching rounds' floor, as an unverified pose's
    _, r = localize([150, 150], [])  # the next round agrees: a textureless view's pose stands as before
    assert r.success and r.verified_by == "match"


def test_without_a_refinement_that_confirms_a_contradicted_frame_is_unsure():
    reloc = Confirming([150, 5], [(1500, 0.01)], max_iterations=2, max_unverified_iterations=2)
    reloc.loc.flow_confirm_min_inliers = 0  # the flow refines but cannot confirm
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert not r.success and r.reason.startswith("unsure: a round from the verified estimate found no pose")
    assert "no refinement can confirm it" in r.reason and [h.stage for h in r.history] == ["match", "match"]
    assert Confirming([150, 150], [], max_iterations=2, max_unverified_iterations=2).localize(IMAGE, CAM, PRIOR).success


def test_confirmation_off_leaves_the_frame_unsure_without_refining():
    reloc = Confirming([60], [(1500, 0.01)], max_iterations=2, max_unverified_iterations=2)
    reloc.loc.flow_confirm_min_inliers = 0
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert not r.success and [h.stage for h in r.history] == ["match", "match"]
    assert not Rounds([60], max_iterations=2, max_unverified_iterations=2).localize(IMAGE, CAM, PRIOR).success


def test_flow_settings_that_would_refuse_every_refined_frame_are_an_error():
    lc = RenderingLocalizationConfig(flow_max_points=500)
    with pytest.raises(ValueError, match="flow_confirm_min_inliers=1000 is above localization.flow_max_points=500"):
        check_flow_settings(lc)
    check_flow_settings(RenderingLocalizationConfig(flow_max_points=500, flow_confirm_min_inliers=0))
    check_flow_settings(RenderingLocalizationConfig(flow_max_points=500, flow_refinement_iterations=0))
    check_flow_settings(RenderingLocalizationConfig())


class FromPrior(Confirming):
    """Confirming, recording the pose each refinement starts from."""

    def refine(self, image_rgb, camera, query, best, result, clock):
        self.refined_from = best[0].w2c_opencv
        return super().refine(image_rgb, camera, query, best, result, clock)


def test_when_no_round_starts_the_flow_may_still_confirm_a_pose_from_the_prior_itself():
    reloc = FromPrior([5], [(1500, 0.01)], max_iterations=2, max_unverified_iterations=2)  # 5 of 200: round 1 fails
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert np.array_equal(reloc.refined_from, PRIOR.w2c_opencv)
    assert r.success and r.verified_by == "refinement" and r.reason == ""
    assert [h.stage for h in r.history] == ["match", "flow"] and np.allclose(r.w2c_opencv, camera_at(0.01))
    # the matching rounds' floor (2 deg, not 0.16): only the flow vouches for this pose
    assert np.degrees(np.sqrt(r.covariance[3, 3])) >= 2.0


@pytest.mark.parametrize("flow, refine_from_prior, why", [
    ([], True, "the flow refinement accepted no round"),
    ([(655, 0.01)], True, "655 inliers < flow_confirm_min_inliers"),
    ([(1500, 0.01)], False, ""),  # off: no refinement at all
])
def test_a_pose_from_the_prior_needs_the_flow_verdict(flow, refine_from_prior, why):
    reloc = FromPrior([5], flow, max_iterations=2, max_unverified_iterations=2, refine_from_prior=refine_from_prior)
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert not r.success and r.w2c_opencv is None and r.verified_by == ""
    assert r.reason.startswith("iteration 1: PnP failed") and why in r.reason
    assert hasattr(reloc, "refined_from") == refine_from_prior


ODOMETRY = PosePrior(camera_at(0.1), source="odometry")


def test_an_odometry_prior_goes_straight_to_the_flow_and_its_verdict():
    reloc = FromPrior([150], [(1500, 0.01)], max_iterations=2, max_unverified_iterations=2)
    r = reloc.localize(IMAGE, CAM, ODOMETRY)
    assert r.success and r.verified_by == "refinement" and reloc.rounds == []  # no matching round ran
    assert np.array_equal(reloc.refined_from, ODOMETRY.w2c_opencv)
    assert [h.stage for h in r.history] == ["flow"] and np.allclose(r.w2c_opencv, camera_at(0.01))


def test_a_refused_refinement_first_falls_back_to_the_full_pipeline():
    prior = PosePrior(camera_at(0.1), source="odometry")
    reloc = FromPrior([150], [(655, 0.01)], max_iterations=2, max_unverified_iterations=2)
    r = reloc.localize(IMAGE, CAM, prior)
    assert reloc.rounds == [0, 1] and "655 inliers" in r.prior.detail["refinement_first"]
    assert [h.stage for h in r.history] == ["match", "match", "flow"]  # the attempt's records are gone
    assert not r.success  # here the flow after the rounds contradicts the verified pose as well


@pytest.mark.parametrize("source, setting", [("given", "odometry"), ("odometry", "")])
def test_other_priors_or_the_setting_off_run_the_matching_rounds(source, setting):
    reloc = FromPrior([150], [(1500, 0.01)], max_iterations=2, max_unverified_iterations=2,
                      flow_first_prior_source=setting)
    r = reloc.localize(IMAGE, CAM, PosePrior(camera_at(0.1), source=source))
    assert r.success and r.verified_by == "match" and reloc.rounds == [0, 1]


class FromPriorWithSupport(FromPrior):
    """FromPrior whose refined pose has inliers drawn in a half-size camera, 5 m deep; counts its calls."""

    calls = 0

    def refine(self, image_rgb, camera, query, best, result, clock):
        self.calls += 1
        pnp, n = super().refine(image_rgb, camera, query, best, result, clock)
        if not self.flow:
            return pnp, n
        return replace(pnp, inlier_uv=np.array([[10.0, 20.0]]), image_size=(CAM.width // 2, CAM.height // 2),
                       median_inlier_depth=5.0), n


def test_a_refinement_first_pose_has_its_inliers_and_the_refined_floor():
    reloc = FromPriorWithSupport([150], [(1500, 0.01)], max_iterations=2, max_unverified_iterations=2)
    r = reloc.localize(IMAGE, CAM, ODOMETRY)
    assert r.success and reloc.rounds == [] and np.allclose(r.inlier_uv, [[20.0, 40.0]])
    assert np.sqrt(r.covariance[0, 0]) == pytest.approx(0.0035 * 5.0)  # the odometry prior and the flow agree
    assert np.degrees(np.sqrt(r.covariance[3, 3])) == pytest.approx(0.16)


def test_a_refused_refinement_first_is_not_repeated_when_no_round_starts():
    reloc = FromPriorWithSupport([5], [(655, 0.01)], max_iterations=2, max_unverified_iterations=2)
    r = reloc.localize(IMAGE, CAM, PosePrior(camera_at(0.1), source="odometry"))
    assert not r.success and reloc.calls == 1 and reloc.rounds == [0]
    assert r.reason.startswith("iteration 1: PnP failed") and "655 inliers" in r.prior.detail["refinement_first"]


class FlowFromThePrior(Confirming):
    """The flow refinement refused from the matching rounds' estimate (655 inliers) and,
    from the hypothesis itself, ``from_prior`` records; ``starts``: where each began."""

    def __init__(self, good, from_prior, prior_w2c, **loc):
        super().__init__(good, [], **loc)
        self.from_prior, self.prior_w2c, self.starts = from_prior, prior_w2c, []

    def refine(self, image_rgb, camera, query, best, result, clock):
        self.starts.append(best[0].w2c_opencv)
        self.flow = self.from_prior if np.allclose(best[0].w2c_opencv, self.prior_w2c) else [(655, 0.04)]
        return super().refine(image_rgb, camera, query, best, result, clock)


@pytest.mark.parametrize("prior_x, enabled, from_prior, refinements, success", [
    (1.0, True, [(1500, 0.01)], 2, True),  # the rounds led 1 m away: the flow from the prior confirms
    (1.0, True, [(1500, 0.2)], 2, False),  # ... and is refused too
    (1.0, False, [(1500, 0.01)], 1, False),  # the setting off
    (0.1, True, [(1500, 0.01)], 1, False),  # within the warp reach (0.3 m here) of the refined estimate
])
def test_a_refused_frame_gets_the_refinement_from_its_hypothesis_when_the_rounds_led_away(
        prior_x, enabled, from_prior, refinements, success):
    reloc = FlowFromThePrior([150], from_prior, camera_at(prior_x), max_iterations=2, max_unverified_iterations=2,
                             refine_from_prior_after_refusal=enabled)
    r = reloc.localize(IMAGE, CAM, PosePrior(camera_at(prior_x), source="given"))
    assert len(reloc.starts) == refinements and np.allclose(reloc.starts[0], TRUE, atol=1e-6)
    assert r.success == success
    flow = [h for h in r.history if h.stage == "flow"]
    if success:
        assert r.verified_by == "refinement" and np.allclose(r.w2c_opencv, camera_at(0.01))
        assert [h.num_inliers for h in flow] == [655, 1500]  # both refinements' records
    else:
        assert r.reason.startswith("unsure: the flow refinement's last round had 655 inliers")
        assert ("not confirmed either" in r.reason) == (refinements == 2)
        assert [h.num_inliers for h in flow] == [655]  # a refused second refinement leaves no records
