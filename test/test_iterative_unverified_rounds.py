"""Rounds past ``max_iterations`` while no round is confident yet
(``max_unverified_iterations``): a frame whose rounds only reach the start ratio gets
more rounds; a confident one stops at ``max_iterations`` as before. Such a frame may
still be confirmed by the flow refinement's inliers (``flow_confirm_min_inliers``)."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.methods.base import IterationRecord, PosePrior
from neural_reloc.methods.common.config import RenderingLocalizationConfig
from neural_reloc.methods.common.iterative import Correspondences
from neural_reloc.methods.common.refinement import FlowRefinement
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
    """Rounds whose refinement appends one flow record with ``flow_inliers`` inliers."""

    def __init__(self, good, flow_inliers: int, **loc):
        super().__init__(good, **loc)
        self.loc = RenderingLocalizationConfig(**{k: getattr(self.loc, k) for k in vars(self.loc)})
        self.flow_inliers = flow_inliers

    def refine(self, image_rgb, camera, query, best, result, clock):
        result.history.append(IterationRecord(best[0].w2c_opencv, 2000, self.flow_inliers, 0.0, 0.0, stage="flow"))
        return best


@pytest.mark.parametrize("flow_inliers, confirmed", [(1500, True), (999, False)])
def test_the_flow_refinement_confirms_an_unverified_frame_with_enough_inliers(flow_inliers, confirmed):
    reloc = Confirming([60], flow_inliers, max_iterations=2, max_unverified_iterations=2)
    r = reloc.localize(IMAGE, CAM, PRIOR)
    assert reloc.loc.flow_confirm_min_inliers == 1000
    assert r.success == confirmed and [h.stage for h in r.history] == ["match", "match", "flow"]
    if not confirmed:
        assert r.reason.startswith("unsure") and "999 inliers < flow_confirm_min_inliers=1000" in r.reason
        assert r.w2c_opencv is None


def test_confirmation_off_or_without_a_flow_round_leaves_the_frame_unsure():
    r = Confirming([60], 1500, max_iterations=2, max_unverified_iterations=2)
    r.loc.flow_confirm_min_inliers = 0
    res = r.localize(IMAGE, CAM, PRIOR)
    assert not res.success and [h.stage for h in res.history] == ["match", "match"]  # no refinement ran
    assert not Rounds([60], max_iterations=2, max_unverified_iterations=2).localize(IMAGE, CAM, PRIOR).success
