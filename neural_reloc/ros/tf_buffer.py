"""A small TF buffer of our own, its /tf listener and broadcaster.

:class:`TransformBuffer` is ROS-free: it keeps, per child frame, its parent and a short
history of ``parent_from_child`` transforms (static ones without history), looks up
``target_from_source`` through the tree (up to the common ancestor) and interpolates each
edge between its two nearest stamps (slerp on rotation, lerp on translation). Lookups
at stamp 0 use the latest time every edge of the chain has data for, as tf2 does.
Failures raise :class:`TransformLookupError` (a LookupError) naming the frames, and
:class:`ExtrapolationError` when the stamp lies outside an edge's history.

On a real ROS 2 install :func:`make_transform_lookup` uses tf2_ros's Buffer and
TransformListener; where tf2_ros is absent (PyPI wheels) it uses :class:`TfListener`,
this buffer fed from /tf and /tf_static. Either way the node sees one interface:
``lookup(target, source, stamp_ns, timeout_s) -> 4x4``.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..geometry.se3 import check_pose, interpolate_pose, invert_pose

NS_PER_S = 1_000_000_000


class TransformLookupError(LookupError):
    """No transform between two frames (unknown frame, frames not connected)."""


class ExtrapolationError(TransformLookupError):
    """The requested stamp is outside the buffered history of an edge."""


@dataclass
class _Edge:
    parent: str
    static: bool = False
    stamps: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)


def _fmt_s(ns: int) -> str:
    return f"{ns / NS_PER_S:.3f} s"


class TransformBuffer:
    """Thread-safe TF tree with time interpolation (ROS-free)."""

    def __init__(self, cache_s: float = 10.0):
        if not cache_s > 0:
            raise ValueError(f"cache_s={cache_s} must be positive")
        self.cache_ns = int(cache_s * NS_PER_S)
        self._edges: dict[str, _Edge] = {}  # by child frame
        self._cond = threading.Condition()

    # -- input -------------------------------------------------------------------------
    def set_transform(
        self, parent: str, child: str, stamp_ns: int, parent_from_child: np.ndarray, static: bool = False
    ) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child:
            raise ValueError(f"transform {parent!r} -> {child!r}: frame ids must not be empty")
        if parent == child:
            raise ValueError(f"transform {parent!r} -> {child!r}: a frame cannot be its own parent")
        T = check_pose(parent_from_child, f"transform {parent!r} -> {child!r}")
        with self._cond:
            if self._would_loop(parent, child):
                raise ValueError(f"transform {parent!r} -> {child!r} would close a loop in the TF tree")
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                # tf2 semantics: a frame that changes parent (or kind) starts afresh.
                edge = self._edges[child] = _Edge(parent=parent, static=static)
            if static:
                edge.stamps, edge.poses = [int(stamp_ns)], [T]
            else:
                i = bisect.bisect_left(edge.stamps, int(stamp_ns))
                if i < len(edge.stamps) and edge.stamps[i] == int(stamp_ns):
                    edge.poses[i] = T
                else:
                    edge.stamps.insert(i, int(stamp_ns))
                    edge.poses.insert(i, T)
                cutoff = edge.stamps[-1] - self.cache_ns
                drop = bisect.bisect_left(edge.stamps, cutoff)
                if drop:
                    del edge.stamps[:drop], edge.poses[:drop]
            self._cond.notify_all()

    def _would_loop(self, parent: str, child: str) -> bool:
        frame, seen = parent, set()
        while frame in self._edges and frame not in seen:
            if frame == child:
                return True
            seen.add(frame)
            frame = self._edges[frame].parent
        return frame == child

    def clear(self) -> None:
        with self._cond:
            self._edges.clear()

    # -- queries -------------------------------------------------------------------------
    def frames(self) -> list[str]:
        with self._cond:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def _chain(self, frame: str) -> list[str]:
        """frame, its parent, ..., its root."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _edge_at(self, child: str, stamp_ns: int) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:
            return edge.poses[0]
        stamps = edge.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return edge.poses[i]
        if i == 0 or i == len(stamps):
            side = "before the oldest" if i == 0 else "after the newest"
            gap = stamps[0] - stamp_ns if i == 0 else stamp_ns - stamps[-1]
            raise ExtrapolationError(
                f"transform {edge.parent!r} -> {child!r} at {_fmt_s(stamp_ns)} would need extrapolation: "
                f"{_fmt_s(gap)} {side} of its {len(stamps)} stamps "
                f"[{_fmt_s(stamps[0])}, {_fmt_s(stamps[-1])}]"
            )
        t0, t1 = stamps[i - 1], stamps[i]
        return interpolate_pose(edge.poses[i - 1], edge.poses[i], (stamp_ns - t0) / (t1 - t0))

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """``target_from_source`` at ``stamp_ns`` (0: the latest common time)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if not target or not source:
            raise TransformLookupError(f"lookup {target!r} <- {source!r}: frame ids must not be empty")
        if target == source:
            return np.eye(4)
        with self._cond:
            known = set(self._edges) | {e.parent for e in self._edges.values()}
            for frame, role in ((target, "target"), (source, "source")):
                if frame not in known:
                    raise TransformLookupError(
                        f"lookup {target!r} <- {source!r}: {role} frame {frame!r} does not exist "
                        f"(known frames: {', '.join(sorted(known)) or 'none'})"
                    )
            up_source, up_target = self._chain(source), self._chain(target)
            common = next((f for f in up_source if f in set(up_target)), None)
            if common is None:
                raise TransformLookupError(
                    f"lookup {target!r} <- {source!r}: the frames are not connected "
                    f"({' -> '.join(up_source)} and {' -> '.join(up_target)} have different roots)"
                )
            src_edges = up_source[: up_source.index(common)]
            tgt_edges = up_target[: up_target.index(common)]
            if not stamp_ns:
                dynamic = [self._edges[c].stamps[-1] for c in src_edges + tgt_edges if not self._edges[c].static]
                stamp_ns = min(dynamic) if dynamic else 0
            common_from_source = np.eye(4)
            for child in reversed(src_edges):  # from the common ancestor down to source
                common_from_source = common_from_source @ self._edge_at(child, stamp_ns)
            common_from_target = np.eye(4)
            for child in reversed(tgt_edges):
                common_from_target = common_from_target @ self._edge_at(child, stamp_ns)
        return invert_pose(common_from_target) @ common_from_source

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformLookupError:
            return False

    def wait_for(self, target: str, source: str, stamp_ns: int = 0, timeout_s: float = 0.0) -> np.ndarray:
        """:meth:`lookup`, waiting up to ``timeout_s`` for the data to arrive."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                return self.lookup(target, source, stamp_ns)
            except TransformLookupError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                with self._cond:
                    self._cond.wait(timeout=min(remaining, 0.05))


# ------------------------------------------------------------------ ROS side
def tf_qos():
    """QoS of /tf (as tf2_ros: reliable, volatile, depth 100)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def tf_static_qos():
    """QoS of /tf_static (as tf2_ros: reliable, transient local, depth 100)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TfListener:
    """Feeds a :class:`TransformBuffer` from /tf and /tf_static (where tf2_ros is absent)."""

    backend = "neural_reloc"

    def __init__(self, node, cache_s: float = 10.0, callback_group=None):
        from tf2_msgs.msg import TFMessage

        self.node = node
        self.buffer = TransformBuffer(cache_s)
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
