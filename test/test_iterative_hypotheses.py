"""Several retrieval hypotheses: every one gets a first round (until one is accepted
outright: hypothesis_accept_inlier_ratio), the one with the most inliers (the first of
equals; else the accepted one) goes on, and a later one's RANSAC only gets the budget
that beating the best so far needs. A frame refused from it is pursued from the others
(hypotheses_after_refusal)."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.geometry.pnp import ransac_iterations
from neural_reloc.methods.base import IterationRecord, PosePrior
from neural_reloc.methods.common import iterative
from neural_reloc.methods.common.iterative import Correspondences
from test_iterative_prior_gate import CAM, IMAGE, TRUE, Exact, camera_at

#: Correct correspondences a hypothesis at x gives (the rest of 200 are outliers).
GOOD = {0.1: 60, 0.2: 150, 0.3: 90}


class Hypotheses(Exact):
    """Exact correspondences of TRUE, a hypothesis-dependent share of them scrambled."""

    def retrieval_hypotheses(self, image_rgb, camera, query):
        return [PosePrior(camera_at(x), source="retrieval", detail={"reference": str(x)}) for x in GOOD]

    def correspondences(self, query, w2c_opencv, round_index, clock):
        c = super().correspondences(query, w2c_opencv, round_index, clock)
        good = GOOD[round(-w2c_opencv[0, 3], 3)]
        rng = np.random.default_rng(good)
        uv = c.uv.copy()
        uv[good:] = rng.uniform([0, 0], [CAM.width, CAM.height], size=(len(uv) - good, 2))
        return Correspondences(uv, c.points, CAM)


def ransac_budgets(monkeypatch) -> list[int]:
    """The RANSAC budget (max_iterations) of every PnP the loop runs, in order."""
    budgets = []
    real = iterative.pnp_ransac

    def spy(uv, points, camera, cfg):
        budgets.append(cfg.max_iterations)
        return real(uv, points, camera, cfg)

    monkeypatch.setattr(iterative, "pnp_ransac", spy)
    return budgets


def test_later_hypotheses_get_the_budget_to_beat_the_best_so_far(monkeypatch):
    budgets = ransac_budgets(monkeypatch)
    reloc = Hypotheses(min_inlier_ratio=0.1, start_min_inlier_ratio=0.05)
    r = reloc.localize(IMAGE, CAM, None)
    assert r.success and r.prior.detail["reference"] == "0.2"
    inliers = [h["inliers"] for h in r.prior.detail["hypotheses"]]
    assert [abs(i - g) <= 3 for i, g in zip(inliers, GOOD.values())] == [True] * 3, inliers
    cfg = reloc.loc.pnp
    assert budgets[:3] == [
        cfg.max_iterations,
        ransac_iterations(inliers[0] + 1, 200, cfg),
        ransac_iterations(max(inliers[:2]) + 1, 200, cfg),
    ]
    assert np.allclose(r.w2c_opencv, TRUE, atol=1e-6)


def test_a_first_round_at_the_accept_ratio_ends_the_search_over_hypotheses(monkeypatch):
    rounds = []
    real = iterative.pnp_ransac

    def spy(uv, points, camera, cfg):
        rounds.append(len(uv))
        return real(uv, points, camera, cfg)

    monkeypatch.setattr(iterative, "pnp_ransac", spy)
    # 0.1 gives 30% inliers, 0.2 75%: at 0.5 the second ends the search, the third is not tried
    reloc = Hypotheses(min_inlier_ratio=0.1, start_min_inlier_ratio=0.05, hypothesis_accept_inlier_ratio=0.5)
    r = reloc.localize(IMAGE, CAM, None)
    assert r.success and r.prior.detail["reference"] == "0.2"
    assert len(rounds) == 2
    listed = r.prior.detail["hypotheses"]
    assert [h["reference"] for h in listed] == ["0.1", "0.2", "0.3"]
    assert [h.get("not_tried", False) for h in listed] == [False, False, True]
    assert np.allclose(r.w2c_opencv, TRUE, atol=1e-6)
    # at 0.25 the first one already does
    r = Hypotheses(min_inlier_ratio=0.1, start_min_inlier_ratio=0.05, hypothesis_accept_inlier_ratio=0.25).localize(
        IMAGE, CAM, None)
    assert r.success and r.prior.detail["reference"] == "0.1"
    assert [h.get("not_tried", False) for h in r.prior.detail["hypotheses"]] == [False, True, True]


class MoreMatchesFirst(Exact):
    """Hypothesis 0.1 gives 400 correspondences with 36 correct (9%: not verified), 0.2
    gives 200 with 30 correct (15%)."""

    def retrieval_hypotheses(self, image_rgb, camera, query):
        return [PosePrior(camera_at(x), source="retrieval", detail={"reference": str(x)}) for x in (0.1, 0.2)]

    def correspondences(self, query, w2c_opencv, round_index, clock):
        x = round(-w2c_opencv[0, 3], 3)
        n, good = (400, 36) if x == 0.1 else (200, 30)
        rng = np.random.default_rng(n)
        points = rng.uniform([-3, -2, 4], [3, 2, 8], size=(n, 3))
        uv, _ = CAM.project(points @ TRUE[:3, :3].T + TRUE[:3, 3])
        uv[good:] = rng.uniform([0, 0], [CAM.width, CAM.height], size=(n - good, 2))
        return Correspondences(uv, points, CAM)


def test_the_accepted_hypothesis_goes_on_even_with_fewer_inliers():
    r = MoreMatchesFirst(min_inlier_ratio=0.1, start_min_inlier_ratio=0.05,
                         hypothesis_accept_inlier_ratio=0.1).localize(IMAGE, CAM, None)
    tried = r.prior.detail["hypotheses"]
    assert tried[0]["inliers"] > tried[1]["inliers"] >= 0.1 * tried[1]["matches"], tried
    assert r.success and r.prior.detail["reference"] == "0.2"
    # without the early stop the most inliers win (and that round verified nothing)
    r = MoreMatchesFirst(min_inlier_ratio=0.1, start_min_inlier_ratio=0.05).localize(IMAGE, CAM, None)
    assert r.prior.detail["reference"] == "0.1"


def test_a_verified_hypothesis_ends_the_search_only_where_keyframes_ranked_them():
    """Both methods stop at the first verified hypothesis by default, but only when their
    index has keyframes (hypotheses ranked by keyframe PnP): ranked by global descriptor
    alone, a first wrong hypothesis could end the search (NOTES.md)."""
    from types import SimpleNamespace

    from neural_reloc.methods.common.retrieval import RetrievalIndex
    from neural_reloc.methods.crossfire.config import LocalizationConfig as CrossfireLocalization
    from neural_reloc.methods.nerfmatch.config import LocalizationConfig as NerfMatchLocalization
    from neural_reloc.methods.nerfmatch.relocalizer import NerfMatchRelocalizer

    for lc in (CrossfireLocalization(), NerfMatchLocalization()):
        assert 0 < lc.hypothesis_accept_inlier_ratio and lc.hypothesis_accept_inlier_ratio >= lc.min_inlier_ratio
    from neural_reloc.methods.crossfire.relocalizer import CrossfireRelocalizer

    verified = SimpleNamespace(num_inliers=100, inlier_ratio=0.5)
    for cls, lc in ((NerfMatchRelocalizer, NerfMatchLocalization()), (CrossfireRelocalizer, CrossfireLocalization())):
        reloc = cls.__new__(cls)
        reloc.loc = lc
        for blocks, stops in ((0, False), (4, True)):
            reloc.retrieval = RetrievalIndex(3, 8, blocks, 8 if blocks else 0)
            assert reloc._accepts_hypothesis(verified) is stops, cls.__name__
        assert not reloc._accepts_hypothesis(SimpleNamespace(num_inliers=100, inlier_ratio=0.05))  # not verified
        reloc.loc.retrieval_shortlist = 0  # keyframes, but not used
        assert not reloc._accepts_hypothesis(verified)


class RefusedAt(Hypotheses):
    """Hypotheses whose refinement (one record a call) confirms the frame only when it
    started from a hypothesis not in ``refused``; ``refined_from``: each call's hypothesis."""

    def __init__(self, refused: tuple[str, ...], **loc):
        super().__init__(**{"min_inlier_ratio": 0.1, "start_min_inlier_ratio": 0.05,
                            "refine_from_prior_after_refusal": False, **loc})
        self.refused, self.refined_from = refused, []

    def refinement_can_confirm(self):
        return True

    def refine(self, image_rgb, camera, query, best, result, clock):
        self.refined_from.append(result.prior.detail["reference"])
        result.history.append(IterationRecord(best[0].w2c_opencv, 2000, 1500, 0.0, 0.0, stage="flow"))
        return best

    def refinement_confirms(self, records, verified):
        return f"the flow refused {self.refined_from[-1]}" if self.refined_from[-1] in self.refused else ""


