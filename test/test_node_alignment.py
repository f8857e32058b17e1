"""The node on an aligned map (issue 17): every pose it publishes or receives is in `map`.

The oracle map gets a ``map_from_world`` similarity with a scale (``neural-reloc align``'s
bundle entry); the stand-in relocalizer answers in the map's world. The node must publish
``map_from_world`` applied to that answer (pose, covariance), keep ``map -> odom``
consistent with metric odometry, and carry priors given in ``map`` to world before the
relocalizer sees them.
"""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest
from node_helpers import CAMERA_FRAME, Oracle, initialpose, matrix
from test_node_nav2 import (
    BASE_FROM_OPTICAL,
    MAP_FROM_BASE,
    MAP_FROM_ODOM_TRUE,
    Ros,
    _frame,
    _localized,
    close,
    wall_ns,
)

from neural_reloc.geometry.alignment import Similarity
from neural_reloc.geometry.se3 import make_pose, rotation_from_rotvec
from neural_reloc.map_bundle import write_alignment

pytestmark = pytest.mark.requires_ros

#: A NeRF world in its own units (2.5 world units per metre... i.e. scale 0.4), y up,
#: somewhere else: map_from_world.
MAP_FROM_WORLD = Similarity(0.4, rotation_from_rotvec([math.pi / 2, 0.0, 0.3]), np.array([1.0, -2.0, 0.5]))
WORLD_FROM_MAP = MAP_FROM_WORLD.inverse()


@pytest.fixture
def aligned(oracle_map, tmp_path, ros_env):
    m = tmp_path / "aligned_map"
    shutil.copytree(oracle_map, m)
    write_alignment(m, {"map_from_world": MAP_FROM_WORLD.to_dict(), "estimated_from": "test"})
    oracle = Oracle(m, tmp_path / "oracle")
    # the relocalizer answers in world: the camera where it is in map, carried to world
    oracle.set_pose(100, WORLD_FROM_MAP.apply_c2w_opencv(MAP_FROM_BASE @ BASE_FROM_OPTICAL))
    r = Ros(oracle, ros_env)
    yield r, oracle
    r.close()


def test_published_poses_tf_and_priors_are_in_the_map_frame(aligned):
    ros, oracle = aligned
    proc, d = ros.start("pose_of:=camera")
    t0 = time.monotonic()
    stamp = _frame(d, 100)
    status = _localized(d, proc, stamp, t0)
    world_pose = np.linalg.inv(np.linalg.inv(oracle.poses[100]))  # the oracle's answer, world
    expected = MAP_FROM_WORLD.apply_c2w_opencv(world_pose)
    assert close(expected, MAP_FROM_BASE @ BASE_FROM_OPTICAL)
    # ~/pose, ~/pose_with_covariance and the status carry map_from_world applied to it
    pose = d.spin_until(lambda: [m for m in d.since("pose", t0) if m.header.stamp == status.header.stamp],
                        5.0, "~/pose", proc)[-1]
    pose_cov = d.spin_until(lambda: [m for m in d.since("pose_cov", t0) if m.header.stamp == status.header.stamp],
                            5.0, "~/pose_with_covariance", proc)[-1]
    assert pose.header.frame_id == "map" and close(matrix(pose.pose), expected)
    assert close(matrix(pose_cov.pose.pose), expected) and close(matrix(status.pose.pose), expected)
    world_cov = np.diag([0.01**2] * 3 + [1e-4] * 3)  # what the oracle reports, in world units
    cov = np.array(pose_cov.pose.covariance).reshape(6, 6)
    assert np.allclose(cov, MAP_FROM_WORLD.apply_covariance(world_cov), atol=1e-12)
    assert math.isclose(cov[0, 0] + cov[1, 1] + cov[2, 2], 3 * (0.4 * 0.01) ** 2, rel_tol=1e-9)
    # map -> odom agrees with metric odometry (the fix is in map, not in world units)
    got = d.spin_until(lambda: d.transforms("map", "odom", t0), 5.0, "map -> odom on /tf", proc)
    from neural_reloc.ros.conversions import matrix_from_transform_msg

    assert close(matrix_from_transform_msg(got[-1][1].transform), MAP_FROM_ODOM_TRUE)

    # the next frame's prior (odometry since the fix) reaches the relocalizer in world
    _localized(d, proc, _frame(d, 100), time.monotonic())
    call = oracle.calls()[-1]
    assert call["prior_source"] == "odometry" and close(np.array(call["prior"]), world_pose), call

    # /initialpose arrives in map: the relocalizer gets it in world
    given = MAP_FROM_BASE @ make_pose(np.eye(3), [0.2, -0.1, 0.0])
    initialpose(d, given, "map", wall_ns())
    d.spin(1.0)
    _localized(d, proc, _frame(d, 100), time.monotonic())
    call = oracle.calls()[-1]
    assert call["prior_source"] == "initialpose", call
    assert close(np.array(call["prior"]), WORLD_FROM_MAP.apply_c2w_opencv(given @ BASE_FROM_OPTICAL)), call
    assert CAMERA_FRAME  # the optical frame the poses are of


def test_apply_map_alignment_false_publishes_in_world_as_eval_bag_live_does(aligned):
    """eval-bag scores in the map's world (the bag's ground truth is in it); its live half
    starts the node with apply_map_alignment false, and the node then ignores the map's
    map_from_world."""
    from neural_reloc.eval.eval_bag import EvalBagConfig
    from neural_reloc.ros.bag_replay import node_params_for

    assert node_params_for(EvalBagConfig())["apply_map_alignment"] is False
    ros, oracle = aligned
    proc, d = ros.start("pose_of:=camera", "apply_map_alignment:=false")
    t0 = time.monotonic()
    status = _localized(d, proc, _frame(d, 100), t0)
    assert close(matrix(status.pose.pose), oracle.poses[100])  # the relocalizer's answer as it is
