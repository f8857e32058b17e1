"""``~/debug_image`` (issue 17): the drawing (ROS-free), the inliers a result carries, and
the node publishing it only while someone subscribes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from neural_reloc.eval.debug_image import draw_debug_image, render_at_estimate
from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.se3 import invert_pose, make_pose, rotation_from_rotvec
from neural_reloc.methods.base import PosePrior
from neural_reloc.methods.common.config import IterativeLocalizationConfig
from neural_reloc.methods.common.iterative import Correspondences, IterativeRelocalizer

CAM = Camera.from_ros_k(64, 48, [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


class FakeField:
    """A "neural field" rendering one colour, recording the cameras it was asked for."""

    def __init__(self):
        self.calls = []

    def render_view(self, camera, c2w_opengl, outputs=("rgb",)):
        self.calls.append((camera.width, camera.height, np.array(c2w_opengl)))
        return {"rgb": np.full((camera.height, camera.width, 3), 0.5, np.float32)}


class WithField:
    def __init__(self):
        self.model = FakeField()


def test_drawing_blends_the_render_and_marks_inliers():
    image = np.zeros((48, 64, 3), np.uint8)
    reloc = WithField()
    w2c = invert_pose(make_pose(np.eye(3), [0.0, 0.0, -1.0]))
    render = render_at_estimate(reloc, CAM, w2c, max_size=32)
    assert render.shape == (48, 64, 3) and render.dtype == np.uint8
    assert reloc.model.calls[0][:2] == (32, 24)  # rendered small, upscaled to the camera
    assert render_at_estimate(object(), CAM, w2c, 32) is None  # a method without a field
    assert render_at_estimate(reloc, CAM, w2c, 0) is None  # rendering off
    out = draw_debug_image(image, render, np.array([[10.0, 10.0], [50.0, 40.0], [1e6, 0.0]]), blend=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert abs(int(out[30, 30, 0]) - 64) <= 1  # half of the render's 128 over black
    assert tuple(out[10, 10]) == (0, 255, 0) and tuple(out[40, 50]) == (0, 255, 0)
    assert (image == 0).all(), "the camera image is not drawn on"
    many = np.c_[np.arange(64.0), np.full(64, 20.0)]
    assert (draw_debug_image(image, None, many, max_inliers=4)[20, :, 1] == 255).sum() < 4 * 4  # 4 dots, not 64
    texted = draw_debug_image(image, None, None, "crossfire: 40/100 inliers")
    assert texted[:12].any() and not texted[30:].any()  # text at the top only
    with pytest.raises(ValueError, match="render"):
        draw_debug_image(image, np.zeros((10, 10, 3), np.uint8))


class SyntheticIterative(IterativeRelocalizer):
    """Exact correspondences in a half-size camera (as methods that match at a lower
    resolution have), to check the inliers come back in the query's pixels."""

    method = "synthetic"

    def __init__(self, w2c_true):
        self.loc = IterativeLocalizationConfig(max_iterations=1)
        self.extent = 1.0
        self.w2c_true = w2c_true
        rng = np.random.default_rng(0)
        self.points = rng.uniform([-1, -1, 2], [1, 1, 4], size=(60, 3))

    def correspondences(self, query, w2c_opencv, round_index, clock):
        half = CAM.scaled(0.5)
        cam_pts = self.points @ self.w2c_true[:3, :3].T + self.w2c_true[:3, 3]
        uv, _ = half.project(cam_pts)
        return Correspondences(uv, self.points, half)


def test_an_iterative_result_carries_its_inliers_in_query_pixels():
    w2c = np.eye(4)
    reloc = SyntheticIterative(w2c)
    result = reloc.localize(np.zeros((48, 64, 3), np.uint8), CAM, PosePrior(make_pose(rotation_from_rotvec([0, 0.01, 0]),
                                                                                         [0.01, 0, 0])))
    assert result.success, result.reason
    full_uv, _ = CAM.project(reloc.points)
    assert result.inlier_uv.shape == (result.num_inliers, 2) == (60, 2)
    assert np.allclose(result.inlier_uv, full_uv, atol=0.6)  # half-size pixels carried to the query's


# ====================================================================== the node
@pytest.mark.requires_ros
def test_debug_image_only_while_subscribed(oracle_map, tmp_path, ros_env):
    from node_helpers import CAMERA_FRAME, NODE, Oracle
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from test_node_nav2 import BASE_FROM_OPTICAL, MAP_FROM_BASE, Ros, _frame, _localized

    oracle = Oracle(oracle_map, tmp_path / "oracle")
    oracle.set_pose(100, MAP_FROM_BASE @ BASE_FROM_OPTICAL)
    ros = Ros(oracle, ros_env)
    try:
        proc, d = ros.start()

        def published(t0):
            got = d.diagnostics_with(lambda st, v: "debug_images_published" in v, t0)
            return int(got[1]["debug_images_published"]) if got else None

        for _ in range(3):
            _localized(d, proc, _frame(d, 100), time.monotonic())
        t0 = time.monotonic()
        assert d.spin_until(lambda: published(t0) is not None, 5.0, "diagnostics", proc) is not None
        assert published(t0) == 0, "drawn without a subscriber"

        images = []
        sub = d.node.create_subscription(Image, f"/{NODE}/debug_image", images.append,
                                         QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        d.spin_until(lambda: sub.get_publisher_count() > 0, 10.0, "the debug image publisher", proc)
        d.spin(0.5)  # the node sees the subscription too
        stamp = _frame(d, 100)
        _localized(d, proc, stamp, time.monotonic())
        d.spin_until(lambda: images, 10.0, "a debug image", proc)
        img = images[-1]
        assert (img.width, img.height, img.encoding) == (64, 48, "rgb8")
        assert img.header.frame_id == CAMERA_FRAME
        assert img.header.stamp.sec * 10**9 + img.header.stamp.nanosec == stamp
        t1 = time.monotonic()
        assert d.spin_until(lambda: (published(t1) or 0) >= 1, 5.0, "the count in diagnostics", proc)
    finally:
        ros.close()


def test_rviz_config_shows_the_node_topics():
    """config/relocalize.rviz (installed with config/): the camera, the debug image, the
    estimate and the bag's ground truth, in the node's default names, fixed frame map."""
    from pathlib import Path

    import yaml

    from neural_reloc.ros.config import NodeConfig
    from neural_reloc.ros.params import NODE_NAME

    rviz = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "relocalize.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == NodeConfig().map_frame
    topics = {d["Class"].split("/")[-1] + ":" + d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    cfg = NodeConfig()
    assert topics == {
        f"Image:/{cfg.image_topic.lstrip('/')}",
        f"Image:/{NODE_NAME}/debug_image",
        f"PoseWithCovariance:/{NODE_NAME}/pose_with_covariance",
        "Pose:/ground_truth/camera_pose",
    }
    from neural_reloc.bags.config import BagTopics

    assert BagTopics().ground_truth == "/ground_truth/camera_pose"
    assert {d["Class"] for d in manager["Displays"]} >= {"rviz_default_plugins/TF"}
