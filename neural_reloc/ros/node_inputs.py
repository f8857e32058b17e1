"""What the relocalization node takes in: a mixin of :class:`RelocalizationNode`.

Images (``sensor_msgs/Image``, or ``CompressedImage`` on ``<image_topic>/compressed``
with ``image_transport: compressed``) go into the one-frame slot the worker takes the
newest frame from; they are converted there, not here. CameraInfo is converted once per
change and kept by stamp: the worker pairs each image with the CameraInfo of its stamp,
else the newest (:class:`~neural_reloc.ros.logic.CameraInfoMatcher`). Initial poses come
from ``/initialpose`` and the ``~/set_initial_pose`` service, both from configure on, so
that a prior given while the node is inactive is kept for the first frame after
activation. The callbacks only convert and hand over; they never wait for the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped

from ..geometry.se3 import yaw_from_rotation
from . import conversions as conv
from .logic import CameraEntry
from .tf_buffer import TransformLookupError


@dataclass
class Job:
    """An image as received (``compressed``: a sensor_msgs/CompressedImage)."""

    msg: object
    compressed: bool = False

    @property
    def stamp_ns(self) -> int:
        return conv.stamp_to_ns(self.msg.header.stamp)


@dataclass
class Request:
    """A one-shot localization (~/relocalize, or an initial pose when not continuous)."""

    kind: str  # "relocalize" (global, retrieval) or "initialpose"


@dataclass
class InitialPose:
    map_from_base: np.ndarray
    odom_from_base: np.ndarray | None  # at the initial pose's stamp, when available
    #: the prior's source for the core (PosePrior's closed set): the topic and the
    #: ~/set_initial_pose service both give an "initialpose"
    source: str = "initialpose"


class NodeInputs:
    """Subscriptions' and input services' callbacks of the relocalization node."""

    def _on_image(self, msg) -> None:
        self._hand_over(Job(msg))

    def _on_compressed_image(self, msg) -> None:
        self._hand_over(Job(msg, compressed=True))

    def _hand_over(self, job: Job) -> None:
        with self._cond:
            dropped = self._latest is not None
            self._latest = self._last_job = job
            self._cond.notify_all()
        self.stats.received(dropped)

    def _on_camera_info(self, msg) -> None:
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.k), tuple(msg.d), tuple(msg.p))
        if key != self._camera_msg_key:  # converted once per change (it comes with every image)
            self._camera_msg_key = key
            try:
                self._camera = conv.camera_from_camera_info(msg, self._topic["camera_info_topic"], self.cfg.rectified)
                self._camera_error = ""
            except ValueError as e:
                self._camera, self._camera_error = None, str(e)
                self._fail("camera_info", str(e))
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        self._cameras.add(CameraEntry(stamp_ns, msg.header.frame_id, self._camera, self._camera_error))

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        self._take_initial_pose(msg, f"initial pose on {self._topic['initialpose_topic']}")

    def _on_set_initial_pose(self, request, response):
        response.success, response.message = self._take_initial_pose(request.pose, "initial pose from ~/set_initial_pose")
        return response

    def _take_initial_pose(self, msg: PoseWithCovarianceStamped, what: str) -> tuple[bool, str]:
        """Keep ``msg`` (base_frame in map_frame, or in a frame TF connects to it) as the
        prior of the next frame; (accepted, why)."""
        cfg = self.cfg
        source = "initialpose"
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        try:
            frame_from_base = conv.matrix_from_pose_msg(msg.pose.pose, what)
        except ValueError as e:
            return self._fail("initialpose", f"rejected {e}", stamp_ns=stamp_ns, prior_source=source)
        if self._nav2 is not None and self._nav2.echo.is_echo(stamp_ns, frame_from_base[:3, 3]):
            return False, "our own fix sent to AMCL"
        frame = msg.header.frame_id.lstrip("/")
        if frame == cfg.map_frame:
            map_from_base = frame_from_base
        else:
            try:
                if not frame:
                    raise TransformLookupError("header.frame_id is empty")
                if self._tf is None:
                    raise TransformLookupError(f"no TF before the node is configured (state {self._state})")
                map_from_base = self._tf.lookup(cfg.map_frame, frame, stamp_ns, 0.0) @ frame_from_base
            except TransformLookupError as e:
                return self._fail(
                    "initialpose",
                    f"rejected {what}: it is in frame {frame!r}, not {cfg.map_frame!r}, and cannot be "
                    f"transformed to {cfg.map_frame!r}: {e}",
                    stamp_ns=stamp_ns,
                    prior_source=source,
                )
        odom_from_base = None
        if cfg.odom_frame and self._tf is not None:
            try:
                odom_from_base = self._tf.lookup(cfg.odom_frame, cfg.base_frame, stamp_ns, 0.0)
            except TransformLookupError:
                odom_from_base = None
        x, y, _ = map_from_base[:3, 3]
        yaw = math.degrees(yaw_from_rotation(map_from_base[:3, :3]))
        when = "the next frame" if self._state == "active" else "the first frame after activation"
        message = f"{what}: x={x:.3f} y={y:.3f} yaw={yaw:.1f} deg (used for {when})"
        self.get_logger().info(message)
        with self._cond:
            self._initial = InitialPose(map_from_base, odom_from_base, source)
            if not cfg.continuous:
                self._requests.append(Request("initialpose"))
            self._cond.notify_all()
        return True, message
