"""The relocalization node: an rclpy lifecycle node around the ROS-free core.

Lifecycle: *configure* loads the map onto the device (``map_path``, ``device``) and
starts listening to TF; *activate* subscribes to the image, CameraInfo and
``/initialpose`` topics and starts the worker thread; *deactivate* and *cleanup* undo
that. With ``autostart`` the node configures and activates itself (no lifecycle
manager needed); if that fails on a bad map, setting ``map_path`` again retries.

Per frame the worker takes the **newest** image (older ones are dropped while it is busy:
one slot, no queue), converts it (:mod:`.conversions`), looks up ``odom -> base_link`` at
the image stamp and the ``base_link -> camera`` extrinsic, and hands a
:class:`~neural_reloc.tracking.Frame` to the :class:`~neural_reloc.tracking.RelocalizationSession`
that the bag evaluator uses too, so live and offline runs take the same decisions
(prior from /initialpose, odometry since the last fix, the last fix, or retrieval).

Outputs: ``~/status`` (RelocalizationStatus, every attempt and every rejected input),
``~/pose`` and ``~/pose_with_covariance`` (confident fixes, of the camera optical frame or
base_link in ``map``), ``/tf`` (REP-105 ``map -> odom``, or ``map -> base_link`` without an
odometry frame; nothing in Nav2 mode, where AMCL owns ``map -> odom``), ``initialpose``
to AMCL in Nav2 mode when AMCL needs it (:mod:`.nav2`), ``/diagnostics``, and the
``~/relocalize`` (std_srvs/Trigger) service, which answers at once and localizes the
newest frame in the worker (the result comes on ``~/status``).

Bad input (unsupported encoding, image/CameraInfo size mismatch, no CameraInfo yet, a
corrupt map, a NaN or wrongly framed prior) gives one clear log line per kind and
interval, a status message and the diagnostics' last failure; the node carries on.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from neural_reloc.msg import RelocalizationStatus

from ..geometry.camera import Camera
from ..geometry.frames import (
    map_from_optical_from_map_from_base,
    map_from_optical_from_opencv_w2c,
)
from ..geometry.se3 import invert_pose, yaw_from_rotation
from ..methods.base import LocalizationResult
from ..tracking import Frame, RelocalizationSession
from . import conversions as conv
from .config import NodeConfig, validate_node_config
from .logic import (
    TF_MAP_TO_BASE,
    TF_MAP_TO_ODOM,
    NodeStats,
    base_from_optical_from_config,
    base_pose_with_covariance,
    diagnostic_level,
    tf_output,
)
from .nav2 import Nav2Link
from .params import (
    NODE_NAME,
    check_value,
    config_from_node,
    declare_parameters,
    method_overrides_from_node,
    methods_with_settings,
)
from .tf_buffer import TfBroadcaster, TransformLookupError, make_transform_lookup

#: The same failure (digits ignored) is logged at most once per this many seconds.
LOG_REPEAT_S = 5.0
#: How long deactivation waits for the frame being localized to finish.
WORKER_JOIN_S = 60.0


@dataclass
class _Job:
    """An image as received, with the camera known at that moment."""

    msg: Image
    camera: Camera | None
    camera_error: str


@dataclass
class _Request:
    """A one-shot localization (~/relocalize, or /initialpose when not continuous)."""

    kind: str  # "relocalize" (global, retrieval) or "initialpose"


@dataclass
class _InitialPose:
    map_from_base: np.ndarray
    odom_from_base: np.ndarray | None  # at the initial pose's stamp, when available


class RelocalizationNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._specs = declare_parameters(self)
        self._spec_by_name = {s.name: s for s in self._specs}
        self.cfg: NodeConfig = validate_node_config(config_from_node(self, self._specs))
        self._state = "unconfigured"
        self.stats = NodeStats(window_s=max(5.0, 5 * self.cfg.diagnostics_period_s))

        # Relocalizer and session: swapped as a pair under _reloc_lock (held while localizing).
        self._reloc_lock = threading.RLock()
        self._session: RelocalizationSession | None = None
        self._map_path_loaded = ""
        self._map_method = ""
        self._pending_swap: tuple | None = None
        self._map_from_odom: np.ndarray | None = None

        # The frame slot, one-shot requests and the pending initial pose, under _cond.
        self._cond = threading.Condition()
        self._latest: _Job | None = None
        self._last_job: _Job | None = None
        self._requests: list[_Request] = []
        self._initial: _InitialPose | None = None
        self._running = False
        self._worker: threading.Thread | None = None

        self._camera: Camera | None = None
        self._camera_error = ""
        self._camera_msg_key: tuple | None = None
        self._last_logged: dict[str, float] = {}
        self._last_prior_source = ""
        # Topic names as resolved in the node's namespace and remappings (for messages).
        self._topic = {name: self.resolve_topic_name(getattr(self.cfg, name))
                       for name in ("image_topic", "camera_info_topic", "initialpose_topic")}

        self._io_group = MutuallyExclusiveCallbackGroup()
        self._tf_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._tf = None
        self._tf_pub: TfBroadcaster | None = None
        self._nav2: Nav2Link | None = None
        self._pose_pub = self._pose_cov_pub = None
        self._subs: list = []
        self._tf_timer = None

        # Always on, in every lifecycle state: failures (e.g. a map that does not load)
        # are reported on ~/status and /diagnostics before the node is configured.
        self._status_pub = self.create_publisher(RelocalizationStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics)
        self._relocalize_srv = self.create_service(
            Trigger, "~/relocalize", self._on_relocalize, callback_group=self._service_group
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    # ================================================================== lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        try:
            session = self._load_session(cfg)
        except Exception as e:  # noqa: BLE001 - any load failure is reported, not raised
            self.stats.map_error = f"cannot load map_path={cfg.map_path!r}: {e}"
            self._fail("map", self.stats.map_error, error=True)
            self._state = "unconfigured"
            return TransitionCallbackReturn.FAILURE
        self.stats.map_error = ""
        with self._reloc_lock:
            self._session = session
            self._map_path_loaded = cfg.map_path
            self._map_method = session.relocalizer.method
            self._map_from_odom = None
        self._tf = make_transform_lookup(self, cfg.tf_cache_s, self._tf_group)
        if cfg.nav2_mode:  # AMCL owns map -> odom: no /tf publisher at all
            self._nav2 = Nav2Link(self, cfg, self._tf, self._log_once, self._io_group)
        else:
            self._tf_pub = TfBroadcaster(self)
        self._pose_pub = self.create_publisher(PoseStamped, "~/pose", 10)
        self._pose_cov_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", 10)
        self.get_logger().info(
            f"configured: map {cfg.map_path} (method {self._map_method}, device {cfg.device}), "
            f"TF from {self._tf.backend}, images via {conv.image_backend()}, "
            + (f"Nav2 mode: fixes to AMCL on {self._nav2.topic}, no TF" if cfg.nav2_mode
               else f"publishing {tf_output(cfg) or 'no TF'}")
        )
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        image_qos = self._image_qos(cfg)
        self._subs = [
            self.create_subscription(Image, cfg.image_topic, self._on_image, image_qos, callback_group=self._io_group),
            self.create_subscription(
                CameraInfo, cfg.camera_info_topic, self._on_camera_info, image_qos, callback_group=self._io_group
            ),
            self.create_subscription(
                PoseWithCovarianceStamped,
                cfg.initialpose_topic,
                self._on_initialpose,
                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
                callback_group=self._io_group,
            ),
        ]
        self._tf_timer = self.create_timer(cfg.tf_republish_period_s, self._republish_map_to_odom)
        with self._cond:
            self._running = True
        self._worker = threading.Thread(target=self._worker_loop, name="relocalization_worker", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info(
            f"active: localizing {self._topic['image_topic']} ({cfg.image_qos} QoS) with "
            f"{self._topic['camera_info_topic']}"
            + (", continuously" if cfg.continuous else ", on request")
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._tf_timer is not None:
            self.destroy_timer(self._tf_timer)
            self._tf_timer = None
        with self._cond:
            self._latest = self._last_job = None
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._state == "active":
            self.on_deactivate(state)
        self._release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def autostart(self) -> bool:
        """Configure and activate (``autostart``); False when the map did not load."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error("autostart: configure failed; set map_path to a valid map to retry")
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop the worker and release the map (on exit, whatever the state)."""
        self._stop_worker()
        self._release()

    def _release(self) -> None:
        for pub in (self._pose_pub, self._pose_cov_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._pose_pub = self._pose_cov_pub = None
        if self._nav2 is not None:
            self._nav2.destroy()
            self._nav2 = None
        if self._tf_pub is not None:
            self._tf_pub.destroy()
            self._tf_pub = None
        if self._tf is not None:
            self._tf.destroy()
            self._tf = None
        with self._reloc_lock:
            self._session = None
            self._map_path_loaded = ""
            self._map_from_odom = None

    def _stop_worker(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
            self._requests = []
        if self._worker is not None:
            self._worker.join(timeout=WORKER_JOIN_S)
            self._worker = None

    @staticmethod
    def _image_qos(cfg: NodeConfig) -> QoSProfile:
        """``sensor_data``: rclpy's qos_profile_sensor_data (best effort, volatile) with
        the configured depth; ``reliable``: the same, reliable."""
        reliable = cfg.image_qos == "reliable"
        return QoSProfile(
            depth=cfg.image_qos_depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else qos_profile_sensor_data.reliability,
            durability=DurabilityPolicy.VOLATILE,
        )

    def _load_session(self, cfg: NodeConfig) -> RelocalizationSession:
        from ..map_bundle import read_manifest
        from ..map_loading import load_relocalizer, map_default_method

        if not cfg.map_path:
            raise ValueError("map_path is empty: set it to a map bundle directory (neural-reloc build-map --out)")
        method = cfg.method or map_default_method(read_manifest(cfg.map_path))
        # Only the settings a user set override the map's stored ones.
        overrides = method_overrides_from_node(self, self._specs, method)
        for other in methods_with_settings(self, self._specs):
            if other != method:
                self.get_logger().warning(f"parameters under {other}. are ignored: the method is {method}")
        t0 = time.perf_counter()
        relocalizer = load_relocalizer(cfg.map_path, device=cfg.device, overrides=overrides, method=method)
        self.get_logger().info(
            f"loaded map {cfg.map_path} (method {method}"
            + (f", settings set here: {overrides['localization']}" if overrides else "")
            + f") in {time.perf_counter() - t0:.1f} s"
        )
        return RelocalizationSession(relocalizer, cfg.tracking)

    # ================================================================== parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in self._spec_by_name}
        for name, value in changed.items():
            problem = check_value(self._spec_by_name[name], value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        try:
            cfg = validate_node_config(config_from_node(self, self._specs, changed))
        except ValueError as e:
            return SetParametersResult(successful=False, reason=str(e))
        if "map_path" in changed and self._state in ("inactive", "active") and cfg.map_path != self._map_path_loaded:
            try:
                session = self._load_session(cfg)
            except Exception as e:  # noqa: BLE001
                reason = f"cannot load map_path={cfg.map_path!r} (keeping {self._map_path_loaded}): {e}"
                self._fail("map", reason, error=True)
                return SetParametersResult(successful=False, reason=reason)
            self._pending_swap = (session, cfg.map_path)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        names = {p.name for p in params}
        self.cfg = cfg = config_from_node(self, self._specs)
        with self._reloc_lock:
            if self._pending_swap is not None:
                self._session, self._map_path_loaded = self._pending_swap
                self._map_method = self._session.relocalizer.method
                self._pending_swap = None
                self._map_from_odom = None  # a new map: a new map frame
                self.get_logger().info(f"switched to map {self._map_path_loaded}; tracking restarts")
            elif self._session is not None:
                self._session.config = cfg.tracking
        with self._cond:
            self._cond.notify_all()  # e.g. `continuous` changed
        if "map_path" in names and cfg.autostart and self._state == "unconfigured":
            self.get_logger().info(f"map_path set to {cfg.map_path!r}: retrying autostart")
            self.autostart()

    # ================================================================== inputs
    def _on_image(self, msg: Image) -> None:
        job = _Job(msg, self._camera, self._camera_error)
        with self._cond:
            dropped = self._latest is not None
            self._latest = self._last_job = job
            self._cond.notify_all()
        self.stats.received(dropped)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.k), tuple(msg.d), tuple(msg.p))
        if key == self._camera_msg_key:
            return  # unchanged (camera_info comes with every image)
        self._camera_msg_key = key
        try:
            self._camera = conv.camera_from_camera_info(msg, self._topic["camera_info_topic"], self.cfg.rectified)
            self._camera_error = ""
        except ValueError as e:
            self._camera, self._camera_error = None, str(e)
            self._fail("camera_info", str(e))

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        cfg = self.cfg
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        what = f"initial pose on {self._topic['initialpose_topic']}"
        try:
            frame_from_base = conv.matrix_from_pose_msg(msg.pose.pose, what)
        except ValueError as e:
            self._fail("initialpose", f"rejected {e}", stamp_ns=stamp_ns, prior_source="initialpose")
            return
        if self._nav2 is not None and self._nav2.echo.is_echo(stamp_ns, frame_from_base[:3, 3]):
            return  # our own Nav2 output coming back
        frame = msg.header.frame_id.lstrip("/")
        if frame == cfg.map_frame:
            map_from_base = frame_from_base
        else:
            try:
                if not frame:
                    raise TransformLookupError("header.frame_id is empty")
                map_from_base = self._tf.lookup(cfg.map_frame, frame, stamp_ns, 0.0) @ frame_from_base
            except TransformLookupError as e:
                self._fail(
                    "initialpose",
                    f"rejected {what}: it is in frame {frame!r}, not {cfg.map_frame!r}, and cannot be "
                    f"transformed to {cfg.map_frame!r}: {e}",
                    stamp_ns=stamp_ns,
                    prior_source="initialpose",
                )
                return
        odom_from_base = None
        if cfg.odom_frame:
            try:
                odom_from_base = self._tf.lookup(cfg.odom_frame, cfg.base_frame, stamp_ns, 0.0)
            except TransformLookupError:
                odom_from_base = None
        x, y, _ = map_from_base[:3, 3]
        yaw = math.degrees(yaw_from_rotation(map_from_base[:3, :3]))
        self.get_logger().info(f"{what}: x={x:.3f} y={y:.3f} yaw={yaw:.1f} deg (used for the next frame)")
        with self._cond:
            self._initial = _InitialPose(map_from_base, odom_from_base)
            if not cfg.continuous:
                self._requests.append(_Request("initialpose"))
            self._cond.notify_all()

    def _on_relocalize(self, request, response):
        """Answers at once (as Isaac ROS's trigger): the executor must not wait for a
        global relocalization (seconds), or TF, the map -> odom republication and the
        lifecycle services stop meanwhile. The worker localizes the newest frame next;
        its result comes on ~/status (and, accepted, on every output)."""
        if self._state != "active":
            response.success, response.message = False, f"node is {self._state}, not active"
            return response
        with self._cond:
            job = self._latest or self._last_job
            if job is None:
                response.success = False
                response.message = f"no image received on {self._topic['image_topic']} yet"
                return response
            if not any(r.kind == "relocalize" for r in self._requests):
                self._requests.append(_Request("relocalize"))
            self._cond.notify_all()
        stamp = conv.stamp_to_ns(job.msg.header.stamp) / 1e9
        response.success = True
        response.message = (
            f"relocalizing the newest frame (stamp {stamp:.3f} s, or a newer one) by global retrieval; "
            "the result comes on ~/status"
        )
        return response

    # ================================================================== the worker
    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: not self._running or self._requests or (self.cfg.continuous and self._latest is not None)
                )
                if not self._running:
                    return
                request = self._requests.pop(0) if self._requests else None
                if request is None and not self.cfg.continuous:
                    continue
                job = self._latest or (self._last_job if request is not None else None)
                self._latest = None
            if job is None:
                continue
            try:
                _, message = self._localize(job, request)
            except Exception as e:  # noqa: BLE001 - the worker must survive anything
                message = f"internal error: {type(e).__name__}: {e}"
                try:
                    self.get_logger().error(traceback.format_exc())
                    self._fail("internal", message)
                except Exception:  # noqa: BLE001 - reporting must not end the worker either
                    traceback.print_exc()
            if request is not None and request.kind == "relocalize":
                self.get_logger().info(f"~/relocalize: {message}")

    def _localize(self, job: _Job, request: _Request | None) -> tuple[bool, str]:
        cfg = self.cfg
        msg = job.msg
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        if job.camera is None:
            return self._fail(
                "camera_info",
                job.camera_error or f"no CameraInfo received on {self._topic['camera_info_topic']} yet", stamp_ns,
            )
        try:
            image_rgb = conv.image_to_rgb(msg, self._topic["image_topic"])
            conv.check_image_matches_camera(
                image_rgb, job.camera, self._topic["image_topic"], self._topic["camera_info_topic"]
            )
        except ValueError as e:
            return self._fail("image", str(e), stamp_ns)
        optical_frame = cfg.camera_frame or msg.header.frame_id.lstrip("/")

        base_from_optical, extrinsic_error = self._extrinsic(cfg, optical_frame, stamp_ns)
        odom_from_base = None
        if cfg.odom_frame:
            try:
                odom_from_base = self._tf.lookup(cfg.odom_frame, cfg.base_frame, stamp_ns, cfg.tf_lookup_timeout_s)
            except TransformLookupError as e:
                self._log_once("odometry", f"frame at {stamp_ns / 1e9:.3f} s used without odometry: {e}")
            if odom_from_base is not None and base_from_optical is None:
                self._log_once("extrinsic", f"frame used without odometry: {extrinsic_error}")
                odom_from_base = None
        frame = Frame(image_rgb, job.camera, stamp_ns, odom_from_base, base_from_optical)

        initial = None
        if request is None or request.kind != "relocalize":  # ~/relocalize ignores priors
            with self._cond:
                initial, self._initial = self._initial, None
        if initial is not None:
            if base_from_optical is None:
                self._fail(
                    "initialpose", f"initial pose not used: {extrinsic_error}", stamp_ns, prior_source="initialpose"
                )
            else:
                map_from_base = initial.map_from_base
                if initial.odom_from_base is not None and odom_from_base is not None:
                    # the robot moved since the initial pose's stamp: carry it by odometry
                    map_from_base = map_from_base @ invert_pose(initial.odom_from_base) @ odom_from_base
                with self._reloc_lock:
                    if self._session is not None:
                        self._session.set_initial_pose(
                            map_from_optical_from_map_from_base(map_from_base, base_from_optical)
                        )

        with self._reloc_lock:
            session = self._session
            if session is None:
                return self._fail("map", "no map loaded", stamp_ns)
            if request is not None and request.kind == "relocalize":
                result = session.relocalizer.localize(image_rgb, job.camera, None)  # global: retrieval
                session.observe(frame, result)
            else:
                result = session.process(frame)
            rejection = session.rejection_reason(result)
            prior_delta = session.prior_delta(result)
            if not rejection:  # the fix's map -> odom, or none: a fix without odometry ends the older one
                has_odom = session.map_from_odom is not None and odom_from_base is not None
                self._map_from_odom = session.map_from_odom.copy() if has_odom else None
        accepted = not rejection
        self.stats.processed(result.total_latency_ms, accepted, result.inlier_ratio)
        self._last_prior_source = result.prior.source if result.prior is not None else ""
        if not accepted:
            self._fail("localization", f"frame at {stamp_ns / 1e9:.3f} s: {rejection}", publish=False)
        return self._publish_result(cfg, stamp_ns, optical_frame, result, rejection, prior_delta,
                                    base_from_optical, extrinsic_error, odom_from_base,
                                    requested=request is not None and request.kind == "relocalize")

    def _extrinsic(self, cfg: NodeConfig, optical_frame: str, stamp_ns: int) -> tuple[np.ndarray | None, str]:
        """``base_from_optical`` (or None and why)."""
        if cfg.extrinsic_source == "parameter":
            return base_from_optical_from_config(cfg), ""
        if not optical_frame:
            return None, "the image's header.frame_id is empty and camera_frame is not set"
        if optical_frame == cfg.base_frame:
            return np.eye(4), ""
        try:
            return self._tf.lookup(cfg.base_frame, optical_frame, stamp_ns, cfg.tf_lookup_timeout_s), ""
        except TransformLookupError as e:
            return None, f"no camera extrinsic {cfg.base_frame} -> {optical_frame} on TF: {e}"

    # ================================================================== outputs
    def _publish_result(
        self, cfg, stamp_ns, optical_frame, result: LocalizationResult, rejection, prior_delta,
        base_from_optical, extrinsic_error, odom_from_base, requested: bool = False,
    ) -> tuple[bool, str]:
        accepted = not rejection
        status = self._status(stamp_ns, rejection, self._last_prior_source)
        status.method = result.method
        status.num_matches, status.num_inliers = int(result.num_matches), int(result.num_inliers)
        status.inlier_ratio = float(result.inlier_ratio)
        status.iterations = int(result.iterations)
        status.stage_names = list(result.latency_ms)
        status.stage_latency_ms = [float(v) for v in result.latency_ms.values()]
        status.total_latency_ms = float(result.total_latency_ms)
        status.prior_translation_delta_m, status.prior_rotation_delta_deg = (float(v) for v in prior_delta)
        status.child_frame_id = optical_frame if cfg.pose_of == "camera" else cfg.base_frame
        if not accepted:
            self._status_pub.publish(status)
            return False, rejection

        map_from_optical = map_from_optical_from_opencv_w2c(result.w2c_opencv)
        cov_optical = np.asarray(result.covariance, dtype=np.float64)
        base_pose = None
        if base_from_optical is not None:
            base_pose = base_pose_with_covariance(map_from_optical, cov_optical, base_from_optical)
        if cfg.pose_of == "camera":
            pose = (map_from_optical, cov_optical)
        elif base_pose is not None:
            pose = base_pose
        else:
            pose = None
            self._log_once("extrinsic", f"pose_of=base: ~/pose not published: {extrinsic_error}")
        if pose is not None:
            conv.pose_msg_from_matrix(pose[0], status.pose.pose)
            status.pose.covariance = conv.covariance_to_list(pose[1])
        self._status_pub.publish(status)

        header_stamp = conv.ns_to_stamp(stamp_ns)
        if pose is not None and self._pose_pub is not None:
            out = PoseStamped()
            out.header.stamp, out.header.frame_id = header_stamp, cfg.map_frame
            conv.pose_msg_from_matrix(pose[0], out.pose)
            self._pose_pub.publish(out)
            out_cov = PoseWithCovarianceStamped()
            out_cov.header = out.header
            out_cov.pose = status.pose
            self._pose_cov_pub.publish(out_cov)

        tf_out = tf_output(cfg)
        if tf_out == TF_MAP_TO_ODOM:
            self._republish_map_to_odom()
        elif tf_out == TF_MAP_TO_BASE and self._tf_pub is not None:
            if base_pose is not None:
                self._tf_pub.send([conv.transform_stamped(base_pose[0], cfg.map_frame, cfg.base_frame, stamp_ns)])
            else:
                self._log_once("extrinsic", f"no {cfg.map_frame} -> {cfg.base_frame} on /tf: {extrinsic_error}")

        if self._nav2 is not None:
            if base_pose is None:
                self._log_once("nav2", f"fix not sent to AMCL: {extrinsic_error}")
            else:
                self._nav2.offer(cfg, stamp_ns, base_pose, odom_from_base, requested)
        t = pose[0][:3, 3] if pose is not None else map_from_optical[:3, 3]
        return True, (
            f"localized at x={t[0]:.3f} y={t[1]:.3f} z={t[2]:.3f} ({status.child_frame_id} in {cfg.map_frame}), "
            f"{result.num_inliers}/{result.num_matches} inliers, prior {status.prior_source or 'none'}, "
            f"{result.total_latency_ms:.0f} ms"
        )

    def _republish_map_to_odom(self) -> None:
        cfg = self.cfg
        map_from_odom = self._map_from_odom
        if map_from_odom is None or tf_output(cfg) != TF_MAP_TO_ODOM or self._tf_pub is None:
            return
        stamp_ns = self.get_clock().now().nanoseconds + int(cfg.transform_tolerance_s * 1e9)
        self._tf_pub.send([conv.transform_stamped(map_from_odom, cfg.map_frame, cfg.odom_frame, stamp_ns)])

    def _status(self, stamp_ns: int | None, reason: str, prior_source: str = "") -> RelocalizationStatus:
        status = RelocalizationStatus()
        status.header.frame_id = self.cfg.map_frame
        conv.ns_to_stamp(stamp_ns if stamp_ns is not None else self.get_clock().now().nanoseconds, status.header.stamp)
        status.method = self._map_method or self.cfg.method
        status.success = not reason
        status.reason = reason
        status.prior_source = prior_source
        status.pose.pose.orientation.w = 1.0
        status.prior_translation_delta_m = status.prior_rotation_delta_deg = math.nan
        return status

    def _fail(
        self, kind: str, reason: str, stamp_ns: int | None = None, prior_source: str = "",
        publish: bool = True, error: bool = False,
    ) -> tuple[bool, str]:
        """Report a failure: a log line (once per kind and interval), the diagnostics'
        last failure and (``publish``) a status message."""
        self.stats.failure(reason)
        self._log_once(kind, reason, error=error)
        if publish:
            self._status_pub.publish(self._status(stamp_ns, reason, prior_source))
        return False, reason

    def _log_once(self, kind: str, text: str, error: bool = False) -> None:
        key = kind + ":" + re.sub(r"[-+]?\d[\d.e+-]*", "#", text)
        now = time.monotonic()
        if now - self._last_logged.get(key, -math.inf) < LOG_REPEAT_S:
            return
        self._last_logged[key] = now
        # One call site per severity: rclpy refuses a call site that changes severity.
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    def _publish_diagnostics(self) -> None:
        cfg = self.cfg
        snap = self.stats.snapshot()
        session = self._session
        level, message = diagnostic_level(snap, self._state, session is not None, self.stats.window_s)
        st = DiagnosticStatus()
        st.level = bytes([level])
        st.name = f"{self.get_name()}: relocalization"
        st.message = message
        st.hardware_id = self._map_path_loaded or cfg.map_path

        def fmt(v):
            if isinstance(v, float):
                return "nan" if math.isnan(v) else f"{v:.3f}"
            return str(v)

        values = {
            "lifecycle_state": self._state,
            "map_loaded": session is not None,
            "map_path": self._map_path_loaded or cfg.map_path,
            "method": self._map_method,
            "device": cfg.device,
            "prior_source": self._last_prior_source,
            "failures_in_a_row": session.failures_in_a_row if session is not None else 0,
            "tf_backend": self._tf.backend if self._tf is not None else "",
            "image_backend": conv.image_backend(),
            **snap,
        }
        st.values = [KeyValue(key=k, value=fmt(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self._diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = RelocalizationNode()
    except ValueError as e:  # a parameter with a wrong type, range or choice
        rclpy.logging.get_logger(NODE_NAME).fatal(str(e))
        rclpy.try_shutdown()
        return 2
    if node.cfg.autostart:
        node.autostart()
    # One executor thread: the callbacks only hand messages over (localization runs in
    # the node's worker thread) and never wait for it (~/relocalize answers at once).
    # rclpy's MultiThreadedExecutor spent a whole core on its own bookkeeping under a
    # 30 Hz camera stream and starved the worker of the GIL (0.14 fixes/s, 4.4 s latency
    # p50 on 2 cores; single-threaded: 3.3 fixes/s, 236 ms).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=5.0)  # no callback runs after this
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
