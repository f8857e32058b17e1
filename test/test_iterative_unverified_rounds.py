"""Rounds past ``max_iterations`` while no round is confident yet
(``max_unverified_iterations``): a frame whose rounds only reach the start ratio gets
more rounds; a confident one stops at ``max_iterations`` as before."""

from __future__ import annotations

import numpy as np
import pytest

from neural_reloc.methods.common.iterative import Correspondences
from test_iterative_prior_gate import CAM, IMAGE, TRUE, Exact, camera_at
from neural_reloc.methods.base import PosePrior


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
