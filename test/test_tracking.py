"""Unit tests of :mod:`neural_reloc.tracking`: the per-frame prior choice and fix
keeping that the ROS node and the bag evaluator share.

No map, no model, no ROS: a :class:`ScriptedRelocalizer` (a test double of the
``Relocalizer`` interface) returns scripted results and records the prior it was given
for every frame, so every test asserts exactly which prior the session chose (source
and pose, numerically) and which result became the fix.

Pose conventions (neural_reloc/geometry/frames.py): ``a_from_b`` maps b coordinates to
a; ``map_from_optical`` is the camera's optical frame (x right, y down, z forward) in
the map, i.e. an OpenCV camera-to-world; the relocalizer speaks ``w2c_opencv``, its
inverse. ``base_link`` is x forward, y left, z up (REP-103). The expected poses below
are worked out by hand in the comments, not with the formula under test.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import (
    BODY_FROM_OPTICAL,
    map_from_optical_from_map_from_base,
)
from neural_reloc.geometry.se3 import (
    invert_pose,
    make_pose,
    perturb_pose,
    rotation_from_rotvec,
)
from neural_reloc.methods.base import LocalizationResult, PosePrior, Relocalizer
from neural_reloc.tracking import NS_PER_S, Frame, RelocalizationSession, TrackingConfig

CAMERA = Camera(width=8, height=6, fx=10.0, fy=10.0, cx=4.0, cy=3.0)
IMAGE = np.zeros((6, 8, 3), dtype=np.uint8)
T0 = 1_700_000_000 * NS_PER_S  # a realistic ROS stamp (ns)


# ------------------------------------------------------------------ helpers
def yaw_pose(yaw_deg: float, xyz) -> np.ndarray:
    """A pose rotated by ``yaw_deg`` about +z, at ``xyz``."""
    return make_pose(rotation_from_rotvec([0.0, 0.0, math.radians(yaw_deg)]), xyz)


def generic_pose(rotvec, xyz) -> np.ndarray:
    return make_pose(rotation_from_rotvec(rotvec), xyz)


#: base_link -> camera optical frame: the camera looks forward (base +x), mounted 0.1 m
#: ahead of and 0.5 m above base_link.
BASE_FROM_OPTICAL = make_pose(BODY_FROM_OPTICAL[:3, :3], [0.1, 0.0, 0.5])

#: A covariance well inside every default threshold (5 cm, ~1.1 deg).
GOOD_COV = np.diag([0.05**2, 0.05**2, 0.05**2, 0.02**2, 0.02**2, 0.02**2])


def ok(map_from_optical: np.ndarray, inliers: int = 200, matches: int = 300, cov=GOOD_COV) -> LocalizationResult:
    """A successful result placing the camera at ``map_from_optical``."""
    return LocalizationResult(
        success=True,
        method="scripted",
        prior=None,
        w2c_opencv=invert_pose(map_from_optical),
        covariance=np.array(cov, dtype=np.float64),
        num_matches=matches,
        num_inliers=inliers,
    )


def failed(reason: str = "scripted failure") -> LocalizationResult:
    return LocalizationResult(success=False, method="scripted", prior=None, reason=reason)


class ScriptedRelocalizer(Relocalizer):
    """Returns the scripted results in order; records the prior of every call."""

    method = "scripted"

    def __init__(self, results=()):
        self.script = list(results)
        self.priors: list[PosePrior | None] = []

    def localize(self, image_rgb, camera, prior):
        assert image_rgb is IMAGE and camera is CAMERA
        self.priors.append(prior)
        assert self.script, "the relocalizer was called more often than scripted"
        return dataclasses.replace(self.script.pop(0), prior=prior)

    @property
    def last_prior(self) -> PosePrior | None:
        return self.priors[-1]


def frame(t_s: float, odom_from_base=None, base_from_optical=None) -> Frame:
    return Frame(IMAGE, CAMERA, T0 + round(t_s * NS_PER_S), odom_from_base, base_from_optical)


def session_with(*results, **cfg) -> tuple[RelocalizationSession, ScriptedRelocalizer]:
    reloc = ScriptedRelocalizer(results)
    return RelocalizationSession(reloc, TrackingConfig(**cfg)), reloc


def assert_prior(prior: PosePrior | None, source: str, map_from_optical: np.ndarray) -> None:
    assert prior is not None, f"expected a {source!r} prior, got None (retrieval)"
    assert prior.source == source
    np.testing.assert_allclose(prior.w2c_opencv, invert_pose(map_from_optical), atol=1e-12)


# A few fixes (camera poses in the map) with a full 3D rotation.
FIX_A = generic_pose([0.1, -0.2, 0.3], [1.0, 2.0, 0.5])
FIX_B = generic_pose([-0.3, 0.1, 1.2], [4.0, -1.0, 0.7])
FIX_C = generic_pose([0.2, 0.2, -2.0], [-2.5, 0.3, 1.1])


# ================================================================ no fix / last fix
def test_first_frame_asks_for_retrieval_then_the_fix_is_the_prior_without_odometry():
    session, reloc = session_with(ok(FIX_A), failed(), ok(FIX_B), failed())
    r = session.process(frame(0.0))
    assert reloc.priors == [None] and r.prior is None
    assert r.success and session.accepts(r)
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_A, atol=1e-12)
    assert session.last_fix_stamp_ns == T0
    assert session.map_from_odom is None  # no odometry: nothing to anchor
    assert session.last_result is r

    session.process(frame(0.1))  # fails: the fix stays
    assert_prior(reloc.last_prior, "given", FIX_A)
    session.process(frame(0.2))  # still the same fix as prior; B is accepted
    assert_prior(reloc.last_prior, "given", FIX_A)
    session.process(frame(0.3))
    assert_prior(reloc.last_prior, "given", FIX_B)
    assert session.last_fix_stamp_ns == T0 + int(0.2 * NS_PER_S)


def test_use_last_fix_false_without_odometry_falls_back_to_retrieval():
    session, reloc = session_with(ok(FIX_A), failed(), use_last_fix=False)
    session.process(frame(0.0))
    session.process(frame(0.1))
    assert reloc.priors == [None, None]


# ============================================================ fix carried by odometry
def test_fix_carried_by_odometry_to_the_next_frame_prior():
    """Fix at t0: base_link at map (2, 1, 0) heading +y (yaw 90 deg), odom says base at
    odom (0.5, 0, 0) yaw 0. So map_from_odom = yaw 90 deg at (2, 0.5, 0).
    At t1 odom says base at odom (1.5, 0, 0) yaw 90: 1 m along odom +x (= map +y) and a
    left turn. Base in map: (2, 2, 0), yaw 180 deg (facing -x).
    The camera (0.1 m ahead, 0.5 m up) is at map (1.9, 2, 0.5), looking along map -x;
    its right (optical x) is map +y and its down (optical y) map -z."""
    map_from_base0 = yaw_pose(90, [2.0, 1.0, 0.0])
    odom_from_base0 = yaw_pose(0, [0.5, 0.0, 0.0])
    fix = map_from_base0 @ BASE_FROM_OPTICAL
    session, reloc = session_with(ok(fix), failed(), failed())

    assert session.accepts(session.process(frame(0.0, odom_from_base0, BASE_FROM_OPTICAL)))
    np.testing.assert_allclose(session.map_from_odom, yaw_pose(90, [2.0, 0.5, 0.0]), atol=1e-12)

    session.process(frame(0.5, yaw_pose(90, [1.5, 0.0, 0.0]), BASE_FROM_OPTICAL))
    prior = reloc.last_prior
    assert prior is not None and prior.source == "odometry"
    expected_map_from_optical = np.array(
        [[0.0, 0.0, -1.0, 1.9], [1.0, 0.0, 0.0, 2.0], [0.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]]
    )
    # its inverse, by hand: R^T and -R^T c = -(c_y, -c_z, -c_x)
    expected_w2c = np.array(
        [[0.0, 1.0, 0.0, -2.0], [0.0, 0.0, -1.0, 0.5], [-1.0, 0.0, 0.0, 1.9], [0.0, 0.0, 0.0, 1.0]]
    )
    np.testing.assert_allclose(invert_pose(prior.w2c_opencv), expected_map_from_optical, atol=1e-12)
    np.testing.assert_allclose(prior.w2c_opencv, expected_w2c, atol=1e-12)
    # a point 2 m in front of the camera (map (-0.1, 2, 0.5)) is on its optical axis
    np.testing.assert_allclose(prior.w2c_opencv @ [-0.1, 2.0, 0.5, 1.0], [0.0, 0.0, 2.0, 1.0], atol=1e-12)

    # the failed frame did not move map_from_odom: the next one is carried the same way
    session.process(frame(1.0, yaw_pose(180, [1.5, 1.0, 0.0]), BASE_FROM_OPTICAL))
    # base in map: map_from_odom @ odom_from_base = yaw 270 at (2 - 1, 0.5 + 1.5, 0) = (1, 2, 0)
    # camera 0.1 m ahead (map -y) and 0.5 m up
    assert reloc.last_prior.source == "odometry"
    np.testing.assert_allclose(
        invert_pose(reloc.last_prior.w2c_opencv)[:3, 3], [1.0, 1.9, 0.5], atol=1e-12
    )
    np.testing.assert_allclose(
        invert_pose(reloc.last_prior.w2c_opencv)[:3, 2], [0.0, -1.0, 0.0], atol=1e-12
    )


def test_odometry_prior_without_extrinsic_treats_base_as_the_camera():
    """base_from_optical None: identity (base_link is the optical frame). Fix FIX_A with
    odom_from_base = yaw 30 at (1, 0, 0); the base then moves 2 m along odom +z. A yaw
    leaves +z alone, so in the base (= camera) frame that is 2 m along its own z: the
    prior is FIX_A moved by 2 * (FIX_A's third column)."""
    odom0 = yaw_pose(30, [1.0, 0.0, 0.0])
    session, reloc = session_with(ok(FIX_A), failed())
    session.process(frame(0.0, odom0))
    odom1 = odom0.copy()
    odom1[2, 3] += 2.0
    session.process(frame(0.1, odom1))
    expected = FIX_A.copy()
    expected[:3, 3] += 2.0 * FIX_A[:3, 2]
    assert_prior(reloc.last_prior, "odometry", expected)


def test_frame_without_odometry_after_an_odometry_fix_uses_the_fix_itself():
    odom0 = yaw_pose(10, [0.3, 0.2, 0.0])
    session, reloc = session_with(ok(FIX_A), failed(), failed())
    session.process(frame(0.0, odom0, BASE_FROM_OPTICAL))
    session.process(frame(0.1, None, BASE_FROM_OPTICAL))
    assert_prior(reloc.last_prior, "given", FIX_A)
    # odometry back: carried again (no motion since the fix: the fix itself)
    session.process(frame(0.2, odom0, BASE_FROM_OPTICAL))
    assert_prior(reloc.last_prior, "odometry", FIX_A)


def test_use_odometry_false_ignores_odometry():
    odom0 = yaw_pose(0, [0.0, 0.0, 0.0])
    session, reloc = session_with(ok(FIX_A), failed(), use_odometry=False)
    session.process(frame(0.0, odom0, BASE_FROM_OPTICAL))
    session.process(frame(0.1, yaw_pose(45, [3.0, 0.0, 0.0]), BASE_FROM_OPTICAL))
    assert_prior(reloc.last_prior, "given", FIX_A)


@pytest.mark.parametrize(
    "max_fix_age_s, t_old, t_new, t_next",
    [(60.0, 0.0, 100.0, 110.0), (TrackingConfig().max_fix_age_s, 0.0, 1.0, 2.0)],
    ids=["old-fix-past-max-age", "default-config"],
)
def test_newest_fix_without_odometry_is_the_prior_not_an_older_odometry_anchor(max_fix_age_s, t_old, t_new, t_next):
    """Fix A on a frame with odometry, then fix B on a frame without (e.g. a TF lookup
    timed out), then a frame with odometry again. B is the newest fix and the only one
    younger than max_fix_age_s in the first case; nothing ties B to odom, so the prior
    must be B itself ("given"), not A carried by odometry."""
    odom = yaw_pose(0, [0.0, 0.0, 0.0])  # the base does not move in odom
    session, reloc = session_with(ok(FIX_A), ok(FIX_B), failed(), max_fix_age_s=max_fix_age_s)
    session.process(frame(t_old, odom))
    session.process(frame(t_new, None))
    assert session.accepts(session.last_result)
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_B, atol=1e-12)
    session.process(frame(t_next, odom))
    # today: source "odometry", pose FIX_A (map_from_odom from t_old)
    assert_prior(reloc.last_prior, "given", FIX_B)


