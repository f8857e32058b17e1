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
import time

import numpy as np
import pytest
from node_helpers import (
    CAMERA_FRAME,
    NODE,
    S,
    Driver,
    Oracle,
    camera_info,
    grey_image,
    initialpose,
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

    def start(self, *params: str, image_pub=None, **driver_kw) -> tuple:
        """The node and a driver, once the node is active and subscribed."""
        proc = self.node(*params)
        d = self.driver(**driver_kw)
        t0 = time.monotonic()
        d.spin_until(lambda: d.diagnostics_with(lambda st, v: v.get("lifecycle_state") == "active", t0),
                     STARTUP_S, "the node to become active", proc)
        prime(d, proc, image_pub=image_pub(d) if image_pub else None)
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


def prime(d: Driver, proc, info=None, image_pub=None) -> None:
    """Once the node subscribes: the camera extrinsic and a first CameraInfo."""
    d.wait_for_subscribers([image_pub or d.image_pub, d.info_pub], proc)
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


# ====================================================================== bug 2
def test_nav2_mode_leaves_map_to_odom_to_amcl(ros):
    """Bug 2: with nav2_mode (publish_tf left at its default) the node publishes no
    map -> odom (AMCL does); the fix still goes to AMCL on /initialpose."""
    proc, d = ros.start("nav2_mode:=true")
    t0 = time.monotonic()
    for _ in range(3):
        _localized(d, proc, _frame(d, 100), time.monotonic())
    d.spin(1.5)
    assert not d.transforms("map", "odom", t0), "the node published map -> odom in Nav2 mode"
    assert NODE not in _tf_publishers(d), f"the node publishes on /tf in Nav2 mode: {_tf_publishers(d)}"
    sent = [m for m in d.since("initialpose", t0) if any(m.pose.covariance)]
    assert sent and close(matrix(sent[0].pose.pose), MAP_FROM_BASE)


# ====================================================================== bug 3, Must show 3
def test_relocalize_answers_at_once_and_map_to_odom_never_goes_stale(ros, oracle):
    """Bug 3 (Must show 3): ~/relocalize during a 30 Hz replay answers at once while the
    3 s global relocalization runs, and map -> odom looked up at 10 Hz never fails."""
    from std_srvs.srv import Trigger

    from neural_reloc.geometry.tf_tree import TransformTree, TransformLookupError
    from neural_reloc.ros.conversions import matrix_from_transform_msg, stamp_to_ns

    proc, d = ros.start("oracle.retrieval_delay_s:=3.0")
    t_start = time.monotonic()
    while not d.transforms("map", "odom", t_start):  # the first frame: retrieval, 3 s
        assert time.monotonic() - t_start < 15.0, "no map -> odom after 15 s of frames"
        _stream(d, 0.5, proc=proc)

    # lookups from 2 s on: map -> odom is stamped ahead (transform_tolerance_s), so right
    # after the first one a lookup at "now" is before its oldest stamp (tf2 semantics)
    tree, fed, lookups, failures = TransformTree(cache_s=30.0), [0], [0], []
    next_lookup = [time.monotonic() + 2.0]

    def lookup():
        new = d.received["tf"][fed[0]:]
        fed[0] += len(new)
        for _, msg in new:
            for tr in msg.transforms:
                if (tr.header.frame_id, tr.child_frame_id) == ("map", "odom"):
                    tree.set_transform("map", "odom", stamp_to_ns(tr.header.stamp),
                                       matrix_from_transform_msg(tr.transform))
        if time.monotonic() >= next_lookup[0]:
            next_lookup[0] += 0.1
            lookups[0] += 1
            try:
                assert close(tree.lookup("map", "odom", wall_ns()), MAP_FROM_ODOM_TRUE)
            except TransformLookupError as e:
                failures.append(str(e))

    client = d.node.create_client(Trigger, f"/{NODE}/relocalize")
    d.spin_until(client.service_is_ready, 10.0, "~/relocalize", proc)
    _stream(d, 2.5, on_tick=lookup, proc=proc)
    t_call = time.monotonic()
    future = client.call_async(Trigger.Request())
    answered = []
    _stream(d, 6.0, on_tick=lambda: (lookup(), future.done() and not answered and answered.append(time.monotonic())),
            proc=proc)
    print(f"\n~/relocalize answered in {(answered[0] - t_call) * 1000 if answered else math.inf:.0f} ms; "
          f"{len(failures)} of {lookups[0]} map -> odom lookups (10 Hz, 30 Hz replay) failed")
    assert lookups[0] >= 60 and not failures, f"{len(failures)} of {lookups[0]} map -> odom lookups failed: {failures[:3]}"
    assert answered, "~/relocalize did not answer within 6 s"
    response = future.result()
    assert answered[0] - t_call < 1.0, f"~/relocalize answered after {answered[0] - t_call:.1f} s"
    assert response.success, response.message
    retrieval = [c for c in oracle.calls() if c["prior"] is None and c["t"] >= time.time() - 7.0]
    assert retrieval, "the requested global relocalization did not run"
    status = d.spin_until(lambda: next((m for m in d.since("status", t_call) if m.prior_source == "retrieval"), None),
                          5.0, "the status of the requested relocalization", proc)
    assert status.success and "~/status" in response.message, response.message


# ====================================================================== bug 4
def test_map_to_odom_is_stamped_ahead_with_margin(ros):
    """Bug 4: the republished map -> odom stays valid for several republish periods
    (transform_tolerance_s with margin over tf_republish_period_s, as AMCL's 1 s)."""
    from neural_reloc.ros.conversions import stamp_to_ns

    proc, d = ros.start()
    _localized(d, proc, _frame(d, 100), time.monotonic())
    t0 = time.monotonic()
    offset_ns = time.time_ns() - time.monotonic_ns()
    d.spin(3.0)
    got = d.transforms("map", "odom", t0)
    assert len(got) >= 15, f"{len(got)} map -> odom in 3 s"
    leads = [(stamp_to_ns(tr.header.stamp) - (int(t * S) + offset_ns)) / S for t, tr in got]
    assert min(leads) >= 0.5, f"map -> odom valid only {min(leads):.3f} s ahead of its arrival"


# ====================================================================== bug 5, Must show 2
class StandInAmcl:
    """Nav2 AMCL's interface: ``initialpose`` in (system-default QoS), ``amcl_pose`` out
    (transient local) and map -> odom on /tf (stamped 0.5 s ahead, at 10 Hz)."""

    def __init__(self, driver: Driver):
        import rclpy
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        self.node = rclpy.create_node("amcl", context=driver.ctx)
        driver.executor.add_node(self.node)
        self.received: list[tuple[float, object]] = []
        self.reply = True
        self.map_from_odom = None
        self.sent_tf: list[np.ndarray] = []
        self.node.create_subscription(PoseWithCovarianceStamped, "initialpose", self._on_initialpose,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.pose_pub = self.node.create_publisher(PoseWithCovarianceStamped, "amcl_pose", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.tf_pub = self.node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_timer(0.1, self._publish_tf)

    def _on_initialpose(self, msg) -> None:
        self.received.append((time.monotonic(), msg))
        if self.reply:
            self.set_pose(matrix(msg.pose.pose), 0.05)

    def set_pose(self, map_from_base, std_m: float, yaw_std_deg: float = 3.0) -> None:
        from geometry_msgs.msg import PoseWithCovarianceStamped

        from neural_reloc.ros.conversions import ns_to_stamp, pose_msg_from_matrix

        out = PoseWithCovarianceStamped()
        out.header.frame_id, out.header.stamp = "map", ns_to_stamp(wall_ns())
        pose_msg_from_matrix(map_from_base, out.pose.pose)
        cov = np.zeros(36)
        cov[0] = cov[7] = std_m**2
        cov[35] = math.radians(yaw_std_deg) ** 2
        out.pose.covariance = cov.tolist()
        self.pose_pub.publish(out)
        self.map_from_odom = map_from_base @ invert_pose(ODOM_FROM_BASE)

    def _publish_tf(self) -> None:
        from tf2_msgs.msg import TFMessage

        from neural_reloc.ros.conversions import transform_stamped

        if self.map_from_odom is not None:
            self.sent_tf.append(self.map_from_odom)
            self.tf_pub.publish(TFMessage(transforms=[
                transform_stamped(self.map_from_odom, "map", "odom", wall_ns() + S // 2)]))

    def since(self, t0: float) -> list:
        return [m for t, m in self.received if t >= t0]


def test_nav2_with_amcl_first_pose_received_none_repeated_while_amcl_agrees(ros):
    """Bug 5 (Must show 2): a Nav2-mode run with a stand-in AMCL. Exactly one map -> odom
    publisher (AMCL); the node's first fix reaches AMCL; no pose is repeated while AMCL
    agrees; one is sent when AMCL's pose is 1 m off, and when its covariance is too large."""
    from neural_reloc.ros.conversions import stamp_to_ns

    proc = ros.node("nav2_mode:=true", "nav2_min_interval_s:=1.0")
    d = ros.driver()
    amcl = StandInAmcl(d)
    t0 = time.monotonic()
    d.spin_until(lambda: d.diagnostics_with(lambda st, v: v.get("lifecycle_state") == "active", t0),
                 STARTUP_S, "the node to become active", proc)
    prime(d, proc)

    # the first fix reaches AMCL (its publisher is matched before the first fix)
    first = _frame(d, 100)
    _localized(d, proc, first, t0)
    got = d.spin_until(lambda: amcl.since(t0), 5.0, "AMCL to receive the first fix", proc)
    assert stamp_to_ns(got[0].header.stamp) == first, "the first fix sent to AMCL was lost"
    assert close(matrix(got[0].pose.pose), MAP_FROM_BASE)
    cov = list(got[0].pose.covariance)
    assert cov[0] >= 0.05**2 and cov[7] >= 0.05**2 and cov[35] >= math.radians(2.0) ** 2

    # AMCL took it and agrees: nothing more is sent over 4 s of frames (4x the interval)
    _stream(d, 4.0, rate_hz=5.0, proc=proc)
    assert len(amcl.since(t0)) == 1, f"{len(amcl.since(t0)) - 1} poses repeated while AMCL agrees"

    # AMCL jumps 1 m away: the next fixes correct it, once (AMCL then agrees again)
    amcl.set_pose(MAP_FROM_BASE @ make_pose(np.eye(3), [1.0, 0.0, 0.0]), 0.05)
    t1 = time.monotonic()
    _stream(d, 4.0, rate_hz=5.0, proc=proc)
    assert len(amcl.since(t1)) == 1, f"{len(amcl.since(t1))} poses sent to an AMCL 1 m off"
    assert close(matrix(amcl.since(t1)[0].pose.pose), MAP_FROM_BASE)

    # AMCL agrees but is unsure (1 m std): one fix is sent
    amcl.reply = True
    amcl.set_pose(MAP_FROM_BASE, 1.0)
    t2 = time.monotonic()
    _stream(d, 4.0, rate_hz=5.0, proc=proc)
    assert len(amcl.since(t2)) == 1, f"{len(amcl.since(t2))} poses sent to an unsure AMCL"

    # exactly one map -> odom publisher: AMCL
    n0, n1, n2 = len(amcl.since(t0)), len(amcl.since(t1)), len(amcl.since(t2))
    print(f"\nposes sent to AMCL: first fix 1, while agreeing {n0 - n1 - 1} more, AMCL 1 m off {n1 - n2}, "
          f"AMCL unsure {n2}; /tf publishers {sorted(_tf_publishers(d))}")
    assert _tf_publishers(d) - {"test_driver"} == {"amcl"}, _tf_publishers(d)
    from neural_reloc.ros.conversions import matrix_from_transform_msg

    for _, tr in d.transforms("map", "odom", t0):
        T = matrix_from_transform_msg(tr.transform)
        assert any(close(T, s) for s in amcl.sent_tf), "a map -> odom not from AMCL"


# ====================================================================== bug 6
def test_rectified_images_use_the_projection_matrix(ros, oracle):
    """Bug 6: with ``rectified`` the camera is P's intrinsics without distortion (the
    images are image_rect), not K and D applied a second time."""
    from neural_reloc.ros.conversions import ns_to_stamp

    proc, d = ros.start("rectified:=true")
    info = _camera_info_msg(k=[60.0, 0, 31.0, 0, 61.0, 23.0, 0, 0, 1], d=[0.1, -0.05, 0.001, 0.002, 0.01],
                            p=[55.0, 0, 30.0, 0, 0, 56.0, 22.0, 0, 0, 0, 1, 0])
    d.info_pub.publish(info)
    d.spin(0.5)
    stamp = wall_ns()
    info.header.stamp = ns_to_stamp(stamp)
    _localized(d, proc, _frame(d, 100, stamp, info=info), time.monotonic())
    cam = oracle.calls()[-1]["camera"]
    assert (cam["fx"], cam["fy"], cam["cx"], cam["cy"]) == (55.0, 56.0, 30.5, 22.5), cam
    assert all(cam[k] == 0.0 for k in ("k1", "k2", "p1", "p2", "k3")), cam


def _camera_info_msg(k, d, p, width=64, height=48, frame_id=CAMERA_FRAME):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k, info.d, info.p = [float(v) for v in k], [float(v) for v in d], [float(v) for v in p]
    info.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    return info


# ====================================================================== bug 7
def test_without_odometry_the_node_publishes_map_to_base_link(ros):
    """Bug 7: with ``odom_frame: ""`` the node publishes map -> base_link (through the
    camera extrinsic), never a second parent of the camera's optical frame."""
    from neural_reloc.ros.conversions import matrix_from_transform_msg

    proc, d = ros.start('odom_frame:=""')
    t0 = time.monotonic()
    stamp = _frame(d, 100, odometry=False)
    _localized(d, proc, stamp, t0)
    got = d.spin_until(lambda: d.transforms("map", "base_link", t0), 5.0, "map -> base_link on /tf", proc)
    assert close(matrix_from_transform_msg(got[0][1].transform), MAP_FROM_BASE)
    parents = {tr.child_frame_id: tr.header.frame_id for m in d.since("tf", t0) for tr in m.transforms}
    assert CAMERA_FRAME not in parents, f"the node gave {CAMERA_FRAME} a parent on /tf: {parents[CAMERA_FRAME]}"


# ====================================================================== noted in issue 13
def test_a_fix_without_odometry_ends_the_older_map_to_odom(ros, oracle):
    """A fix accepted on a frame without odometry contradicts the older fix's map -> odom:
    the node stops republishing it (the core's session drops it too)."""
    proc, d = ros.start("tf_lookup_timeout_s:=0.05")
    _localized(d, proc, _frame(d, 100), time.monotonic())
    d.spin_until(lambda: d.transforms("map", "odom", 0.0), 5.0, "map -> odom", proc)
    oracle.set_pose(101, MAP_FROM_BASE @ make_pose(np.eye(3), [0.5, 0.0, 0.0]) @ BASE_FROM_OPTICAL)
    _localized(d, proc, _frame(d, 101, odometry=False), time.monotonic())
    d.spin(0.5)  # what was in flight
    t1 = time.monotonic()
    d.spin(1.5)
    assert not d.transforms("map", "odom", t1), "the older fix's map -> odom is still republished"


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


# ====================================================================== beyond the bugs
def test_set_initial_pose_service_and_priors_given_while_inactive(ros, oracle):
    """A prior published on /initialpose while the node is inactive is kept for the first
    frame after activation; ``~/set_initial_pose`` sets the next frame's prior and refuses
    a NaN pose."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from neural_reloc.srv import SetInitialPose

    from neural_reloc.ros.conversions import ns_to_stamp, pose_msg_from_matrix

    proc = ros.node(autostart=False)
    d = ros.driver()

    def transition(t: int) -> bool:
        return d.service(ChangeState, f"/{NODE}/change_state", ChangeState.Request(transition=Transition(id=t)),
                         proc=proc).success

    assert transition(Transition.TRANSITION_CONFIGURE)
    d.wait_for_subscribers([d.initialpose_pub], proc)
    given = MAP_FROM_BASE @ make_pose(np.eye(3), [0.2, -0.1, 0.0])
    initialpose(d, given, "map", wall_ns())
    d.spin(1.0)
    assert transition(Transition.TRANSITION_ACTIVATE)
    prime(d, proc)
    _localized(d, proc, _frame(d, 100), time.monotonic())
    first = oracle.calls()[-1]
    assert first["prior_source"] == "initialpose", first
    assert close(np.array(first["prior"]), given @ BASE_FROM_OPTICAL), "the prior given while inactive was lost"

    request = SetInitialPose.Request()
    request.pose.header.frame_id, request.pose.header.stamp = "map", ns_to_stamp(wall_ns())
    other = MAP_FROM_BASE @ make_pose(np.eye(3), [-0.3, 0.0, 0.0])
    pose_msg_from_matrix(other, request.pose.pose.pose)
    response = d.service(SetInitialPose, f"/{NODE}/set_initial_pose", request, proc=proc)
    assert response.success and "x=" in response.message, response.message
    _localized(d, proc, _frame(d, 100), time.monotonic())
    call = oracle.calls()[-1]
    assert call["prior_source"] == "initialpose" and close(np.array(call["prior"]), other @ BASE_FROM_OPTICAL)
    request.pose.pose.pose.position.x = math.nan
    response = d.service(SetInitialPose, f"/{NODE}/set_initial_pose", request, proc=proc)
    assert not response.success and "NaN" in response.message, response.message


def test_compressed_images(ros, oracle):
    """``image_transport: compressed``: JPEG CompressedImage on <image_topic>/compressed,
    as compressed_image_transport publishes."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from neural_reloc.ros.conversions import compressed_image_msg_from_rgb, ns_to_stamp

    pubs = {}

    def compressed_pub(d):
        pubs["c"] = d.node.create_publisher(CompressedImage, "/camera/image_raw/compressed", qos_profile_sensor_data)
        return pubs["c"]

    proc, d = ros.start("image_transport:=compressed", image_pub=compressed_pub)
    stamp = wall_ns()
    info = camera_info(CAMERA)
    info.header.stamp = ns_to_stamp(stamp)
    d.info_pub.publish(info)
    msg = compressed_image_msg_from_rgb(grey_image(100))
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp), CAMERA_FRAME
    t0 = time.monotonic()
    pubs["c"].publish(msg)
    _localized(d, proc, stamp, t0)
    assert oracle.calls()[-1]["id"] == 100


def test_camera_info_is_matched_by_stamp_and_frames_are_checked(ros, oracle):
    """Each image uses the CameraInfo with its stamp (not merely the newest); a CameraInfo
    of another frame_id and an image frame that is not an optical frame are warned about."""
    from neural_reloc.ros.conversions import ns_to_stamp

    proc, d = ros.start()
    infos = {}
    for fx in (40.0, 60.0):  # two calibrations, each with its own image stamp
        info = _camera_info_msg(k=[fx, 0, 31.5, 0, fx, 23.5, 0, 0, 1], d=[0.0] * 5, p=[0.0] * 12)
        stamp = wall_ns()
        info.header.stamp = ns_to_stamp(stamp)
        d.info_pub.publish(info)
        infos[stamp] = fx
        d.spin(0.2)
    for stamp, fx in infos.items():  # the older one first: the newest CameraInfo is the other one
        t0 = time.monotonic()
        _frame(d, 100, stamp, info=False)
        _localized(d, proc, stamp, t0)
        assert oracle.calls()[-1]["camera"]["fx"] == fx
    # a CameraInfo of another frame, and an image in a body frame (not optical)
    stamp = wall_ns()
    info = _camera_info_msg(k=[50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1], d=[0.0] * 5, p=[0.0] * 12, frame_id="other_frame")
    info.header.stamp = ns_to_stamp(stamp)
    d.tf_static_pub.publish(_tf_message([static("base_link", "camera_link", np.eye(4))]))
    d.info_pub.publish(info)
    d.spin(0.3)
    from neural_reloc.ros.conversions import image_msg_from_rgb

    body = image_msg_from_rgb(grey_image(100))
    body.header.frame_id = "camera_link"
    _localized(d, proc, _frame(d, 100, stamp, info=False, image_msg=body), time.monotonic() - 1.0)
    log = stop(proc)
    assert "CameraInfo frame_id 'other_frame' is not the image's 'camera_link'" in log, log
    assert "'camera_link' does not look like an optical frame" in log, log

