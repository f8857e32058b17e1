"""Unit tests of the ROS layer's conversions and ROS-free logic (fast, no processes).

Images and CameraInfo use the real sensor_msgs types (requires_ros); the Nav2/diagnostics
logic and the progress reporter are ROS-free. (The TF tree is tested in test_tf_tree.py.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_reloc.geometry import frames
from neural_reloc.geometry.se3 import (
    invert_pose,
    make_pose,
    rotation_from_quat_xyzw,
    rotation_from_rotvec,
)
from neural_reloc.ros import logic
from neural_reloc.ros.config import NodeConfig
from neural_reloc.ros.map_builder import ProgressReporter, format_progress

REPO_ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def random_pose(rng: np.random.Generator, scale: float = 3.0) -> np.ndarray:
    return make_pose(rotation_from_quat_xyzw(rng.normal(size=4)), rng.uniform(-scale, scale, size=3))


def random_rgb(rng, h=7, w=5) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ============================================================== images (sensor_msgs)
@pytest.mark.requires_ros
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 3, 64])
def test_colour_encodings_round_trip_with_row_padding(encoding, padding):
    from neural_reloc.ros.conversions import image_msg_from_rgb, image_to_rgb

    rgb = random_rgb(np.random.default_rng(len(encoding) * 100 + padding))
    msg = image_msg_from_rgb(rgb, encoding, row_padding=padding)
    channels = 4 if encoding.endswith("a8") else 3
    assert msg.step == rgb.shape[1] * channels + padding and len(msg.data) == msg.step * rgb.shape[0]
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    assert np.array_equal(out, rgb)


@pytest.mark.requires_ros
def test_channel_order_is_honoured_byte_by_byte():
    from sensor_msgs.msg import Image

    from neural_reloc.ros.conversions import image_to_rgb

    def one_pixel(encoding, data, step=None):
        return Image(height=1, width=1, encoding=encoding, step=step or len(data), data=bytes(data))

    assert image_to_rgb(one_pixel("rgb8", [10, 20, 30])).tolist() == [[[10, 20, 30]]]
    assert image_to_rgb(one_pixel("bgr8", [10, 20, 30])).tolist() == [[[30, 20, 10]]]
    assert image_to_rgb(one_pixel("rgba8", [10, 20, 30, 40])).tolist() == [[[10, 20, 30]]]
    assert image_to_rgb(one_pixel("bgra8", [10, 20, 30, 40])).tolist() == [[[30, 20, 10]]]
    assert image_to_rgb(one_pixel("mono8", [77])).tolist() == [[[77, 77, 77]]]
    # padding bytes after the row are ignored, whatever they hold
    assert image_to_rgb(one_pixel("mono8", [77, 255, 255, 255], step=4)).tolist() == [[[77, 77, 77]]]
    # one byte per channel: the byte order flag does not change anything
    big = one_pixel("bgr8", [10, 20, 30])
    big.is_bigendian = 1
    assert image_to_rgb(big).tolist() == [[[30, 20, 10]]]


@pytest.mark.requires_ros
def test_mono8_with_padding():
    from neural_reloc.ros.conversions import image_msg_from_rgb, image_to_rgb

    gray = np.random.default_rng(3).integers(0, 256, size=(6, 9), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    msg = image_msg_from_rgb(rgb, "mono8", row_padding=7)
    assert msg.step == 16
    assert np.array_equal(image_to_rgb(msg), rgb)


@pytest.mark.requires_ros
def test_unsupported_and_malformed_images_are_rejected_naming_the_problem():
    from sensor_msgs.msg import Image

    from neural_reloc.ros.conversions import image_msg_from_rgb, image_to_rgb

    rgb = random_rgb(np.random.default_rng(0))
    for encoding in ("16UC1", "32FC1", "RGB8", "nv21", ""):
        msg = image_msg_from_rgb(rgb)
        msg.encoding = encoding
        with pytest.raises(ValueError, match=rf"unsupported image encoding '{encoding}' on /cam/img: supported are rgb8"):
            image_to_rgb(msg, "/cam/img")
    short_step = image_msg_from_rgb(rgb)
    short_step.step = rgb.shape[1] * 3 - 1
    with pytest.raises(ValueError, match="step=14 is shorter than a row"):
        image_to_rgb(short_step, "/cam/img")
    truncated = image_msg_from_rgb(rgb)
    truncated.data = bytes(truncated.data)[:-1]
    with pytest.raises(ValueError, match=r"data has 104 bytes, expected step\*height = 15\*7 = 105"):
        image_to_rgb(truncated)
    with pytest.raises(ValueError, match="empty image"):
        image_to_rgb(Image(encoding="rgb8"))


@pytest.mark.requires_ros
def test_bayer_yuv422_and_16_bit_encodings_convert_to_rgb():
    """Bug 9: raw camera encodings convert without cv_bridge (OpenCV's demosaicing and
    YUV conversions, 16 bit scaled to 8), in either byte order."""
    from sensor_msgs.msg import Image

    from neural_reloc.ros.conversions import SUPPORTED_ENCODINGS, image_to_rgb

    h, w, colour = 8, 12, (200, 100, 50)
    r, g, b = colour
    mosaics = {  # ROS bayer pattern: the first two pixels of the first two rows
        "bayer_rggb8": [[r, g], [g, b]], "bayer_bggr8": [[b, g], [g, r]],
        "bayer_gbrg8": [[g, b], [r, g]], "bayer_grbg8": [[g, r], [b, g]],
    }
    for encoding, cell in mosaics.items():
        raw = np.tile(np.array(cell, np.uint8), (h // 2, w // 2))
        for bits, data in ((8, raw), (16, (raw.astype(np.uint16) * 257).astype(">u2"))):
            enc = encoding[:-1] + str(bits)
            msg = Image(height=h, width=w, encoding=enc, step=w * bits // 8, is_bigendian=int(bits == 16),
                        data=np.ascontiguousarray(data).tobytes())
            out = image_to_rgb(msg)
            assert out.shape == (h, w, 3) and out.dtype == np.uint8
            assert np.abs(out[2:-2, 2:-2].astype(int) - colour).max() <= 2, (enc, out[3, 3])
    # BT.601 video range, as cameras send YUV 4:2:2 (and OpenCV reads it)
    y = round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)
    u = round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255)
    v = round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255)
    for encoding, pair in (("yuv422", [u, y, v, y]), ("uyvy", [u, y, v, y]), ("yuv422_yuy2", [y, u, y, v]),
                           ("yuyv", [y, u, y, v])):
        msg = Image(height=h, width=w, encoding=encoding, step=2 * w, data=bytes(pair) * (h * w // 2))
        assert np.abs(image_to_rgb(msg).astype(int) - colour).max() <= 3, encoding
    rgb = random_rgb(np.random.default_rng(1))
    for encoding, order, channels in (("rgb16", [0, 1, 2], 3), ("bgr16", [2, 1, 0], 3), ("rgba16", [0, 1, 2], 4),
                                      ("bgra16", [2, 1, 0], 4), ("mono16", [0], 1)):
        src = rgb[..., order] if channels > 1 else rgb[..., :1]
        if channels == 4:
            src = np.concatenate([src, np.full(src.shape[:2] + (1,), 255, np.uint8)], axis=2)
        for big in (0, 1):
            data = (src.astype(np.uint16) * 257).astype(">u2" if big else "<u2").tobytes()
            msg = Image(height=7, width=5, encoding=encoding, step=5 * channels * 2, is_bigendian=big, data=data)
            want = rgb if channels > 1 else np.repeat(rgb[..., :1], 3, axis=2)
            assert np.array_equal(image_to_rgb(msg), want), (encoding, big)
    assert {"bayer_rggb8", "yuv422", "mono16", "rgb16"} <= set(SUPPORTED_ENCODINGS)


@pytest.mark.requires_ros
def test_cv_bridge_is_tried_before_an_encoding_is_rejected(monkeypatch):
    """Bug 9: where cv_bridge is installed it converts every encoding it knows; the
    node's own list is not checked first. Its failure names the encoding."""
    from neural_reloc.ros import conversions
    from neural_reloc.ros.conversions import image_msg_from_rgb, image_to_rgb

    class FakeBridge:
        def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
            assert desired_encoding == "rgb8"
            if msg.encoding != "nv21":
                raise RuntimeError(f"[{msg.encoding}] is not a color format")
            return np.full((msg.height, msg.width, 3), 7, np.uint8)

    monkeypatch.setattr(conversions, "_BRIDGE", FakeBridge())
    msg = image_msg_from_rgb(random_rgb(np.random.default_rng(0)))
    msg.encoding = "nv21"  # known to the (fake) bridge only
    assert (image_to_rgb(msg) == 7).all()
    msg.encoding = "32FC1"
    with pytest.raises(ValueError, match=r"cannot convert image encoding '32FC1' on /cam/img.*not a color format"):
        image_to_rgb(msg, "/cam/img")


