"""The node's side of the TF tree: its /tf listener and broadcaster.

The tree itself is ROS-free (:class:`~neural_reloc.geometry.tf_tree.TransformTree`, the
same one the bag reader fills). On a real ROS 2 install :func:`make_transform_lookup`
uses tf2_ros's Buffer and TransformListener; where tf2_ros is absent (PyPI wheels) it
uses :class:`TfListener`, which only converts /tf and /tf_static messages and feeds a
TransformTree. Either way the node sees one interface:
``lookup(target, source, stamp_ns, timeout_s) -> 4x4``, raising
:class:`TransformLookupError` (:class:`ExtrapolationError` when the stamp is outside the
data) naming the frames.
"""

from __future__ import annotations

import numpy as np

from ..geometry.tf_tree import ExtrapolationError, TransformLookupError, TransformTree

__all__ = [
    "ExtrapolationError",
    "Tf2RosLookup",
    "TfBroadcaster",
    "TfListener",
    "TransformLookupError",
    "make_transform_lookup",
    "tf_qos",
    "tf_static_qos",
]


def tf_qos():
    """QoS of /tf (as tf2_ros: reliable, volatile, depth 100)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def tf_static_qos():
    """QoS of /tf_static (as tf2_ros: reliable, transient local, depth 100)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TfListener:
    """Feeds a :class:`TransformTree` from /tf and /tf_static (where tf2_ros is absent)."""

    backend = "neural_reloc"

    def __init__(self, node, cache_s: float = 10.0, callback_group=None):
        from tf2_msgs.msg import TFMessage

        self.node = node
        self.buffer = TransformTree(cache_s)
        self._rejected: set[tuple[str, str]] = set()
        self._subs = [
            node.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos(), callback_group=callback_group),
            node.create_subscription(
                TFMessage, "/tf_static", self._on_tf_static, tf_static_qos(), callback_group=callback_group
            ),
        ]

    def _add(self, msg, static: bool) -> None:
        from .conversions import matrix_from_transform_msg, stamp_to_ns

        for t in msg.transforms:
            parent, child = t.header.frame_id, t.child_frame_id
            try:
                T = matrix_from_transform_msg(t.transform, f"/tf{'_static' if static else ''} {parent} -> {child}")
                self.buffer.set_transform(parent, child, stamp_to_ns(t.header.stamp), T, static=static)
            except ValueError as e:
                if (parent, child) not in self._rejected:  # once per edge, not per message
                    self._rejected.add((parent, child))
                    self.node.get_logger().warning(f"ignoring a transform: {e}")

    def _on_tf(self, msg) -> None:
        self._add(msg, static=False)

    def _on_tf_static(self, msg) -> None:
        self._add(msg, static=True)

    def lookup(self, target: str, source: str, stamp_ns: int = 0, timeout_s: float = 0.0) -> np.ndarray:
        return self.buffer.wait_for(target, source, stamp_ns, timeout_s)

    def destroy(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []


class Tf2RosLookup:  # pragma: no cover - needs tf2_ros (a real ROS 2 install)
    """The same interface over tf2_ros.Buffer + TransformListener."""

    backend = "tf2_ros"

    def __init__(self, node, cache_s: float = 10.0, callback_group=None):
        import tf2_ros
        from rclpy.duration import Duration

        self.node = node
        self._tf2 = tf2_ros
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_s))
        self._listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)

    def lookup(self, target: str, source: str, stamp_ns: int = 0, timeout_s: float = 0.0) -> np.ndarray:
        from rclpy.duration import Duration
        from rclpy.time import Time

        from .conversions import matrix_from_transform_msg

        tf2 = self._tf2
        try:
            t = self.buffer.lookup_transform(
                target, source, Time(nanoseconds=int(stamp_ns)), timeout=Duration(seconds=max(0.0, timeout_s))
            )
        except tf2.ExtrapolationException as e:
            raise ExtrapolationError(f"lookup {target!r} <- {source!r}: {e}") from e
        except (tf2.LookupException, tf2.ConnectivityException, tf2.TransformException) as e:
            raise TransformLookupError(f"lookup {target!r} <- {source!r}: {e}") from e
        return matrix_from_transform_msg(t.transform, f"{target} <- {source}")

    def destroy(self) -> None:
        self._listener.unregister()


def make_transform_lookup(node, cache_s: float = 10.0, callback_group=None):
    """tf2_ros when importable, else our own listener; both have ``lookup()``."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return TfListener(node, cache_s, callback_group)
    return Tf2RosLookup(node, cache_s, callback_group)  # pragma: no cover


class TfBroadcaster:
    """Publishes transforms on /tf (the wire format of tf2_ros.TransformBroadcaster)."""

    def __init__(self, node):
        from tf2_msgs.msg import TFMessage

        self._msg_type = TFMessage
        self.node = node
        self.publisher = node.create_publisher(TFMessage, "/tf", tf_qos())

    def send(self, transforms: list) -> None:
        self.publisher.publish(self._msg_type(transforms=list(transforms)))

    def destroy(self) -> None:
        self.node.destroy_publisher(self.publisher)
