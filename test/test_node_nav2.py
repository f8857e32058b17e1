"""The node as a Nav2 user runs it: TF ownership, AMCL, services and camera input.

Each test starts ``nodes/relocalization_node`` as its own process over loopback DDS
(``ros_env``) with a map of the stand-in relocalizer of oracle_method.py: it answers
each uniformly grey frame (its grey level is the frame's id) with the pose the test gave
for that id, instantly and exactly, so these tests check the node's own code path
(frames, TF, Nav2, services, image and CameraInfo conversion) in seconds. The
relocalization itself is tested with the CROSSFIRE map in test_relocalization_node.py.

The robot stands still in these tests: ``odom -> base_link`` is constant and its true
``map -> odom`` is :data:`MAP_FROM_ODOM_TRUE`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from node_helpers import (
    CAMERA_FRAME,
    NODE,
    REPO_ROOT,
    S,
    TEST_DIR,
    Driver,
    Oracle,
    camera_info,
    grey_image,
    matrix,
    node_log,
    node_process,
    publish_frame,
    static,
    stop,
)

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import body_from_optical_extrinsic
from neural_reloc.geometry.se3 import invert_pose, make_pose, pose_error, rotation_from_rotvec

pytestmark = pytest.mark.requires_ros

#: base_link -> camera optical frame: 10 cm ahead, 30 cm up, looking forward.
BASE_FROM_OPTICAL = body_from_optical_extrinsic(make_pose(np.eye(3), [0.1, 0.0, 0.3]))
MAP_FROM_ODOM_TRUE = make_pose(rotation_from_rotvec([0, 0, math.radians(20.0)]), [0.5, -0.3, 0.0])
ODOM_FROM_BASE = make_pose(rotation_from_rotvec([0, 0, math.radians(-35.0)]), [1.2, 0.4, 0.0])
MAP_FROM_BASE = MAP_FROM_ODOM_TRUE @ ODOM_FROM_BASE
CAMERA = Camera.from_ros_k(64, 48, [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
STARTUP_S = 90.0
FRAME_S = 10.0


def wall_ns() -> int:
    return time.time_ns()


def close(a, b, m=1e-6, deg=1e-4) -> bool:
    dt, dr = pose_error(a, b)
    return dt <= m and dr <= deg


# ====================================================================== fixtures
@pytest.fixture(scope="module")
def oracle_map(tmp_path_factory) -> Path:
    """A map of the stand-in relocalizer (built through the CLI with the plugin)."""
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    root = tmp_path_factory.mktemp("oracle_map")
    generate_procedural_scene(root / "scene", ProceduralSceneConfig(width=64, height=48, num_frames=6))
    env = dict(os.environ, PYTHONPATH=f"{TEST_DIR}{os.pathsep}{REPO_ROOT}", NEURAL_RELOC_METHODS="oracle_method",
               NEURAL_RELOC_ORACLE_DIR=str(root))
    run = subprocess.run([sys.executable, "-m", "neural_reloc.cli", "build-map", "--method", "oracle", "--data",
                          str(root / "scene"), "--out", str(root / "map"), "--max-eval-views", "1"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return root / "map"


class Ros:
    """Starts the node (on the oracle map, autostart) and drivers; stops them all."""

    def __init__(self, oracle: Oracle, ros_env: dict):
        self.oracle, self.env = oracle, oracle.env(ros_env)
        self.procs: list = []
        self.drivers: list[Driver] = []

    def node(self, *params: str, autostart: bool = True, cmd=None):
        base = [f"map_path:={self.oracle.map_dir}", f"autostart:={str(autostart).lower()}", "device:=cpu"]
        proc = node_process(self.env, *base, *params, cmd=cmd)
        self.procs.append(proc)
        return proc

    def driver(self, **kw) -> Driver:
        d = Driver(int(self.env["ROS_DOMAIN_ID"]), **kw)
        self.drivers.append(d)
        return d

    def start(self, *params: str, **driver_kw) -> tuple:
        """The node and a driver, once the node is active and subscribed."""
        proc = self.node(*params)
        d = self.driver(**driver_kw)
        t0 = time.monotonic()
        d.spin_until(lambda: d.diagnostics_with(lambda st, v: v.get("lifecycle_state") == "active", t0),
                     STARTUP_S, "the node to become active", proc)
        prime(d, proc)
        return proc, d

    def close(self) -> list[str]:
        for d in self.drivers:
            d.close()
        return [stop(p) for p in self.procs]


@pytest.fixture
def oracle(oracle_map, tmp_path) -> Oracle:
    o = Oracle(oracle_map, tmp_path / "oracle")
    o.set_pose(100, MAP_FROM_BASE @ BASE_FROM_OPTICAL)
    return o


@pytest.fixture
def ros(oracle, ros_env):
    r = Ros(oracle, ros_env)
    yield r
    r.close()


def prime(d: Driver, proc, info=None) -> None:
    """Once the node subscribes: the camera extrinsic and a first CameraInfo."""
    d.wait_for_subscribers([d.image_pub, d.info_pub], proc)
    d.tf_static_pub.publish(_tf_message([static("base_link", CAMERA_FRAME, BASE_FROM_OPTICAL)]))
    d.info_pub.publish(info or camera_info(CAMERA))
    d.spin(0.5)


def _tf_message(transforms):
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=list(transforms))


def _frame(driver, frame_id: int, stamp_ns: int | None = None, odometry: bool = True, **kw) -> int:
    stamp_ns = wall_ns() if stamp_ns is None else stamp_ns
    publish_frame(driver, grey_image(frame_id), CAMERA, stamp_ns, ODOM_FROM_BASE if odometry else None, **kw)
    return stamp_ns


def _localized(driver, proc, stamp_ns: int, t0: float, success: bool = True):
    status = driver.spin_until(lambda: driver.status_for(stamp_ns, t0), FRAME_S, f"the status of {stamp_ns}", proc)
    assert status.success == success, status.reason
    return status


def _stream(driver, seconds: float, rate_hz: float = 30.0, frame_id: int = 100, on_tick=None, proc=None) -> list[int]:
    """Publish frame ``frame_id`` (with odometry) at ``rate_hz`` for ``seconds`` while
    spinning; ``on_tick()`` after every spin."""
    stamps, period = [], 1.0 / rate_hz
    end = next_t = time.monotonic()
    end += seconds
    while time.monotonic() < end:
        if time.monotonic() >= next_t:
            stamps.append(_frame(driver, frame_id))
            next_t += period
        driver.executor.spin_once(timeout_sec=0.005)
        if on_tick is not None:
            on_tick()
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the node exited:\n{node_log(proc)}")
    return stamps


def _tf_publishers(driver, topic: str = "/tf") -> set[str]:
    return {i.node_name for i in driver.node.get_publishers_info_by_topic(topic)}


# ====================================================================== bug 9
def _encoded(grey: int, encoding: str):
    """A uniformly grey sensor_msgs/Image in ``encoding``."""
    from sensor_msgs.msg import Image

    w, h = CAMERA.width, CAMERA.height
    if encoding.startswith("bayer_") and encoding.endswith("8"):
        data, step = bytes([grey]) * (w * h), w
    elif encoding == "yuv422":  # UYVY
        data, step = bytes([128, grey, 128, grey]) * (w * h // 2), 2 * w
    elif encoding == "yuv422_yuy2":  # YUYV
        data, step = bytes([grey, 128, grey, 128]) * (w * h // 2), 2 * w
    elif encoding in ("mono16", "rgb16", "bgr16", "rgba16"):
        channels = {"mono16": 1, "rgb16": 3, "bgr16": 3, "rgba16": 4}[encoding]
        data, step = (grey * 257).to_bytes(2, "little") * (w * h * channels), 2 * channels * w
    else:
        raise ValueError(encoding)
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=0, data=data)
    msg.header.frame_id = CAMERA_FRAME
    return msg


ENCODINGS = ("bayer_rggb8", "bayer_grbg8", "bayer_bggr8", "bayer_gbrg8", "yuv422", "yuv422_yuy2", "mono16", "rgb16",
             "bgr16", "rgba16")


def test_bayer_yuv422_and_16_bit_images_are_localized(ros, oracle):
    """Bug 9: camera encodings beyond the 8-bit RGB/mono ones (raw bayer, yuv422, 16-bit)
    are converted and localized, not rejected."""
    proc, d = ros.start()
    for i, encoding in enumerate(ENCODINGS):
        grey = 110 + i
        oracle.set_pose(grey, MAP_FROM_BASE @ BASE_FROM_OPTICAL)
        t0 = time.monotonic()
        stamp = _frame(d, grey, image_msg=_encoded(grey, encoding))
        status = d.spin_until(lambda stamp=stamp: d.status_for(stamp, t0), FRAME_S, f"the status of {encoding}", proc)
        assert status.success, f"{encoding}: {status.reason}"
        call = oracle.calls()[-1]
        assert call["id"] == grey and call["shape"] == [48, 64, 3], (encoding, call)