def test_a_frame_refused_from_an_accepted_hypothesis_is_pursued_from_the_untried_ones():
    # 0.1 (30% inliers) is accepted outright at 0.25 and its refinement refuses the frame
    reloc = RefusedAt(("0.1",), hypothesis_accept_inlier_ratio=0.25)
    r = reloc.localize(IMAGE, CAM, None)
    assert r.success and r.prior.detail["reference"] == "0.2" and reloc.refined_from == ["0.1", "0.2"]
    listed = r.prior.detail["hypotheses"]
    assert [h.get("after_refusal") for h in listed] == [None, "localized", None]
    assert [h.get("not_tried", False) for h in listed] == [False, False, True]
    assert abs(listed[1]["inliers"] - GOOD[0.2]) <= 3 and listed[1]["must_beat"] == 0
    assert np.allclose(r.w2c_opencv, TRUE, atol=1e-6) and r.reason == ""
    assert [h.stage for h in r.history] == ["match", "flow"]  # the refused attempt's records are not the pose's


def test_the_others_go_by_their_first_rounds_inliers_and_every_refusal_keeps_the_first_reason():
    reloc = RefusedAt(("0.2", "0.3"))  # every first round runs; 0.2 wins with 150 inliers, 0.3 has 90, 0.1 60
    r = reloc.localize(IMAGE, CAM, None)
    assert r.success and reloc.refined_from == ["0.2", "0.3", "0.1"] and r.prior.detail["reference"] == "0.1"
    reloc = RefusedAt(("0.1", "0.2", "0.3"))
    r = reloc.localize(IMAGE, CAM, None)
    assert not r.success and reloc.refined_from == ["0.2", "0.3", "0.1"]
    assert r.prior.detail["reference"] == "0.2" and r.reason == "unsure: the flow refused 0.2"
    assert [h.get("after_refusal") for h in r.prior.detail["hypotheses"]] == ["refused", None, "refused"]


