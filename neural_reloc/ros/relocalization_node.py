"""The relocalization node: an rclpy lifecycle node around the ROS-free core.

Lifecycle: *configure* loads the map onto the device (``map_path``, ``device``) and
starts listening to TF; *activate* subscribes to the image, CameraInfo and
``/initialpose`` topics and starts the worker thread; *deactivate* and *cleanup* undo
that. With ``autostart`` the node configures and activates itself (no lifecycle
manager needed); if that fails on a bad map, setting ``map_path`` again retries.

Frames: every pose the node publishes or receives is in ``map_frame``. A map whose
bundle stores ``map_from_world`` (``neural-reloc align``) is wrapped once, at load
(:mod:`.map_frame`): priors are carried to the map's world before the relocalizer sees
them and results come back in ``map_frame``.

Per frame the worker takes the **newest** image (older ones are dropped while it is busy:
one slot, no queue), converts it (:mod:`.conversions`), looks up ``odom -> base_link`` at
the image stamp and the ``base_link -> camera`` extrinsic, and hands a
:class:`~neural_reloc.tracking.Frame` to the :class:`~neural_reloc.tracking.RelocalizationSession`
that the bag evaluator uses too, so live and offline runs take the same decisions
(prior from /initialpose, odometry since the last fix, the last fix, or retrieval).

Outputs: ``~/status`` (RelocalizationStatus, every attempt and every rejected input),
``~/debug_image`` (only while subscribed: :mod:`.debug_output`),
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

import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
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
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from neural_reloc.msg import RelocalizationStatus
from neural_reloc.srv import SetInitialPose

from ..geometry.frames import map_from_optical_from_map_from_base
from ..geometry.se3 import invert_pose
from ..tracking import Frame, RelocalizationSession
from . import conversions as conv
from .config import NodeConfig, validate_node_config
from .logic import (
    CameraInfoMatcher,
    NodeStats,
    base_from_optical_from_config,
    looks_like_optical_frame,
    tf_output,
)
from .debug_output import DebugImageOutput
from .map_frame import in_map_frame
from .nav2 import Nav2Link
from .node_inputs import Job, NodeInputs, Request
from .node_outputs import NodeOutputs
from .params import (
    NODE_NAME,
    check_value,
    config_from_node,
    declare_parameters,
    method_overrides_from_node,
    methods_with_settings,
)
from .tf_buffer import TfBroadcaster, TransformLookupError, make_transform_lookup

#: How long deactivation waits for the frame being localized to finish.
WORKER_JOIN_S = 60.0


class RelocalizationNode(NodeInputs, NodeOutputs, LifecycleNode):
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
        self._latest: Job | None = None
        self._last_job: Job | None = None
        self._requests: list[Request] = []
        self._initial = None  # node_inputs.InitialPose
        self._running = False
        self._worker: threading.Thread | None = None

        self._camera = None  # the newest CameraInfo's Camera (or None and why)
        self._camera_error = ""
        self._camera_msg_key: tuple | None = None
        self._cameras = CameraInfoMatcher()
        self._last_logged: dict[str, float] = {}
        self._last_prior_source = ""
        # Topic names as resolved in the node's namespace and remappings (for messages).
        self._topic = {name: self.resolve_topic_name(getattr(self.cfg, name))
                       for name in ("image_topic", "camera_info_topic", "initialpose_topic")}
        if self.cfg.image_transport == "compressed":  # image_transport's naming
            self._topic["image_topic"] = self._topic["image_topic"].rstrip("/") + "/compressed"

        self._io_group = MutuallyExclusiveCallbackGroup()
        self._tf_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._tf = None
        self._tf_pub: TfBroadcaster | None = None
        self._nav2: Nav2Link | None = None
        self._pose_pub = self._pose_cov_pub = None
        self._debug: DebugImageOutput | None = None
        self._subs: list = []
        self._initialpose_sub = None
        self._tf_timer = None

        # Always on, in every lifecycle state: failures (e.g. a map that does not load)
        # are reported on ~/status and /diagnostics before the node is configured.
        self._status_pub = self.create_publisher(RelocalizationStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics)
        self._relocalize_srv = self.create_service(
            Trigger, "~/relocalize", self._on_relocalize, callback_group=self._service_group
        )
        self._set_initial_pose_srv = self.create_service(
            SetInitialPose, "~/set_initial_pose", self._on_set_initial_pose, callback_group=self._io_group
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
        self._debug = DebugImageOutput(self)
        # From configure on (not activate): a prior given while inactive is kept for activation.
        self._initialpose_sub = self.create_subscription(
            PoseWithCovarianceStamped,
            cfg.initialpose_topic,
            self._on_initialpose,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
            callback_group=self._io_group,
        )
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
        if cfg.image_transport == "compressed":
            image_sub = self.create_subscription(
                CompressedImage, self._topic["image_topic"], self._on_compressed_image, image_qos,
                callback_group=self._io_group,
            )
        else:
            image_sub = self.create_subscription(
                Image, cfg.image_topic, self._on_image, image_qos, callback_group=self._io_group
            )
        self._subs = [
            image_sub,
            self.create_subscription(
                CameraInfo, cfg.camera_info_topic, self._on_camera_info, image_qos, callback_group=self._io_group
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
        if self._debug is not None:
            self._debug.destroy()
            self._debug = None
        if self._initialpose_sub is not None:
            self.destroy_subscription(self._initialpose_sub)
            self._initialpose_sub = None
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
        from ..geometry.alignment import IDENTITY
        from ..map_bundle import manifest_alignment, read_manifest
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
        relocalizer = load_relocalizer(cfg.map_path, device=cfg.device, overrides=overrides, method=method,
                                       global_prior=cfg.global_prior)
        map_from_world = manifest_alignment(read_manifest(cfg.map_path)) if cfg.apply_map_alignment else IDENTITY
        self.get_logger().info(
            f"loaded map {cfg.map_path} (method {method}"
            + (f", settings set here: {overrides['localization']}" if overrides else "")
            + f") in {time.perf_counter() - t0:.1f} s; "
            + ("its world is the map frame (no alignment"
               + ("" if cfg.apply_map_alignment else ": apply_map_alignment is false") + ")"
               if map_from_world.is_identity else
               f"{cfg.map_frame}_from_world: scale {map_from_world.scale:.6g}, translation "
               f"{np.round(map_from_world.translation, 4).tolist()}")
        )
        # The session (fix, map -> odom, metre thresholds) and every output are in map_frame.
        return RelocalizationSession(in_map_frame(relocalizer, map_from_world), cfg.tracking)

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

    # ================================================================== services
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
                self._requests.append(Request("relocalize"))
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

    def _localize(self, job: Job, request: Request | None) -> tuple[bool, str]:
        cfg = self.cfg
        msg, stamp_ns = job.msg, job.stamp_ns
        image_topic, info_topic = self._topic["image_topic"], self._topic["camera_info_topic"]
        entry, note = self._cameras.for_image(stamp_ns, msg.header.frame_id)
        if entry is None or entry.camera is None:
            reason = entry.error if entry is not None else ""
            return self._fail("camera_info", reason or f"no CameraInfo received on {info_topic} yet", stamp_ns)
        if note.startswith("CameraInfo frame_id"):
            self._log_once("camera_info", f"{note} ({info_topic}, {image_topic})")
        camera = entry.camera
        try:
            image_rgb = (conv.compressed_image_to_rgb if job.compressed else conv.image_to_rgb)(msg, image_topic)
            conv.check_image_matches_camera(image_rgb, camera, image_topic, info_topic)
        except ValueError as e:
            return self._fail("image", str(e), stamp_ns)
        optical_frame = cfg.camera_frame or msg.header.frame_id.lstrip("/")
        if optical_frame and not looks_like_optical_frame(optical_frame):
            self._log_once(
                "optical_frame",
                f"the camera frame {optical_frame!r} does not look like an optical frame (REP-103: x right, y "
                "down, z forward, named *_optical_frame); poses are computed as if it were one: set camera_frame "
                "or publish the images in the optical frame",
            )

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
        frame = Frame(image_rgb, camera, stamp_ns, odom_from_base, base_from_optical)

        initial = None
        if request is None or request.kind != "relocalize":  # ~/relocalize ignores priors
            with self._cond:
                initial, self._initial = self._initial, None
        if initial is not None:
            if base_from_optical is None:
                self._fail(
                    "initialpose", f"initial pose not used: {extrinsic_error}", stamp_ns, prior_source=initial.source
                )
            else:
                map_from_base = initial.map_from_base
                if initial.odom_from_base is not None and odom_from_base is not None:
                    # the robot moved since the initial pose's stamp: carry it by odometry
                    map_from_base = map_from_base @ invert_pose(initial.odom_from_base) @ odom_from_base
                with self._reloc_lock:
                    if self._session is not None:
                        self._session.set_initial_pose(
                            map_from_optical_from_map_from_base(map_from_base, base_from_optical), initial.source
                        )

        with self._reloc_lock:
            session = self._session
            if session is None:
                return self._fail("map", "no map loaded", stamp_ns)
            if request is not None and request.kind == "relocalize":
                result = session.relocalizer.localize(image_rgb, camera, None)  # global: retrieval
                session.observe(frame, result)
            else:
                result = session.process(frame)
            rejection = session.rejection_reason(result)
            prior_delta = session.prior_delta(result)
            relocalizer = session.relocalizer
            if not rejection:  # the fix's map -> odom, or none: a fix without odometry ends the older one
                has_odom = session.map_from_odom is not None and odom_from_base is not None
                self._map_from_odom = session.map_from_odom.copy() if has_odom else None
        accepted = not rejection
        self.stats.processed(result.total_latency_ms, accepted, result.inlier_ratio)
        self._last_prior_source = result.prior.source if result.prior is not None else ""
        if not accepted:
            self._fail("localization", f"frame at {stamp_ns / 1e9:.3f} s: {rejection}", publish=False)
        debug = self._debug
        if debug is not None and debug.wanted():  # drawn and rendered in its own thread, only when watched
            debug.offer(relocalizer, image_rgb, camera, result, rejection, stamp_ns, msg.header.frame_id or optical_frame)
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
