"""Real rclpy traffic between separate processes, on loopback only.

The child processes are this file run as a script (``python test_ros_loopback.py
ROLE ...``) with the environment of the ``ros_env`` fixture (test/conftest.py):
loopback-only discovery, a domain of their own and the Fast-DDS profile in
config/dds/fastdds_loopback.xml (UDPv4 on 127.0.0.1 + 32 MiB shared memory).
"""

from __future__ import annotations

import array
import json
import os
import select
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.requires_ros

REPO_ROOT = Path(__file__).resolve().parents[1]

N_STATUS = 5
N_IMAGES = 30
IMAGE_HZ = 10.0
IMAGE_W, IMAGE_H = 640, 480
CHILD_TIMEOUT_S = 40.0


# --- shared by the test and its child processes ------------------------------------


def expected_status(i: int) -> dict:
    """Field values of the i-th RelocalizationStatus (float32 fields: exact in float32)."""
    success = i % 2 == 0
    return {
        "header": {
            "stamp": {"sec": 1000 + i, "nanosec": 250_000_000},
            "frame_id": "map",
        },
        "success": success,
        "method": "crossfire",
        "child_frame_id": "camera_optical_frame",
        "pose": {
            "pose": {
                "position": {"x": 1.5 + i, "y": -2.25, "z": 0.125},
                "orientation": {"x": 0.0, "y": 0.0, "z": 0.6, "w": 0.8},
            },
            "covariance": [i + 0.5 * k for k in range(36)],
        },
        "num_matches": 400 + i,
        "num_inliers": 300 + i,
        "inlier_ratio": 0.75,
        "iterations": 3,
        "stage_names": ["render", "extract", "match", "pnp"],
        "stage_latency_ms": [12.5, 3.25, 40.0 + i, 1.5],
        "total_latency_ms": 57.25 + i,
        "prior_source": "retrieval",
        "prior_translation_delta_m": 0.375,
        "prior_rotation_delta_deg": 2.5,
        "reason": "" if success else f"only {i} inliers, need 30",
    }


def image_bytes(i: int) -> bytes:
    """640x480 rgb8 pixels of frame i: a fixed pattern, varied per frame."""
    import numpy as np

    ys, xs = np.mgrid[0:IMAGE_H, 0:IMAGE_W]
    rgb = np.stack([(xs + i) % 256, (ys + 2 * i) % 256, (xs ^ ys) % 256], axis=-1)
    return rgb.astype(np.uint8).tobytes()


def _set_fields(msg, values: dict) -> None:
    for name, value in values.items():
        if isinstance(value, dict):
            _set_fields(getattr(msg, name), value)
        else:
            setattr(msg, name, value)


def _to_plain(value):
    if hasattr(value, "get_fields_and_field_types"):
        return {
            name: _to_plain(getattr(value, name))
            for name in value.get_fields_and_field_types()
        }
    if hasattr(value, "tolist"):  # numpy arrays (fixed size), array.array (sequences)
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _spin_until(node, done, timeout_s: float) -> bool:
    import rclpy

    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return True


# --- child process roles -----------------------------------------------------------


def _child_publish_status(topic: str, n: int) -> int:
    import rclpy
    from neural_reloc.msg import RelocalizationStatus
    from rclpy.duration import Duration
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("status_publisher")
    qos = QoSProfile(
        depth=n, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    )
    pub = node.create_publisher(RelocalizationStatus, topic, qos)
    if not _spin_until(node, lambda: pub.get_subscription_count() > 0, CHILD_TIMEOUT_S):
        print("no subscriber matched", file=sys.stderr)
        return 1
    for i in range(n):
        msg = RelocalizationStatus()
        _set_fields(msg, expected_status(i))
        pub.publish(msg)
    acked = pub.wait_for_all_acked(Duration(seconds=CHILD_TIMEOUT_S))
    node.destroy_node()
    rclpy.shutdown()
    return 0 if acked else 1


