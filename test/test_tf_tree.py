"""The TF tree (ROS-free) that the bag reader and the node's /tf listener share:
composition through the common ancestor, interpolation, tf2's latest common time and
cache, errors that name the frames, and the coverage a bag reader asks for (gaps not
bridged, a tolerance outside the samples)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_reloc.geometry.se3 import (
    interpolate_pose,
    invert_pose,
    make_pose,
    pose_error,
    rotation_from_quat_xyzw,
    rotation_from_rotvec,
    yaw_from_rotation,
)
from neural_reloc.geometry.tf_tree import (
    Coverage,
    ExtrapolationError,
    TransformLookupError,
    TransformTree,
)

S = 1_000_000_000
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def random_pose(rng: np.random.Generator, scale: float = 3.0) -> np.ndarray:
    return make_pose(rotation_from_quat_xyzw(rng.normal(size=4)), rng.uniform(-scale, scale, size=3))


# ============================================================== tf2 semantics (the node's listener)
def _buffer_with_odometry(rng):
    """map -> odom (static) -> base_link (moving, 10 Hz for 2 s) -> camera (static)."""
    buf = TransformTree(cache_s=10.0)
    map_from_odom = random_pose(rng)
    base_from_cam = random_pose(rng, 0.5)
    buf.set_transform("map", "odom", 0, map_from_odom, static=True)
    buf.set_transform("base_link", "camera", 0, base_from_cam, static=True)
    odom = {}
    for k in range(21):
        t = k * S // 10
        odom[t] = make_pose(rotation_from_rotvec([0, 0, 0.3 * k / 10]), [0.5 * k / 10, 0.1 * (k / 10) ** 2, 0])
        buf.set_transform("odom", "base_link", t, odom[t])
    return buf, map_from_odom, base_from_cam, odom


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_tf_chain_lookup_composes_through_the_common_ancestor(seed):
    rng = np.random.default_rng(seed)
    buf, map_from_odom, base_from_cam, odom = _buffer_with_odometry(rng)
    t = 7 * S // 10  # a sample stamp: no interpolation
    expected = map_from_odom @ odom[t] @ base_from_cam
    assert np.allclose(buf.lookup("map", "camera", t), expected, atol=1e-12)
    assert np.allclose(buf.lookup("camera", "map", t), invert_pose(expected), atol=1e-12)
    # between two siblings' descendants: camera in odom
    assert np.allclose(buf.lookup("odom", "camera", t), odom[t] @ base_from_cam, atol=1e-12)
    assert np.allclose(buf.lookup("camera", "camera", t), np.eye(4))
    # static-only chains do not depend on the stamp
    assert np.allclose(buf.lookup("base_link", "camera", 123), base_from_cam)


@settings(max_examples=30, deadline=None)
@given(seeds, st.floats(min_value=0.0, max_value=1.0))
def test_tf_interpolates_between_stamps(seed, alpha):
    rng = np.random.default_rng(seed)
    a, b = random_pose(rng), random_pose(rng)
    buf = TransformTree()
    buf.set_transform("odom", "base_link", 10 * S, a)
    buf.set_transform("odom", "base_link", 12 * S, b)
    t = 10 * S + round(alpha * 2 * S)
    got = buf.lookup("odom", "base_link", t)
    expected = interpolate_pose(a, b, (t - 10 * S) / (2 * S))
    dt, dr = pose_error(got, expected)
    assert dt < 1e-9 and dr < 1e-6
    # the midpoint is halfway in translation and in rotation angle
    mid = buf.lookup("odom", "base_link", 11 * S)
    assert np.allclose(mid[:3, 3], (a[:3, 3] + b[:3, 3]) / 2)
    _, r_a = pose_error(mid, a)
    _, r_b = pose_error(mid, b)
    assert abs(r_a - r_b) < 1e-6


def test_tf_interpolation_of_a_rotating_robot():
    buf = TransformTree()
    buf.set_transform("odom", "base_link", 0, make_pose(np.eye(3), [0, 0, 0]))
    buf.set_transform("odom", "base_link", S, make_pose(rotation_from_rotvec([0, 0, math.radians(90)]), [1, 0, 0]))
    T = buf.lookup("odom", "base_link", S // 4)
    assert math.isclose(math.degrees(yaw_from_rotation(T[:3, :3])), 22.5, abs_tol=1e-9)
    assert np.allclose(T[:3, 3], [0.25, 0, 0])


def test_tf_errors_name_the_frames():
    buf, *_ = _buffer_with_odometry(np.random.default_rng(1))
    with pytest.raises(TransformLookupError, match=r"source frame 'cam_typo' does not exist \(known frames: base_link, camera, map, odom\)"):
        buf.lookup("map", "cam_typo", 0)
    buf.set_transform("world", "other_robot", 0, np.eye(4), static=True)
    with pytest.raises(TransformLookupError, match="'map' <- 'other_robot': the frames are not connected"):
        buf.lookup("map", "other_robot", 0)
    with pytest.raises(ExtrapolationError, match=r"'odom' -> 'base_link' at 2.500 s would need extrapolation: 0.500 s after the newest"):
        buf.lookup("map", "camera", 5 * S // 2)
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buf.lookup("map", "camera", -1)
    assert isinstance(ExtrapolationError("x"), LookupError)
    with pytest.raises(ValueError, match="close a loop"):
        buf.set_transform("camera", "map", 0, np.eye(4))
    with pytest.raises(ValueError, match="own parent"):
        buf.set_transform("odom", "odom", 0, np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        buf.set_transform("odom", "base_link", 3 * S, np.full((4, 4), np.nan))


def test_tf_latest_common_time_and_cache_and_reparenting():
    buf = TransformTree(cache_s=1.0)
    for k in range(30):  # base_link at 10 Hz for 3 s, but only the last second is kept
        buf.set_transform("odom", "base_link", k * S // 10, make_pose(np.eye(3), [k, 0, 0]))
    buf.set_transform("map", "odom", 2 * S, make_pose(np.eye(3), [0, 100, 0]))
    buf.set_transform("map", "odom", 25 * S // 10, make_pose(np.eye(3), [0, 200, 0]))
    # stamp 0: the latest time both dynamic edges have (2.5 s, interpolated on base_link)
    assert np.allclose(buf.lookup("map", "base_link", 0)[:3, 3], [25, 200, 0])
    with pytest.raises(ExtrapolationError):
        buf.lookup("odom", "base_link", 15 * S // 10)  # older than the 1 s cache
    assert np.allclose(buf.lookup("odom", "base_link", 2 * S)[:3, 3], [20, 0, 0])
    # a frame that changes parent starts afresh (tf2 semantics)
    buf.set_transform("map", "base_link", 3 * S, make_pose(np.eye(3), [7, 7, 7]))
    assert np.allclose(buf.lookup("map", "base_link", 3 * S)[:3, 3], [7, 7, 7])
    with pytest.raises(ExtrapolationError):
        buf.lookup("map", "base_link", 2 * S)


def test_tf_wait_for_returns_when_the_data_arrives():
    buf = TransformTree()
    buf.set_transform("odom", "base_link", 0, np.eye(4))

    def later():
        time.sleep(0.1)
        buf.set_transform("odom", "base_link", 2 * S, make_pose(np.eye(3), [2, 0, 0]))

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    T = buf.wait_for("odom", "base_link", S, timeout_s=5.0)
    assert time.monotonic() - t0 < 2.0
    assert np.allclose(T[:3, 3], [1, 0, 0])
    t0 = time.monotonic()
    with pytest.raises(ExtrapolationError):
        buf.wait_for("odom", "base_link", 3 * S, timeout_s=0.2)
    assert 0.15 < time.monotonic() - t0 < 2.0


# ============================================================== a bag read whole
def test_chains_compose_in_either_direction_and_none_means_static_only():
    buf = TransformTree(cache_s=None)
    map_from_odom = make_pose(rotation_from_rotvec([0, 0, 0.3]), [1.0, 2.0, 0.0])
    base_from_cam = make_pose(rotation_from_rotvec([-1.2, 0, 0]), [0.1, 0.0, 0.3])
    buf.set_transform("map", "odom", 0, map_from_odom, static=True)
    buf.set_transform("/base_link", "camera", 0, base_from_cam, static=True)  # leading slash dropped
    o0 = make_pose(np.eye(3), [0.0, 0.0, 0.0])
    o1 = make_pose(rotation_from_rotvec([0, 0, 0.4]), [2.0, 0.0, 0.0])
    buf.set_transform("odom", "base_link", 100, o0)
    buf.set_transform("odom", "base_link", 300, o1)
    expect = map_from_odom @ interpolate_pose(o0, o1, 0.25) @ base_from_cam
    np.testing.assert_allclose(buf.lookup("map", "camera", 150), expect, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("camera", "map", 150), invert_pose(expect), atol=1e-12)
    with pytest.raises(ExtrapolationError, match="'odom' -> 'base_link' at 0.000 s would need extrapolation"):
        buf.lookup("map", "camera", 400)  # no odometry then
    assert buf.lookup_or_none("map", "camera", 400) is None
    with pytest.raises(TransformLookupError, match="'odom' -> 'base_link' on the way is not static"):
        buf.lookup("map", "camera", None)
    np.testing.assert_allclose(buf.lookup("base_link", "camera", None), base_from_cam)
    buf.set_transform("other", "thing", 0, np.eye(4), static=True)
    assert buf.lookup_or_none("map", "thing", 150) is None and buf.path("map", "thing") is None
    assert buf.path("/camera", "map") == ["camera", "base_link", "odom", "map"]
    assert buf.path("odom", "thing") is None and buf.path("odom", "odom") == ["odom"]
    assert buf.describe() == (
        "base_link -> camera (static), map -> odom (static), odom -> base_link (dynamic), other -> thing (static)"
    )


def test_coverage_refuses_long_gaps_and_accepts_a_tolerance():
    a, b = make_pose(np.eye(3), [0, 0, 0]), make_pose(np.eye(3), [2, 0, 0])
    buf = TransformTree(cache_s=None, coverage=Coverage.from_seconds(1.0, 0.01))
    buf.set_transform("odom", "base_link", 10 * S, a)
    buf.set_transform("odom", "base_link", 12 * S, b)  # a 2 s gap: longer than 1 s
    with pytest.raises(ExtrapolationError, match=r"falls in a 2.000 s gap .* \(at most 1.000 s is bridged\)"):
        buf.lookup("odom", "base_link", 11 * S)
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 10 * S + S // 200), a)  # within 10 ms of a sample
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 12 * S + S // 200), b)  # just after the last
    with pytest.raises(ExtrapolationError, match="after the newest"):
        buf.lookup("odom", "base_link", 12 * S + S // 50)
    # a lookup's own coverage: bridge any gap
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 11 * S, Coverage())[:3, 3], [1, 0, 0])
    # the tree keeps every sample when cache_s is None
    buf.set_transform("odom", "base_link", 1000 * S, b)
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 10 * S), a)
    with pytest.raises(ValueError, match="cache_s"):
        TransformTree(cache_s=0)