@pytest.mark.requires_ros
def test_camera_info_to_camera_and_back_to_ros_k():
    from sensor_msgs.msg import CameraInfo

    from neural_reloc.geometry.camera import Camera
    from neural_reloc.ros.conversions import (
        camera_from_camera_info,
        check_image_matches_camera,
    )

    cam = Camera(640, 480, 500.0, 505.0, 320.5, 240.5, k1=-0.1, k2=0.01, p1=1e-3, p2=-1e-3, k3=0.001)
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = cam.ros_k().reshape(9).tolist()
    info.d = cam.distortion.tolist()
    out = camera_from_camera_info(info, "/cam/info")
    assert out == cam  # pixel-centre convention converted (cx_ros = cx - 0.5)
    assert info.k[2] == 320.0
    pinhole = CameraInfo(width=640, height=480, distortion_model="")
    pinhole.k = info.k
    assert not camera_from_camera_info(pinhole).is_distorted
    pinhole.distortion_model, pinhole.d = "none", [0.0] * 5
    assert not camera_from_camera_info(pinhole).is_distorted
    check_image_matches_camera(np.zeros((480, 640, 3), np.uint8), out)
    with pytest.raises(ValueError, match=r"image on /img is 320x240 but CameraInfo on /info says 640x480"):
        check_image_matches_camera(np.zeros((240, 320, 3), np.uint8), out, "/img", "/info")
    # rectified images (bug 6): P's intrinsics, no distortion; K and D are the raw camera's
    info.p = [480.0, 0.0, 318.0, 0.0, 0.0, 482.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rect = camera_from_camera_info(info, "/cam/info", rectified=True)
    assert (rect.fx, rect.fy, rect.cx, rect.cy, rect.is_distorted) == (480.0, 482.0, 318.5, 236.5, False)
    info.p = [0.0] * 12
    with pytest.raises(ValueError, match="rectified is set but p has no focal length"):
        camera_from_camera_info(info, "/cam/info", rectified=True)


@pytest.mark.requires_ros
@pytest.mark.parametrize(
    "change, match",
    [
        ({"distortion_model": "rational_polynomial", "d": [0.1] * 8}, "unsupported distortion_model 'rational_polynomial'"),
        ({"distortion_model": "equidistant", "d": [0.1] * 4}, "unsupported distortion_model 'equidistant'"),
        ({"distortion_model": "plumb_bob", "d": [0.1] * 4}, "plumb_bob needs 5 coefficients in d, got 4"),
        ({"distortion_model": "", "d": [0.1, 0, 0, 0, 0]}, "non-zero coefficients"),
        ({"k": [0.0] * 9}, "k is all zeros"),
        ({"k": [500.0, 0, 320, 0, math.nan, 240, 0, 0, 1]}, "k must be 9 finite numbers"),
        ({"k": [-500.0, 0, 320, 0, 500, 240, 0, 0, 1]}, "fx=-500.0 must be a positive"),
        ({"width": 0}, "image size 0x480 must be positive"),
        ({"binning_x": 2}, "binning 2x0 is not supported"),
    ],
)
def test_bad_camera_info_is_rejected_naming_the_field(change, match):
    from sensor_msgs.msg import CameraInfo

    from neural_reloc.ros.conversions import camera_from_camera_info

    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0, 1]
    for k, v in change.items():
        setattr(info, k, v)
    with pytest.raises(ValueError, match=match) as err:
        camera_from_camera_info(info, "/cam/info")
    assert "CameraInfo on /cam/info" in str(err.value)