def _child_subscribe_status(topic: str, n: int) -> int:
    import rclpy
    from neural_reloc.msg import RelocalizationStatus
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("status_subscriber")
    received: list[dict] = []
    qos = QoSProfile(
        depth=n, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    )
    node.create_subscription(
        RelocalizationStatus, topic, lambda m: received.append(_to_plain(m)), qos
    )
    complete = _spin_until(node, lambda: len(received) >= n, CHILD_TIMEOUT_S)
    for plain in received:
        print(json.dumps(plain))
    node.destroy_node()
    rclpy.shutdown()
    return 0 if complete else 1


def _child_publish_images(topic: str, n: int) -> int:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("image_publisher")
    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    if not _spin_until(node, lambda: pub.get_subscription_count() > 0, CHILD_TIMEOUT_S):
        print("no subscriber matched", file=sys.stderr)
        return 1
    frames = [array.array("B", image_bytes(i)) for i in range(n)]
    print("MATCHED")
    if sys.stdin.readline().strip() != "GO":  # the subscriber has matched us too
        return 1
    period = 1.0 / IMAGE_HZ
    start = time.monotonic()
    for i, data in enumerate(frames):
        time.sleep(max(0.0, start + i * period - time.monotonic()))
        msg = Image()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = f"frame_{i}"
        msg.height, msg.width, msg.encoding, msg.step = (
            IMAGE_H,
            IMAGE_W,
            "rgb8",
            3 * IMAGE_W,
        )
        msg.data = data
        pub.publish(msg)
    time.sleep(1.0)  # best effort: let the last frames drain before the writer goes
    node.destroy_node()
    rclpy.shutdown()
    return 0


def _child_subscribe_images(topic: str, n: int) -> int:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("image_subscriber")
    received: list[dict] = []

    def on_image(msg: Image) -> None:
        latency_ms = (
            node.get_clock().now() - Time.from_msg(msg.header.stamp)
        ).nanoseconds / 1e6
        received.append(
            {
                "frame_id": msg.header.frame_id,
                "size": [msg.width, msg.height, msg.step, len(msg.data)],
                "encoding": msg.encoding,
                "crc32": zlib.crc32(msg.data),
                "latency_ms": latency_ms,
            }
        )

    sub = node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    if not _spin_until(node, lambda: sub.get_publisher_count() > 0, CHILD_TIMEOUT_S):
        return 1
    print("READY")
    _spin_until(node, lambda: len(received) >= n, n / IMAGE_HZ + 10.0)
    print(json.dumps(received))
    node.destroy_node()
    rclpy.shutdown()
    return 0


CHILD_ROLES = {
    "publish-status": _child_publish_status,
    "subscribe-status": _child_subscribe_status,
    "publish-images": _child_publish_images,
    "subscribe-images": _child_subscribe_images,
}


# --- helpers for the tests ---------------------------------------------------------


