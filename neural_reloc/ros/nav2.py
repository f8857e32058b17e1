"""The relocalization node's link to Nav2's AMCL (``nav2_mode``).

AMCL owns ``map -> odom`` in a Nav2 bringup; this node only tells it where the robot is,
on ``initialpose`` (as RViz's "2D Pose Estimate" does), and only when AMCL needs it:
:class:`~neural_reloc.ros.logic.Nav2Gate` decides from AMCL's own ``amcl_pose``. The
publisher is created when the node is configured, long before the first fix, so that
discovery has matched it with AMCL's subscription when the first fix goes out (a
publisher created at the first fix loses that message); a fix is not sent while nothing
subscribes, and one AMCL does not answer is sent again after ``nav2_min_interval_s``.
"""

from __future__ import annotations

import threading

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from . import conversions as conv
from .config import NodeConfig
from .logic import AmclPose, EchoFilter, Nav2Gate, nav2_covariance
from .tf_buffer import TransformLookupError


class Nav2Link:
    """``initialpose`` out, ``amcl_pose`` in, for one configured node."""

    def __init__(self, node, cfg: NodeConfig, tf, log_once, callback_group=None):
        self.node, self.tf, self.log_once = node, tf, log_once
        self.gate = Nav2Gate()
        self.echo = EchoFilter()
        self._lock = threading.Lock()
        self.topic = node.resolve_topic_name(cfg.initialpose_topic)
        # AMCL subscribes initialpose with the system default QoS (reliable, volatile).
        self.publisher = node.create_publisher(
            PoseWithCovarianceStamped, cfg.initialpose_topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        )
        # AMCL publishes amcl_pose reliable and transient local (depth 1): the last pose
        # reaches a late subscriber.
        amcl_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.subscription = node.create_subscription(
            PoseWithCovarianceStamped, cfg.amcl_pose_topic, self._on_amcl_pose, amcl_qos, callback_group=callback_group
        )

    def _on_amcl_pose(self, msg: PoseWithCovarianceStamped) -> None:
        cfg = self.node.cfg
        where = f"AMCL pose on {self.subscription.topic_name}"
        frame = msg.header.frame_id.lstrip("/")
        if frame != cfg.map_frame:
            self.log_once("nav2", f"{where} ignored: in frame {frame!r}, not {cfg.map_frame!r}")
            return
        try:
            map_from_base = conv.matrix_from_pose_msg(msg.pose.pose, where)
            cov = conv.covariance_from_list(msg.pose.covariance, where)
        except ValueError as e:
            self.log_once("nav2", f"{where} ignored: {e}")
            return
        odom_from_base = None
        if cfg.odom_frame:
            try:
                odom_from_base = self.tf.lookup(cfg.odom_frame, cfg.base_frame, conv.stamp_to_ns(msg.header.stamp), 0.0)
            except TransformLookupError:
                pass
        now_ns = self.node.get_clock().now().nanoseconds
        with self._lock:
            self.gate.amcl_pose(AmclPose(map_from_base, cov, now_ns, odom_from_base))

    def offer(self, cfg: NodeConfig, stamp_ns: int, base_pose, odom_from_base: np.ndarray | None,
              requested: bool = False) -> str:
        """Send the fix ``base_pose`` (map_from_base, 6x6 covariance) to AMCL if it needs
        it; returns why it was sent ('' when it was not)."""
        map_from_base, cov_base = base_pose
        now_ns = self.node.get_clock().now().nanoseconds
        with self._lock:
            reason = self.gate.reason(cfg, now_ns, map_from_base, odom_from_base, requested)
            if not reason:
                return ""
            if self.publisher.get_subscription_count() == 0:
                self.log_once("nav2", f"fix not sent to AMCL ({reason}): nothing subscribes to {self.topic}")
                return ""
            out = PoseWithCovarianceStamped()
            out.header.stamp, out.header.frame_id = conv.ns_to_stamp(stamp_ns), cfg.map_frame
            conv.pose_msg_from_matrix(map_from_base, out.pose.pose)
            out.pose.covariance = conv.covariance_to_list(
                nav2_covariance(cov_base, cfg.nav2_min_position_std_m, cfg.nav2_min_yaw_std_deg)
            )
            self.echo.sent(stamp_ns, map_from_base[:3, 3])
            self.publisher.publish(out)
            self.gate.sent(now_ns)
        self.node.get_logger().info(
            f"Nav2: sent the fix to AMCL on {self.topic} ({reason}): "
            f"x={map_from_base[0, 3]:.3f} y={map_from_base[1, 3]:.3f}"
        )
        return reason

    def destroy(self) -> None:
        self.node.destroy_subscription(self.subscription)
        self.node.destroy_publisher(self.publisher)
