"""``~/debug_image``: the relocalization node's picture of each attempt, when someone looks.

Nothing is drawn or rendered while ``~/debug_image`` has no subscriber (the worker checks
``get_subscription_count`` before handing anything over). With one, the worker hands the
attempt (camera image, camera, result, why it was rejected) to this object's own thread
and goes on with the next frame: one slot, the newest attempt wins, so a slow render
never holds up localization or queues up. The thread renders the map at the estimate
(in the map's world: the result is in ``map_frame``, see :mod:`.map_frame`), draws
(:mod:`neural_reloc.eval.debug_image`) and publishes an RGB image of the camera's size
with the camera image's header (stamp, optical frame).
"""

from __future__ import annotations

import threading
import traceback

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..eval.debug_image import draw_debug_image, render_at_estimate, result_text
from . import conversions as conv
from .map_frame import MapFrameRelocalizer

TOPIC = "~/debug_image"


class DebugImageOutput:
    def __init__(self, node):
        self.node = node
        self.publisher = node.create_publisher(Image, TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.published = 0
        self._cond = threading.Condition()
        self._slot = None
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="debug_image", daemon=True)
        self._thread.start()

    def wanted(self) -> bool:
        return self.publisher.get_subscription_count() > 0

    def offer(self, relocalizer, image_rgb, camera, result, rejection: str, stamp_ns: int, frame_id: str) -> None:
        """Hand an attempt over (the caller checked :meth:`wanted`); never waits."""
        with self._cond:
            self._slot = (relocalizer, image_rgb, camera, result, rejection, stamp_ns, frame_id)
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: not self._running or self._slot is not None)
                if not self._running:
                    return
                job, self._slot = self._slot, None
            try:
                self._publish(*job)
            except Exception:  # noqa: BLE001 - a drawing failure must not end the thread
                self.node.get_logger().error(f"~/debug_image: {traceback.format_exc()}")

    def _publish(self, relocalizer, image_rgb, camera, result, rejection, stamp_ns, frame_id) -> None:
        cfg = self.node.cfg.debug_image  # read per image: the settings may change at run time
        render = None
        if result.w2c_opencv is not None:
            w2c_world = result.w2c_opencv
            if isinstance(relocalizer, MapFrameRelocalizer):  # results are in map; the field is in world
                relocalizer, w2c_world = relocalizer.inner, relocalizer.world_from_map.apply_w2c_opencv(w2c_world)
            render = render_at_estimate(relocalizer, camera, w2c_world, cfg.render_max_size)
        image = draw_debug_image(image_rgb, render, result.inlier_uv,
                                 result_text(result, rejection), failed=bool(rejection), blend=cfg.blend,
                                 max_inliers=cfg.max_inliers)
        msg = conv.image_msg_from_rgb(image, "rgb8")
        msg.header.stamp, msg.header.frame_id = conv.ns_to_stamp(stamp_ns), frame_id
        self.publisher.publish(msg)
        self.published += 1

    def destroy(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._thread.join(timeout=30.0)
        self.node.destroy_publisher(self.publisher)
