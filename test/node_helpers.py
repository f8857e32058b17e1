"""Helpers of the relocalization node tests: the node as its own process, and a driver
node in this test process (in the node's domain, ``ros_env``) that feeds it and records
what it publishes. Used by test_relocalization_node.py (the CROSSFIRE room map) and
test_node_nav2.py (the exact stand-in relocalizer of oracle_method.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DIR = Path(__file__).resolve().parent
NODE = "relocalization_node"
S = 1_000_000_000
#: Time for one frame to come back (CPU localization of a 320x240 image, + slack).
FRAME_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 120.0
CAMERA_FRAME = "camera_optical_frame"


# ====================================================================== the node process
def node_command(*overrides: str, params_file: Path | None = REPO_ROOT / "config" / "relocalize.yaml",
                 ros_args: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, str(REPO_ROOT / "nodes" / NODE), "--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for o in overrides:
        cmd += ["-p", o]
    return cmd + list(ros_args)


def node_process(env: dict, *overrides: str, cmd: list[str] | None = None, **kwargs) -> subprocess.Popen:
    """The node with the shipped config/relocalize.yaml and ``-p`` overrides (as the
    launch file starts it), or ``cmd``; its output is kept for :func:`node_log`."""
    cmd = cmd or node_command(*overrides, **kwargs)
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_file = log
    return proc


def node_log(proc: subprocess.Popen) -> str:
    proc.log_file.seek(0)
    return proc.log_file.read()


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = node_log(proc)
    if os.environ.get("NEURAL_RELOC_SHOW_NODE_LOG"):  # debugging: pytest -s shows it
        print(f"---- node log ({proc.returncode}) ----\n{log}")
    return log


# ====================================================================== the driver
class Driver:
    """A node in this test process, in the node's domain, with everything it needs.

    ``ns``: the node's namespace (its topics are looked for there, as a namespaced
    launch puts them, /tf included when ``tf_in_ns``)."""

    def __init__(self, domain_id: int, use_sim_time: bool = False, ns: str = "", tf_in_ns: bool = False,
                 name: str = "test_driver"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (
            DurabilityPolicy,
            QoSProfile,
            ReliabilityPolicy,
            qos_profile_sensor_data,
        )
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from neural_reloc.msg import RelocalizationStatus

        self.ns = ns.rstrip("/")
        self.node_fqn = f"{self.ns}/{NODE}"
        tf = f"{self.ns}/tf" if tf_in_ns else "/tf"
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n = self.node
        self.image_pub = n.create_publisher(Image, f"{self.ns}/camera/image_raw", qos_profile_sensor_data)
        self.info_pub = n.create_publisher(CameraInfo, f"{self.ns}/camera/camera_info", qos_profile_sensor_data)
        self.tf_pub = n.create_publisher(TFMessage, tf, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.tf_static_pub = n.create_publisher(TFMessage, tf + "_static", latched)
        self.initialpose_pub = n.create_publisher(PoseWithCovarianceStamped, f"{self.ns}/initialpose", reliable)
        self.clock_pub = n.create_publisher(Clock, "/clock", 10) if use_sim_time else None
        self.received: dict[str, list] = {k: [] for k in ("status", "pose", "pose_cov", "diagnostics", "tf", "initialpose")}
        self._lock = threading.Lock()

        def keep(key):
            def cb(msg):
                with self._lock:
                    self.received[key].append((time.monotonic(), msg))

            return cb

        n.create_subscription(RelocalizationStatus, f"{self.node_fqn}/status", keep("status"), reliable)
        n.create_subscription(PoseStamped, f"{self.node_fqn}/pose", keep("pose"), reliable)
        n.create_subscription(PoseWithCovarianceStamped, f"{self.node_fqn}/pose_with_covariance", keep("pose_cov"), reliable)
        n.create_subscription(DiagnosticArray, "/diagnostics", keep("diagnostics"), reliable)
        n.create_subscription(TFMessage, tf, keep("tf"), QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        n.create_subscription(PoseWithCovarianceStamped, f"{self.ns}/initialpose", keep("initialpose"), reliable)
        self.sim_ns = 1000 * S
        self._clients: dict = {}

    # -- spinning ------------------------------------------------------------------------
    def spin(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def spin_until(self, predicate, timeout_s: float, what: str = "", proc=None):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if self.clock_pub is not None:
                self.publish_clock()
            value = predicate()
            if value:
                return value
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"the node exited ({proc.returncode}) while waiting for {what}:\n{node_log(proc)}")
        if what:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}" + (f"\n{node_log(proc)}" if proc else ""))
        return None

    def publish_clock(self) -> None:
        from rosgraph_msgs.msg import Clock

        from neural_reloc.ros.conversions import ns_to_stamp

        self.sim_ns += 50_000_000
        self.clock_pub.publish(Clock(clock=ns_to_stamp(self.sim_ns)))

    def since(self, key: str, t0: float) -> list:
        with self._lock:
            return [m for t, m in self.received[key] if t >= t0]

    def timed_since(self, key: str, t0: float) -> list:
        """(monotonic receive time, message) pairs."""
        with self._lock:
            return [(t, m) for t, m in self.received[key] if t >= t0]

    def status_for(self, stamp_ns: int, t0: float):
        from neural_reloc.ros.conversions import stamp_to_ns

        return next((m for m in self.since("status", t0) if stamp_to_ns(m.header.stamp) == stamp_ns), None)

    def status_with(self, text: str, t0: float):
        return next((m for m in self.since("status", t0) if text in m.reason), None)

    def diagnostics_with(self, predicate, t0: float):
        for arr in reversed(self.since("diagnostics", t0)):
            for st in arr.status:
                if st.name.startswith(NODE):
                    values = {kv.key: kv.value for kv in st.values}
                    if predicate(st, values):
                        return st, values
        return None

    def transforms(self, parent: str, child: str, t0: float) -> list:
        """(receive time, TransformStamped) of ``parent -> child`` on /tf since t0."""
        return [(t, tr) for t, m in self.timed_since("tf", t0) for tr in m.transforms
                if tr.header.frame_id == parent and tr.child_frame_id == child]

    def wait_for_subscribers(self, pubs, proc=None, timeout_s: float = 30.0) -> None:
        for pub in pubs:
            self.spin_until(lambda pub=pub: pub.get_subscription_count() > 0, timeout_s,
                            f"a subscriber on {pub.topic_name}", proc)

    def service(self, srv_type, name: str, request, timeout_s: float = FRAME_TIMEOUT_S, proc=None):
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, name)
            self.spin_until(lambda: client.service_is_ready(), 30.0, f"service {name}", proc)
            # service_is_ready() means the server sees our requests; give discovery a
            # moment to match its responses to us too, or the first response can be lost
            self.spin(0.5)
        future = client.call_async(request)
        self.spin_until(lambda: future.done(), timeout_s, f"the response of {name}", proc)
        return future.result()

    def parameters(self, names: list[str], proc=None) -> dict:
        """The node's values of ``names`` (rcl_interfaces/GetParameters; None: not set)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.service(GetParameters, f"{self.node_fqn}/get_parameters", GetParameters.Request(names=names),
                                proc=proc)
        return {n: parameter_value_to_python(v) for n, v in zip(names, response.values)}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