# ====================================================================== fix age
@pytest.mark.parametrize("with_odometry", [False, True], ids=["no-odometry", "odometry"])
def test_fix_older_than_max_fix_age_is_not_a_prior(with_odometry):
    """The age limit is inclusive: a fix exactly max_fix_age_s old is still used, one
    nanosecond more and the frame goes to retrieval (prior None), odometry or not."""
    odom = yaw_pose(0, [0.0, 0.0, 0.0]) if with_odometry else None
    session, reloc = session_with(ok(FIX_A), failed(), failed(), failed(), max_fix_age_s=10.0)
    session.process(frame(0.0, odom))
    session.process(Frame(IMAGE, CAMERA, T0 + 10 * NS_PER_S, odom))
    assert_prior(reloc.last_prior, "odometry" if with_odometry else "given", FIX_A)
    session.process(Frame(IMAGE, CAMERA, T0 + 10 * NS_PER_S + 1, odom))
    assert reloc.last_prior is None
    assert session.failures_in_a_row == 2  # not "lost" (3): the age alone decided
    # the stale fix is still remembered (and map_from_odom too): only its use as a prior stops
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_A, atol=1e-12)
    assert (session.map_from_odom is not None) == with_odometry
    session.process(Frame(IMAGE, CAMERA, T0 + 11 * NS_PER_S, odom))
    assert reloc.last_prior is None