# ============================================================== poses (geometry_msgs)
@pytest.mark.requires_ros
@settings(max_examples=50, deadline=None)
@given(seeds)
def test_pose_and_transform_messages_round_trip(seed):
    from neural_reloc.ros import conversions as conv

    T = random_pose(np.random.default_rng(seed))
    assert np.allclose(conv.matrix_from_pose_msg(conv.pose_msg_from_matrix(T)), T, atol=1e-12)
    assert np.allclose(conv.matrix_from_transform_msg(conv.transform_msg_from_matrix(T)), T, atol=1e-12)
    ts = conv.transform_stamped(T, "map", "odom", 12 * S + 345)
    assert (ts.header.frame_id, ts.child_frame_id) == ("map", "odom")
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (12, 345)
    assert conv.stamp_to_ns(ts.header.stamp) == 12 * S + 345


@pytest.mark.requires_ros
def test_bad_poses_and_covariances_are_rejected():
    from geometry_msgs.msg import Pose

    from neural_reloc.ros import conversions as conv

    p = Pose()
    p.orientation.w = 1.0
    p.position.x = math.nan
    with pytest.raises(ValueError, match="initial pose: contains NaN"):
        conv.matrix_from_pose_msg(p, "initial pose")
    p.position.x, p.orientation.w = 0.0, 0.0
    with pytest.raises(ValueError, match="zero length"):
        conv.matrix_from_pose_msg(p)
    p.orientation.w = 2.0
    with pytest.raises(ValueError, match="not normalized"):
        conv.matrix_from_pose_msg(p)
    cov = np.arange(36.0).reshape(6, 6)
    assert conv.covariance_to_list(cov)[7] == 7.0 and conv.covariance_to_list(cov)[35] == 35.0
    assert np.array_equal(conv.covariance_from_list(conv.covariance_to_list(cov)), cov)
    with pytest.raises(ValueError, match="6x6"):
        conv.covariance_to_list(np.eye(3))