@pytest.mark.parametrize("limit, refined", [(0, ["0.2"]), (1, ["0.2", "0.3"])])
def test_hypotheses_after_refusal_limits_the_pursuit(limit, refined):
    reloc = RefusedAt(("0.2", "0.3"), hypotheses_after_refusal=limit)
    r = reloc.localize(IMAGE, CAM, None)
    assert not r.success and reloc.refined_from == refined and r.prior.detail["reference"] == "0.2"


def test_a_given_prior_has_no_other_hypothesis_to_pursue():
    reloc = RefusedAt(("given",))
    r = reloc.localize(IMAGE, CAM, PosePrior(camera_at(0.1), source="given", detail={"reference": "given"}))
    assert not r.success and reloc.refined_from == ["given"] and "hypotheses" not in r.prior.detail


class Widened(RefusedAt):
    """RefusedAt whose first retrieval gives 0.1 alone and whose widened retrieval gives
    the poses in ``wider`` (not near the refused ones); ``excluded``: what it was told."""

    def __init__(self, refused, wider=(0.2,), **loc):
        super().__init__(refused, **loc)
        self.wider, self.excluded = wider, []

    def retrieval_hypotheses(self, image_rgb, camera, query):
        return [PosePrior(camera_at(0.1), source="retrieval", detail={"reference": "0.1"})]

    def widened_retrieval_hypotheses(self, image_rgb, camera, query, exclude_w2c_opencv):
        self.excluded.append(exclude_w2c_opencv)
        return [PosePrior(camera_at(x), source="retrieval", detail={"reference": str(x)}) for x in self.wider]