# ====================================================================== messages
def camera_info(camera, frame_id=CAMERA_FRAME):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k = camera.ros_k().reshape(9).tolist()
    info.d = camera.distortion.tolist()
    return info


def publish_frame(driver: Driver, image_rgb, camera, stamp_ns: int, odom_from_base=None, encoding="rgb8", info=True,
                  image_msg=None):
    from tf2_msgs.msg import TFMessage

    from neural_reloc.ros.conversions import (
        image_msg_from_rgb,
        ns_to_stamp,
        transform_stamped,
    )

    if odom_from_base is not None:
        driver.tf_pub.publish(TFMessage(transforms=[transform_stamped(odom_from_base, "odom", "base_link", stamp_ns)]))
    if info:
        msg = info if not isinstance(info, bool) else camera_info(camera)
        msg.header.stamp = ns_to_stamp(stamp_ns)
        driver.info_pub.publish(msg)
    img = image_msg if image_msg is not None else image_msg_from_rgb(image_rgb, encoding)
    img.header.stamp = ns_to_stamp(stamp_ns)
    img.header.frame_id = img.header.frame_id or CAMERA_FRAME
    driver.image_pub.publish(img)


def initialpose(driver: Driver, pose_matrix, frame_id: str, stamp_ns: int, nan: bool = False):
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from neural_reloc.ros.conversions import ns_to_stamp, pose_msg_from_matrix

    msg = PoseWithCovarianceStamped()
    msg.header.frame_id, msg.header.stamp = frame_id, ns_to_stamp(stamp_ns)
    pose_msg_from_matrix(pose_matrix, msg.pose.pose)
    if nan:
        msg.pose.pose.position.x = math.nan
    driver.initialpose_pub.publish(msg)


def matrix(pose_msg):
    from neural_reloc.ros.conversions import matrix_from_pose_msg

    return matrix_from_pose_msg(pose_msg)


def static(parent: str, child: str, T):
    from neural_reloc.ros.conversions import transform_stamped

    return transform_stamped(T, parent, child, 0)


# ====================================================================== the oracle
class Oracle:
    """The stand-in relocalizer's side in the test (see oracle_method.py): a map built
    with ``--method oracle``, the poses it answers with and the calls it got."""

    def __init__(self, map_dir: Path, work_dir: Path):
        self.map_dir = map_dir
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.poses: dict[int, np.ndarray] = {}
        self._write()

    def env(self, ros_env: dict) -> dict:
        env = dict(ros_env)
        env["PYTHONPATH"] = f"{TEST_DIR}{os.pathsep}{env['PYTHONPATH']}"
        env["NEURAL_RELOC_METHODS"] = "oracle_method"
        env["NEURAL_RELOC_ORACLE_DIR"] = str(self.dir)
        return env

    def set_pose(self, frame_id: int, map_from_optical: np.ndarray) -> None:
        self.poses[int(frame_id)] = np.asarray(map_from_optical, dtype=np.float64)
        self._write()

    def _write(self) -> None:
        tmp = self.dir / "poses.json.tmp"
        tmp.write_text(json.dumps({str(k): v.tolist() for k, v in self.poses.items()}))
        tmp.replace(self.dir / "poses.json")

    def calls(self) -> list[dict]:
        path = self.dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def grey_image(frame_id: int, width: int = 64, height: int = 48) -> np.ndarray:
    """The image of oracle frame ``frame_id``: uniformly grey at that level."""
    return np.full((height, width, 3), frame_id, dtype=np.uint8)