def test_a_new_fix_restarts_the_age():
    session, reloc = session_with(ok(FIX_A), ok(FIX_B), failed(), failed(), max_fix_age_s=10.0)
    session.process(frame(0.0))
    session.process(frame(8.0))  # A (8 s old) is the prior; B accepted
    assert_prior(reloc.last_prior, "given", FIX_A)
    session.process(frame(15.0))  # A would be 15 s old, B is 7 s old
    assert_prior(reloc.last_prior, "given", FIX_B)
    session.process(frame(18.0 + 1e-9))  # B is 10 s + 1 ns old
    assert reloc.last_prior is None


def test_max_fix_age_zero_means_no_limit():
    session, reloc = session_with(ok(FIX_A), failed(), max_fix_age_s=0.0)
    session.process(frame(0.0))
    session.process(frame(86400.0 * 30))  # a month later
    assert_prior(reloc.last_prior, "given", FIX_A)


# ========================================================= acceptance thresholds
STRICT = {
    "accept_min_inliers": 50,
    "accept_min_inlier_ratio": 0.25,
    "accept_max_position_std_m": 0.1,
    "accept_max_yaw_std_deg": 5.0,
}


def _cov(pos_var=(0.01**2,) * 3, rot_var=(0.001**2,) * 3) -> np.ndarray:
    return np.diag([*pos_var, *rot_var]).astype(np.float64)