def test_a_frame_refused_from_every_hypothesis_gets_the_widened_retrieval():
    reloc = Widened(("0.1",))
    r = reloc.localize(IMAGE, CAM, None)
    assert r.success and reloc.refined_from == ["0.1", "0.2"] and r.prior.detail["reference"] == "0.2"
    assert r.prior.detail["widened_retrieval"] == {"refused_before": ["0.1"]}
    assert len(reloc.excluded) == 1 and np.allclose(reloc.excluded[0], [camera_at(0.1)])
    reloc = Widened(("0.1", "0.2", "0.3"), wider=(0.2, 0.3))
    r = reloc.localize(IMAGE, CAM, None)
    assert not r.success and reloc.refined_from == ["0.1", "0.2", "0.3"] and r.prior.detail["reference"] == "0.1"
    assert r.reason == ("unsure: the flow refused 0.1; the widened retrieval's 2 hypotheses gave no confirmed pose "
                        "either (retrieval_widened_shortlist)")
    reloc = Widened(("0.1",), wider=())  # the widened retrieval finds nothing: the refusal stands as it was
    r = reloc.localize(IMAGE, CAM, None)
    assert not r.success and reloc.refined_from == ["0.1"] and r.reason == "unsure: the flow refused 0.1"


def test_no_widened_retrieval_for_a_given_prior_or_a_localized_frame():
    reloc = Widened(("given",))
    r = reloc.localize(IMAGE, CAM, PosePrior(camera_at(0.1), source="given", detail={"reference": "given"}))
    assert not r.success and reloc.excluded == []
    reloc = Widened(())
    assert reloc.localize(IMAGE, CAM, None).success and reloc.excluded == []


def test_a_hypothesis_whose_ransac_was_cut_short_gets_its_first_round_again_with_the_full_budget(monkeypatch):
    budgets = ransac_budgets(monkeypatch)
    reloc = RefusedAt(("0.2",), hypotheses_after_refusal=1)  # 0.2 wins; 0.3 ran under 0.1's bound
    r = reloc.localize(IMAGE, CAM, None)
    assert r.success and reloc.refined_from == ["0.2", "0.3"]
    listed = r.prior.detail["hypotheses"]
    assert listed[2]["must_beat"] == 0 and listed[2]["after_refusal"] == "localized"
    assert budgets[-1] == reloc.loc.pnp.max_iterations  # the repeated round had the full budget


class NoPoseFrom(RefusedAt):
    """RefusedAt whose hypothesis 0.3 gives scrambled correspondences only (no pose)."""

    def correspondences(self, query, w2c_opencv, round_index, clock):
        c = super().correspondences(query, w2c_opencv, round_index, clock)
        if round(-w2c_opencv[0, 3], 3) == 0.3:
            uv = np.random.default_rng(1).uniform([0, 0], [CAM.width, CAM.height], size=c.uv.shape)
            return Correspondences(uv, c.points, CAM)
        return c


def test_an_untried_hypothesis_whose_first_round_finds_no_pose_uses_its_turn():
    # 0.1 is accepted outright and refused; of the two untried, 0.2 is refused too and 0.3
    # finds no pose: both turns are used, nothing localized
    reloc = NoPoseFrom(("0.1", "0.2"), hypothesis_accept_inlier_ratio=0.25)
    r = reloc.localize(IMAGE, CAM, None)
    assert not r.success and reloc.refined_from == ["0.1", "0.2"]
    assert [h.get("after_refusal") for h in r.prior.detail["hypotheses"]] == [None, "refused", "refused"]