def _spawn(
    role: str, topic: str, n: int, env: dict[str, str], **kwargs
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, role, topic, str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(proc: subprocess.Popen, timeout_s: float = CHILD_TIMEOUT_S + 10) -> str:
    """Wait for a child; return its stdout, failing the test (with its stderr) unless it exits 0."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args[2]} timed out\nstdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, (
        f"{proc.args[2]} exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    )
    return out


def _read_line(
    proc: subprocess.Popen, expected: str, timeout_s: float = CHILD_TIMEOUT_S
) -> None:
    """Wait for a line on a child's stdout, reading the pipe unbuffered so that
    communicate() later gets everything after it."""
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        char = os.read(fd, 1)
        if not char:  # EOF: the child ended
            break
        if char != b"\n":
            line += char
        elif line.decode().strip() == expected:
            return
        else:
            line = b""
    _finish(proc, timeout_s=5)
    pytest.fail(f"{proc.args[2]} did not print {expected}")


@pytest.fixture
def children():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --- tests -------------------------------------------------------------------------


def test_generated_message_has_expected_fields():
    from neural_reloc.msg import RelocalizationStatus

    assert RelocalizationStatus.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "success": "boolean",
        "method": "string",
        "child_frame_id": "string",
        "pose": "geometry_msgs/PoseWithCovariance",
        "num_matches": "uint32",
        "num_inliers": "uint32",
        "inlier_ratio": "float",
        "iterations": "uint32",
        "stage_names": "sequence<string>",
        "stage_latency_ms": "sequence<float>",
        "total_latency_ms": "float",
        "prior_source": "string",
        "prior_translation_delta_m": "float",
        "prior_rotation_delta_deg": "float",
        "reason": "string",
    }
    msg = RelocalizationStatus()
    assert len(msg.pose.covariance) == 36
    assert not msg.success and msg.reason == "" and len(msg.stage_names) == 0


def test_library_from_source_tree_and_msg_from_colcon_install(ros_env):
    """`neural_reloc` spans the source tree (library) and the colcon install (msg)."""
    import neural_reloc.msg

    import neural_reloc.geometry

    source_pkg = REPO_ROOT / "neural_reloc"
    assert Path(neural_reloc.__file__).resolve().parent == source_pkg
    assert Path(neural_reloc.geometry.__file__).resolve().is_relative_to(source_pkg)
    assert not (source_pkg / "msg").exists()
    assert not Path(neural_reloc.msg.__file__).resolve().is_relative_to(source_pkg)

    # The same in a child process started like a node.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import neural_reloc.geometry, neural_reloc.msg;"
                "print(neural_reloc.geometry.__file__); print(neural_reloc.msg.__file__)"
            ),
        ],
        env=ros_env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(out[0]).resolve().is_relative_to(source_pkg)
    assert not Path(out[1]).resolve().is_relative_to(source_pkg)


def test_status_messages_between_processes(ros_env, children):
    topic = f"/neural_reloc_test/status_{os.getpid()}"
    children.append(subscriber := _spawn("subscribe-status", topic, N_STATUS, ros_env))
    children.append(publisher := _spawn("publish-status", topic, N_STATUS, ros_env))

    received = [json.loads(line) for line in _finish(subscriber).splitlines()]
    _finish(publisher)
    assert received == [expected_status(i) for i in range(N_STATUS)]


def test_images_between_processes_without_loss(ros_env, children):
    topic = f"/neural_reloc_test/image_{os.getpid()}"
    children.append(subscriber := _spawn("subscribe-images", topic, N_IMAGES, ros_env))
    children.append(
        publisher := _spawn(
            "publish-images", topic, N_IMAGES, ros_env, stdin=subprocess.PIPE
        )
    )
    _read_line(publisher, "MATCHED")
    _read_line(subscriber, "READY")
    publisher.stdin.write("GO\n")
    publisher.stdin.flush()

    received = json.loads(_finish(subscriber).strip().splitlines()[-1])
    _finish(publisher)

    frame_ids = [r["frame_id"] for r in received]
    assert frame_ids == [f"frame_{i}" for i in range(N_IMAGES)], (
        f"received {len(frame_ids)}/{N_IMAGES} frames: {frame_ids}"
    )
    for i, r in enumerate(received):
        assert r["size"] == [IMAGE_W, IMAGE_H, 3 * IMAGE_W, 3 * IMAGE_W * IMAGE_H]
        assert r["encoding"] == "rgb8"
        assert r["crc32"] == zlib.crc32(image_bytes(i)), f"frame {i} corrupted"
    latencies = [r["latency_ms"] for r in received]
    print(
        f"image latency ms: median {statistics.median(latencies):.1f}, max {max(latencies):.1f}"
    )


if __name__ == "__main__":
    role, topic_arg, n_arg = sys.argv[1:4]
    sys.exit(CHILD_ROLES[role](topic_arg, int(n_arg)))