def _corr_xy_cov() -> np.ndarray:
    # x and y variances 0.008 (std 0.089 < 0.1 each), correlated 0.004: the largest
    # axis has variance 0.012 (std 0.1095 > 0.1)
    c = _cov()
    c[:2, :2] = [[0.008, 0.004], [0.004, 0.008]]
    return c


#: (name, just-failing result kwargs, just-passing result kwargs, expected rejection text)
THRESHOLD_CASES = [
    ("min_inliers", {"inliers": 49, "matches": 100}, {"inliers": 50, "matches": 100},
     "not confident: 49 inliers < accept_min_inliers 50"),
    ("min_inlier_ratio", {"inliers": 60, "matches": 241}, {"inliers": 60, "matches": 240},
     "not confident: inlier ratio 0.25 < accept_min_inlier_ratio 0.25"),  # 0.2490 printed .2f
    ("max_position_std", {"cov": _cov(pos_var=(0.01**2, 0.01**2, 0.1001**2))},
     {"cov": _cov(pos_var=(0.0999**2, 0.0999**2, 0.0999**2))},
     "not confident: position std 0.100 m > accept_max_position_std_m 0.1"),
    ("max_position_std_largest_axis", {"cov": _corr_xy_cov()},
     {"cov": _cov(pos_var=(0.0999**2, 0.05**2, 0.05**2))},
     "not confident: position std 0.110 m > accept_max_position_std_m 0.1"),
    ("max_yaw_std", {"cov": _cov(rot_var=(0.001**2, 0.001**2, math.radians(5.01) ** 2))},
     # roll and pitch are not gated: a huge roll/pitch variance with yaw just inside passes
     {"cov": _cov(rot_var=(1.0, 1.0, math.radians(4.99) ** 2))},
     "not confident: yaw std 5.01 deg > accept_max_yaw_std_deg 5.0"),
]


