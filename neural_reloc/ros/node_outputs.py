"""What the relocalization node publishes: a mixin of :class:`RelocalizationNode`.

Per attempt a ``~/status`` (RelocalizationStatus); per confident fix ``~/pose`` and
``~/pose_with_covariance``, TF (:func:`~neural_reloc.ros.logic.tf_output`: REP-105
``map -> odom`` republished stamped ``transform_tolerance_s`` ahead, or ``map ->
base_frame`` without odometry, nothing in Nav2 mode) and, in Nav2 mode, the fix to AMCL
when it needs it (:mod:`.nav2`); failures as one log line per kind and interval;
``/diagnostics`` on a timer. The mixin reads the node's state (``cfg``, publishers,
``_map_from_odom``...) and changes none of it but the log bookkeeping.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped

from neural_reloc.msg import RelocalizationStatus

from ..geometry.frames import map_from_optical_from_opencv_w2c
from ..methods.base import LocalizationResult
from . import conversions as conv
from .logic import TF_MAP_TO_BASE, TF_MAP_TO_ODOM, base_pose_with_covariance, diagnostic_level, tf_output

#: The same failure (digits ignored) is logged at most once per this many seconds.
LOG_REPEAT_S = 5.0


class NodeOutputs:
    """Publishing, logging and diagnostics of the relocalization node."""

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
            "debug_images_published": self._debug.published if self._debug is not None else 0,
            **snap,
        }
        st.values = [KeyValue(key=k, value=fmt(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self._diag_pub.publish(arr)