@pytest.mark.requires_ros
def test_vendored_tf2_msgs_is_wire_identical_to_jazzy():
    """/tf interoperates with real ROS 2 nodes only if the type hash is Jazzy's."""
    import tf2_msgs
    from tf2_msgs.msg import TFMessage

    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}
    prefix = Path(tf2_msgs.__file__).parents[4]  # <prefix>/lib/python3.X/site-packages/tf2_msgs
    if not prefix.is_relative_to(REPO_ROOT):
        pytest.skip(f"tf2_msgs from {prefix}: the system package, not vendor/tf2_msgs")
    share = prefix / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(share.read_text())["type_hashes"]}
    # `ros2 topic info -v /tf` on ROS 2 Jazzy
    assert hashes["tf2_msgs/msg/TFMessage"] == (
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
    )


# ============================================================== node logic (ROS-free)
@settings(max_examples=30, deadline=None)
@given(seeds)
def test_extrinsic_from_parameters_optical_or_body(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    xyz = rng.uniform(-1, 1, 3).tolist()
    base_from_camera = make_pose(rotation_from_quat_xyzw(q), xyz)
    cfg = NodeConfig(base_from_camera_xyz=xyz, base_from_camera_quat_xyzw=q.tolist())
    assert np.allclose(logic.base_from_optical_from_config(cfg), base_from_camera)
    cfg.base_from_camera_is_optical = False
    base_from_optical = logic.base_from_optical_from_config(cfg)
    assert np.allclose(base_from_optical, frames.body_from_optical_extrinsic(base_from_camera))
    # the optical z axis (viewing direction) is the camera body's x axis
    assert np.allclose(base_from_optical[:3, 2], base_from_camera[:3, 0])


def test_base_pose_and_nav2_covariance():
    rng = np.random.default_rng(5)
    map_from_optical = random_pose(rng)
    base_from_optical = frames.body_from_optical_extrinsic(make_pose(np.eye(3), [0.2, 0.0, 0.5]))
    cov = np.diag([1e-4, 4e-4, 9e-4, 1e-6, 1e-6, 1e-6])
    map_from_base, cov_base = logic.base_pose_with_covariance(map_from_optical, cov, base_from_optical)
    assert np.allclose(map_from_base @ base_from_optical, map_from_optical)
    assert np.allclose(cov_base, frames.covariance_of_child_offset(cov, map_from_optical, invert_pose(base_from_optical)))
    nav2 = logic.nav2_covariance(cov_base, min_position_std_m=0.05, min_yaw_std_deg=2.0).reshape(36)
    # AMCL reads x (0), y (7) and yaw (35): all filled, at least the floors
    assert nav2[0] >= 0.05**2 and nav2[7] >= 0.05**2 and nav2[35] >= math.radians(2.0) ** 2
    big = np.diag([1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
    assert np.allclose(logic.nav2_covariance(big, 0.05, 2.0), big)  # above the floors: unchanged
    with pytest.raises(ValueError, match="6x6"):
        logic.nav2_covariance(np.full((6, 6), np.nan), 0.05, 2.0)


def test_echo_filter():
    echo = logic.EchoFilter()
    echo.sent(7 * S, [1.0, 2.0, 0.0])
    assert echo.is_echo(7 * S, [1.0, 2.0, 1e-9])
    assert not echo.is_echo(7 * S, [1.0, 2.1, 0.0]) and not echo.is_echo(8 * S, [1.0, 2.0, 0.0])


def test_tf_output_never_gives_the_camera_a_parent_nor_competes_with_amcl():
    """Bugs 2 and 7: map -> odom with an odometry frame, map -> base_link without one,
    nothing in Nav2 mode (AMCL's) or with publish_tf off."""
    assert logic.tf_output(NodeConfig()) == logic.TF_MAP_TO_ODOM
    assert logic.tf_output(NodeConfig(odom_frame="")) == logic.TF_MAP_TO_BASE
    assert logic.tf_output(NodeConfig(nav2_mode=True)) == logic.TF_NONE
    assert logic.tf_output(NodeConfig(nav2_mode=True, odom_frame="")) == logic.TF_NONE
    assert logic.tf_output(NodeConfig(publish_tf=False)) == logic.TF_NONE


def _amcl(map_from_base, std_m=0.05, yaw_std_deg=2.0, received_s=0.0, odom_from_base=None):
    cov = np.diag([std_m**2, std_m**2, 1e-6, 1e-6, 1e-6, math.radians(yaw_std_deg) ** 2])
    return logic.AmclPose(map_from_base, cov, int(received_s * S), odom_from_base)


def test_nav2_gate_sends_a_fix_only_when_amcl_needs_it():
    """Bug 5: first pose; resent only when AMCL did not answer (after the interval), is
    unsure, or disagrees (AMCL's pose carried to the fix by odometry); on request at once."""
    cfg = NodeConfig(nav2_mode=True, nav2_min_interval_s=5.0)
    fix = make_pose(np.eye(3), [2.0, 1.0, 0.0])
    gate = logic.Nav2Gate()
    assert "no pose yet" in gate.reason(cfg, 10 * S, fix)
    gate.sent(10 * S)
    assert gate.reason(cfg, 12 * S, fix) == ""  # within the interval
    assert "not answered" in gate.reason(cfg, 16 * S, fix)  # lost? send again
    gate.amcl_pose(_amcl(fix, received_s=10.5))
    assert gate.reason(cfg, 16 * S, fix) == ""  # answered and agrees
    assert gate.reason(cfg, 16 * S, fix, requested=True) == "requested"
    gate.amcl_pose(_amcl(fix, std_m=0.5, received_s=17))
    assert "unsure: x/y std 0.50 m" in gate.reason(cfg, 18 * S, fix)
    gate.amcl_pose(_amcl(fix, yaw_std_deg=20.0, received_s=17))
    assert "unsure: yaw std 20.0 deg" in gate.reason(cfg, 18 * S, fix)
    off = make_pose(np.eye(3), [2.5, 1.0, 0.0])
    gate.amcl_pose(_amcl(off, received_s=17))
    assert "disagrees by 0.50 m" in gate.reason(cfg, 18 * S, fix)
    turned = make_pose(rotation_from_rotvec([0, 0, math.radians(15.0)]), [2.0, 1.0, 0.0])
    gate.amcl_pose(_amcl(turned, received_s=17))
    assert "/ 15.0 deg" in gate.reason(cfg, 18 * S, fix)
    # AMCL's pose at an older stamp, the robot has moved 1 m since: carried by odometry
    odom_then, odom_now = make_pose(np.eye(3), [0.0, 0.0, 0.0]), make_pose(np.eye(3), [1.0, 0.0, 0.0])
    gate.amcl_pose(_amcl(fix @ invert_pose(odom_now) @ odom_then, received_s=17, odom_from_base=odom_then))
    assert gate.reason(cfg, 18 * S, fix, odom_from_base=odom_now) == ""
    assert "disagrees by 1.00 m" in gate.reason(cfg, 18 * S, fix)  # without odometry: compared as is
    gate.sent(20 * S)
    assert gate.reason(cfg, 21 * S, fix) == ""
    assert gate.reason(cfg, 10 * S, fix) == "AMCL has not answered"  # the clock went back (sim time reset)


def test_node_stats_and_diagnostic_level():
    now = [0.0]
    stats = logic.NodeStats(window_s=5.0, clock=lambda: now[0])
    assert logic.diagnostic_level(stats.snapshot(), "unconfigured", False, 5.0) == (
        logic.WARN, "no map loaded: node unconfigured"
    )
    stats.map_error = "cannot load map_path='/x': no manifest"
    stats.failure(stats.map_error)
    level, message = logic.diagnostic_level(stats.snapshot(), "unconfigured", False, 5.0)
    assert level == logic.ERROR and message == "map not loaded (unconfigured): cannot load map_path='/x': no manifest"
    stats.map_error = ""  # a map loaded after all
    for k in range(31):  # 30 Hz input, every third frame processed (10 Hz)
        now[0] = 10.0 + k / 30
        stats.received(dropped_previous=k % 3 != 0)
        if k % 3 == 0:
            stats.processed(latency_ms=100.0 + k, accepted=True, inlier_ratio=0.5)
    snap = stats.snapshot()
    assert math.isclose(snap["input_rate_hz"], 30.0, rel_tol=1e-6)
    assert math.isclose(snap["processing_rate_hz"], 10.0, rel_tol=1e-6)
    assert snap["frames_dropped"] == 20 and snap["frames_processed"] == 11
    assert 110 < snap["latency_ms_p50"] < 120 and snap["latency_ms_p95"] > snap["latency_ms_p50"]
    level, message = logic.diagnostic_level(snap, "active", True, 5.0)  # the map failure is 11 s old
    assert level == logic.OK and message == "localizing at 10.0 Hz, last fix 0.0 s ago"
    now[0] = 20.0
    assert stats.snapshot()["processing_rate_hz"] == 0.0  # nothing within the window
    stats.failure("unsupported image encoding 'yuv422'")
    level, message = logic.diagnostic_level(stats.snapshot(), "active", True, 5.0)
    assert level == logic.WARN and "yuv422" in message


# ============================================================== map builder progress
def test_progress_reporter_is_a_tqdm_like_callable():
    now = [0.0]
    records = []
    progress = ProgressReporter(records.append, period_s=1.0, clock=lambda: now[0])
    bar = progress(range(10, 30), desc="training", initial=10, total=30)
    seen = []
    for step in bar:
        seen.append(step)
        now[0] += 0.25
        bar.set_postfix(psnr="21.5", refresh=False)
    assert seen == list(range(10, 30))
    assert records[0]["done"] == 10 and records[0]["total"] == 30 and not records[0]["finished"]
    assert records[-1]["done"] == 30 and records[-1]["finished"] and records[-1]["fraction"] == 1.0
    assert 5 <= len(records) <= 8  # every ~1 s of 5 s, plus start and end
    assert records[-1]["psnr"] == "21.5"
    assert format_progress(records[-1]) == "training: done 30/30 (100%) after 5 s, psnr=21.5"
    # an iterable without a length, as build_map's "loading images" may pass
    records.clear()
    assert list(progress(iter("abc"), desc="loading")) == ["a", "b", "c"]
    assert records[-1]["done"] == 3 and records[-1]["total"] is None


def test_camera_info_matcher_pairs_by_stamp_else_the_newest():
    m = logic.CameraInfoMatcher(size=3)
    assert m.for_image(5, "cam") == (None, "")
    for stamp, cam in ((1, "A"), (2, "B"), (3, "C")):
        m.add(logic.CameraEntry(stamp, "cam", cam))
    assert m.for_image(2, "cam")[0].camera == "B" and m.for_image(2, "cam")[1] == ""
    entry, note = m.for_image(9, "cam")
    assert entry.camera == "C" and "newest" in note
    m.add(logic.CameraEntry(4, "other", "D"))  # the oldest (1) drops out
    assert m.for_image(1, "cam")[0].camera == "D"
    assert "frame_id 'other' is not the image's 'cam'" in m.for_image(4, "cam")[1]
    assert logic.looks_like_optical_frame("camera_color_optical_frame") and logic.looks_like_optical_frame("/cam_optical")
    assert not logic.looks_like_optical_frame("camera_link") and not logic.looks_like_optical_frame("base_link")


@pytest.mark.requires_ros
def test_compressed_images_decode_to_rgb():
    from sensor_msgs.msg import CompressedImage

    from neural_reloc.ros.conversions import compressed_image_msg_from_rgb, compressed_image_to_rgb

    rgb = random_rgb(np.random.default_rng(3), h=16, w=24)
    assert np.array_equal(compressed_image_to_rgb(compressed_image_msg_from_rgb(rgb, "png")), rgb)
    grey = np.full((16, 24, 3), 77, np.uint8)
    assert np.array_equal(compressed_image_to_rgb(compressed_image_msg_from_rgb(grey, "jpeg")), grey)
    with pytest.raises(ValueError, match="cannot decode 3 bytes"):
        compressed_image_to_rgb(CompressedImage(format="jpeg", data=b"abc"), "/cam/c")
    with pytest.raises(ValueError, match="is a depth image"):
        compressed_image_to_rgb(CompressedImage(format="16UC1; compressedDepth png", data=b"abc"))