@pytest.mark.parametrize(
    "failing, passing, reason", [c[1:] for c in THRESHOLD_CASES], ids=[c[0] for c in THRESHOLD_CASES]
)
def test_acceptance_threshold_decides_whether_a_result_becomes_the_fix(failing, passing, reason):
    session, reloc = session_with(ok(FIX_A), ok(FIX_B, **failing), ok(FIX_C, **passing), failed(), **STRICT)
    odom = yaw_pose(0, [0.0, 0.0, 0.0])
    session.process(frame(0.0, odom))
    fix_odom = session.map_from_odom.copy()

    # just on the wrong side: a success that does not become the fix
    r = session.process(frame(0.1, odom))
    assert r.success and not session.accepts(r)
    assert session.rejection_reason(r) == reason
    assert session.failures_in_a_row == 1
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_A, atol=1e-12)
    np.testing.assert_allclose(session.map_from_odom, fix_odom, atol=1e-12)
    assert session.last_fix_stamp_ns == T0

    # just on the right side: becomes the fix and the next frame's prior
    r = session.process(frame(0.2, odom))
    assert_prior(r.prior, "odometry", FIX_A)
    assert session.accepts(r) and session.rejection_reason(r) == ""
    assert session.failures_in_a_row == 0
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_C, atol=1e-12)
    session.process(frame(0.3, odom))
    assert_prior(reloc.last_prior, "odometry", FIX_C)


def test_default_thresholds_are_inclusive_at_the_exact_limit():
    cfg = TrackingConfig()
    session = RelocalizationSession(ScriptedRelocalizer(), cfg)
    assert (cfg.accept_min_inliers, cfg.accept_min_inlier_ratio) == (30, 0.2)
    assert (cfg.accept_max_position_std_m, cfg.accept_max_yaw_std_deg) == (0.25, 10.0)
    exact = _cov(pos_var=(0.0625, 0.0, 0.0), rot_var=(0.0, 0.0, math.radians(10.0) ** 2))
    assert session.accepts(ok(FIX_A, inliers=30, matches=150, cov=exact))  # ratio exactly 0.2
    assert not session.accepts(ok(FIX_A, inliers=29, matches=145, cov=exact))
    assert not session.accepts(ok(FIX_A, inliers=30, matches=151, cov=exact))


@pytest.mark.parametrize(
    "result, reason",
    [
        (failed("PnP found 3 inliers"), "PnP found 3 inliers"),
        (failed(""), "no pose estimated"),
        (dataclasses.replace(ok(FIX_A), success=False, reason="diverged"), "diverged"),
        (dataclasses.replace(ok(FIX_A), w2c_opencv=None), "no pose estimated"),
        (ok(FIX_A, matches=0, inliers=0), "not confident: 0 inliers < accept_min_inliers 30"),
        (ok(FIX_A, cov=np.full((6, 6), np.nan)),
         "not confident: position std inf m > accept_max_position_std_m 0.25"),
        (ok(FIX_A, cov=np.eye(3) * 1e-4),
         "not confident: position std inf m > accept_max_position_std_m 0.25"),
        (dataclasses.replace(ok(FIX_A), covariance=None),
         "not confident: position std inf m > accept_max_position_std_m 0.25"),
    ],
    ids=["failed", "failed-no-reason", "unsuccessful-with-pose", "no-pose", "no-matches", "nan-cov", "bad-shape-cov",
         "no-cov"],
)
def test_unusable_results_are_rejected_with_their_reason(result, reason):
    session, reloc = session_with(ok(FIX_B), result, failed())
    session.process(frame(0.0))
    session.process(frame(0.1))
    assert session.rejection_reason(session.last_result) == reason
    assert not session.accepts(session.last_result)
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_B, atol=1e-12)
    assert session.failures_in_a_row == 1
    session.process(frame(0.2))
    assert_prior(reloc.last_prior, "given", FIX_B)


# ====================================================================== lost
def test_lost_after_failures_in_a_row_then_retrieval_until_a_new_fix():
    session, reloc = session_with(
        ok(FIX_A),
        failed(),
        ok(FIX_B, inliers=29),  # a success below the threshold counts as a failure too
        ok(FIX_B, cov=np.full((6, 6), np.nan)),
        failed(),  # lost: retrieval
        ok(FIX_C),  # retrieval succeeds
        failed(),
        lost_after_failures=3,
    )
    session.process(frame(0.0))
    for k in (1, 2, 3):
        session.process(frame(0.1 * k))
        assert_prior(reloc.last_prior, "given", FIX_A)
        assert session.failures_in_a_row == k
    session.process(frame(0.4))
    assert reloc.last_prior is None and session.failures_in_a_row == 4
    session.process(frame(0.5))
    assert reloc.last_prior is None and session.failures_in_a_row == 0
    session.process(frame(0.6))
    assert_prior(reloc.last_prior, "given", FIX_C)
    assert len(reloc.priors) == 7 and not reloc.script


def test_lost_also_stops_the_odometry_prior():
    odom = yaw_pose(0, [0.0, 0.0, 0.0])
    session, reloc = session_with(ok(FIX_A), failed(), failed(), lost_after_failures=1)
    session.process(frame(0.0, odom))
    session.process(frame(0.1, odom))
    assert_prior(reloc.last_prior, "odometry", FIX_A)
    session.process(frame(0.2, odom))
    assert reloc.last_prior is None


def test_without_retrieval_a_lost_session_keeps_the_last_fix():
    session, reloc = session_with(
        ok(FIX_A), failed(), failed(), failed(), failed(), lost_after_failures=2, use_retrieval_when_lost=False
    )
    session.set_initial_pose(FIX_A)  # without retrieval, the first fix needs a prior
    for k in range(5):
        session.process(frame(0.1 * k))
    assert len(reloc.priors) == 5  # every frame had a prior: the relocalizer ran each time
    assert_prior(reloc.priors[0], "initialpose", FIX_A)
    for p in reloc.priors[1:]:
        assert_prior(p, "given", FIX_A)
    assert session.failures_in_a_row == 4


def test_without_retrieval_a_frame_with_no_prior_fails_without_calling_the_relocalizer():
    session, reloc = session_with(ok(FIX_A), use_retrieval_when_lost=False)
    r = session.process(frame(0.0))
    assert reloc.priors == []
    assert (r.success, r.method, r.prior, r.reason) == (False, "scripted", None, "no prior (retrieval disabled)")
    assert session.rejection_reason(r) == "no prior (retrieval disabled)"
    assert session.failures_in_a_row == 1 and session.last_result is r
    # an initial pose gets it going
    session.set_initial_pose(FIX_B)
    session.process(frame(0.1))
    assert_prior(reloc.last_prior, "initialpose", FIX_B)
    np.testing.assert_allclose(session.last_fix_map_from_optical, FIX_A, atol=1e-12)


# ================================================================ initial pose
def test_initial_pose_wins_once_over_fix_odometry_and_lost_state():
    odom = yaw_pose(20, [1.0, -1.0, 0.0])
    session, reloc = session_with(
        ok(FIX_A), failed(), failed(), failed(), failed(), lost_after_failures=2
    )
    session.process(frame(0.0, odom))
    session.process(frame(0.1, odom))
    session.process(frame(0.2, odom))
    assert session.failures_in_a_row == 2  # lost
    session.set_initial_pose(FIX_B)
    session.process(frame(0.3, odom))
    # the session applies no odometry to an initial pose: it is the prior as given
    assert_prior(reloc.last_prior, "initialpose", FIX_B)
    session.process(frame(0.4, odom))  # used once: back to the rules (lost: retrieval)
    assert reloc.last_prior is None


def test_initial_pose_source_name_and_validation():
    session, reloc = session_with(failed())
    session.set_initial_pose(FIX_C, source="given")
    session.process(frame(0.0))
    assert_prior(reloc.last_prior, "given", FIX_C)
    bad = FIX_C.copy()
    bad[:3, :3] *= 2.0
    with pytest.raises(ValueError, match="initial pose"):
        session.set_initial_pose(bad)


def test_initial_pose_carried_by_odometry_to_the_frame_stamp():
    """What the node does with /initialpose (relocalization_node.py, _localize): the
    pose (base_link in map) is stamped; odom_from_base at that stamp and at the frame's
    stamp give the motion in between, applied on the right:
    map_from_base(frame) = map_from_base(initial) @ inv(odom_i) @ odom_f; then
    map_from_optical_from_map_from_base(., base_from_optical) goes to set_initial_pose.

    By hand: the initial pose is base at map (3, -1, 0) facing +x (yaw 0). In odom the
    base was at (1, 1, 0) facing odom +y (yaw 90) and at the frame it is at (1, 2, 0)
    yaw 180: 1 m forward, then a left turn. So in map the base is at (4, -1, 0) facing
    +y (yaw 90); the camera (0.1 m ahead, 0.5 m up) at (4, -0.9, 0.5) looking along +y,
    its right (optical x) map +x, its down map -z."""
    map_from_base_initial = yaw_pose(0, [3.0, -1.0, 0.0])
    odom_i = yaw_pose(90, [1.0, 1.0, 0.0])
    odom_f = yaw_pose(180, [1.0, 2.0, 0.0])
    map_from_base_now = map_from_base_initial @ invert_pose(odom_i) @ odom_f
    np.testing.assert_allclose(map_from_base_now, yaw_pose(90, [4.0, -1.0, 0.0]), atol=1e-12)

    session, reloc = session_with(ok(FIX_A), failed())
    session.set_initial_pose(map_from_optical_from_map_from_base(map_from_base_now, BASE_FROM_OPTICAL))
    r = session.process(frame(0.0, odom_f, BASE_FROM_OPTICAL))
    expected = np.array(
        [[1.0, 0.0, 0.0, 4.0], [0.0, 0.0, 1.0, -0.9], [0.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]]
    )
    assert_prior(reloc.last_prior, "initialpose", expected)
    assert r.prior is reloc.last_prior
    # a point 3 m ahead of the camera, map (4, 2.1, 0.5), is on its optical axis
    np.testing.assert_allclose(r.prior.w2c_opencv @ [4.0, 2.1, 0.5, 1.0], [0.0, 0.0, 3.0, 1.0], atol=1e-12)
    # uncarried, the prior would have been 1 m and 90 deg away
    assert not np.allclose(
        invert_pose(r.prior.w2c_opencv), map_from_base_initial @ BASE_FROM_OPTICAL, atol=0.5
    )

    # the result from that prior is accepted: it anchors odometry for the next frame
    assert session.accepts(r) and session.map_from_odom is not None
    session.process(frame(0.1, odom_f, BASE_FROM_OPTICAL))
    assert_prior(reloc.last_prior, "odometry", FIX_A)


def test_reset_forgets_fix_failures_and_pending_initial_pose():
    session, reloc = session_with(ok(FIX_A), failed(), failed(), lost_after_failures=5)
    session.process(frame(0.0, yaw_pose(0, [0.0, 0.0, 0.0])))
    session.process(frame(0.1))
    session.set_initial_pose(FIX_B)
    session.reset()
    assert session.map_from_odom is None and session.last_fix_map_from_optical is None
    assert session.last_fix_stamp_ns is None and session.failures_in_a_row == 0
    session.process(frame(0.2, yaw_pose(0, [0.0, 0.0, 0.0])))
    assert reloc.last_prior is None


# ================================================================ prior delta
def test_prior_delta_is_the_distance_between_prior_and_estimate():
    rng = np.random.default_rng(3)
    estimate = perturb_pose(FIX_A, 0.3, 5.0, rng)
    session, _ = session_with(ok(FIX_A), ok(estimate))
    r0 = session.process(frame(0.0))
    assert all(math.isnan(v) for v in session.prior_delta(r0))  # no prior
    r1 = session.process(frame(0.1))
    dt, dr = session.prior_delta(r1)
    assert dt == pytest.approx(0.3, abs=1e-9) and dr == pytest.approx(5.0, abs=1e-6)
    assert all(math.isnan(v) for v in session.prior_delta(failed()))
