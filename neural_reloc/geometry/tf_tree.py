"""The TF tree, ROS-free: how a robot's frames relate over time, as tf2 keeps them.

One class for both users: the bag reader (:mod:`neural_reloc.bags`) fills it with a
whole bag's /tf and /tf_static, the node's listener (:mod:`neural_reloc.ros.tf_buffer`)
feeds it live from the same topics.

Each child frame has one parent and either a static ``parent_from_child`` or a series
of them at stamps (integer nanoseconds). A frame that changes parent, or changes
between static and dynamic, starts afresh (tf2 semantics). :meth:`TransformTree.lookup`
returns ``target_from_source``, composing the edges up to the two frames' common
ancestor, each dynamic edge interpolated at the stamp between its two nearest samples
(slerp on rotation, lerp on translation). The stamp ``0`` means the latest time every
dynamic edge on the way has data for (as tf2); ``None`` means static edges only.

How far an edge's samples reach is a :class:`Coverage`: by default (tf2) any gap
between two samples is bridged and nothing outside the samples is; a bag reader may
refuse long gaps (missing data) and accept stamps a little outside. Failures raise
:class:`TransformLookupError` (a LookupError) naming the frames, and
:class:`ExtrapolationError` when an edge has no data at the stamp.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .se3 import check_pose, interpolate_pose, invert_pose

NS_PER_S = 1_000_000_000


class TransformLookupError(LookupError):
    """No transform between two frames (unknown frame, frames not connected)."""


class ExtrapolationError(TransformLookupError):
    """An edge on the way has no data at the requested stamp."""


def normalize_frame_id(frame_id: str) -> str:
    """tf2 frame ids carry no leading slash (ROS 1 bags often do)."""
    return frame_id.lstrip("/")


def _fmt_s(ns: int) -> str:
    return f"{ns / NS_PER_S:.3f} s"


@dataclass(frozen=True)
class Coverage:
    """Which stamps an edge's samples answer for.

    ``max_gap_ns``: interpolation bridges gaps between samples up to this long (None:
    any). ``tolerance_ns``: the nearest sample still counts this close outside the
    samples, or outside a gap too long to bridge (0: tf2's behaviour).
    """

    max_gap_ns: int | None = None
    tolerance_ns: int = 0

    @classmethod
    def from_seconds(cls, max_gap_s: float | None, tolerance_s: float = 0.0) -> Coverage:
        gap = None if max_gap_s is None else int(max_gap_s * NS_PER_S)
        return cls(gap, int(tolerance_s * NS_PER_S))


@dataclass
class _Edge:
    parent: str
    static: bool = False
    stamps: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)

    def at(self, child: str, stamp_ns: int, cover: Coverage) -> np.ndarray:
        """``parent_from_child`` at ``stamp_ns``; ExtrapolationError when not covered."""
        if self.static:
            return self.poses[0]
        stamps, poses, tol = self.stamps, self.poses, cover.tolerance_ns
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return poses[i]
        what = f"transform {self.parent!r} -> {child!r} at {_fmt_s(stamp_ns)}"
        if i == 0 or i == len(stamps):
            gap = stamps[0] - stamp_ns if i == 0 else stamp_ns - stamps[-1]
            if gap <= tol:
                return poses[0] if i == 0 else poses[-1]
            side = "before the oldest" if i == 0 else "after the newest"
            raise ExtrapolationError(
                f"{what} would need extrapolation: {_fmt_s(gap)} {side} of its {len(stamps)} stamps "
                f"[{_fmt_s(stamps[0])}, {_fmt_s(stamps[-1])}]"
            )
        t0, t1 = stamps[i - 1], stamps[i]
        if cover.max_gap_ns is not None and t1 - t0 > cover.max_gap_ns:
            if stamp_ns - t0 <= tol:
                return poses[i - 1]
            if t1 - stamp_ns <= tol:
                return poses[i]
            raise ExtrapolationError(
                f"{what} has no data: it falls in a {_fmt_s(t1 - t0)} gap between its samples at "
                f"{_fmt_s(t0)} and {_fmt_s(t1)} (at most {_fmt_s(cover.max_gap_ns)} is bridged)"
            )
        return interpolate_pose(poses[i - 1], poses[i], (stamp_ns - t0) / (t1 - t0))


class TransformTree:
    """Thread-safe TF tree with time interpolation (ROS-free).

    ``cache_s``: a dynamic edge keeps the samples up to this much older than its newest
    (None: every sample, for a bag read whole). ``coverage``: the default of every
    lookup (see :class:`Coverage`).
    """

    def __init__(self, cache_s: float | None = 10.0, coverage: Coverage | None = None):
        if cache_s is not None and not cache_s > 0:
            raise ValueError(f"cache_s={cache_s} must be positive (or None: keep everything)")
        self.cache_ns = None if cache_s is None else int(cache_s * NS_PER_S)
        self.coverage = coverage or Coverage()
        self._edges: dict[str, _Edge] = {}  # by child frame
        self._cond = threading.Condition()

    # -- input -------------------------------------------------------------------------
    def set_transform(
        self, parent: str, child: str, stamp_ns: int, parent_from_child: np.ndarray, static: bool = False
    ) -> None:
        """Add one transform; ValueError (naming the frames) when it cannot be used."""
        parent, child = normalize_frame_id(parent), normalize_frame_id(child)
        if not parent or not child:
            raise ValueError(f"transform {parent!r} -> {child!r}: frame ids must not be empty")
        if parent == child:
            raise ValueError(f"transform {parent!r} -> {child!r}: a frame cannot be its own parent")
        T = check_pose(parent_from_child, f"transform {parent!r} -> {child!r}")
        stamp_ns = int(stamp_ns)
        with self._cond:
            if self._would_loop(parent, child):
                raise ValueError(f"transform {parent!r} -> {child!r} would close a loop in the TF tree")
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent=parent, static=static)
            if static:
                edge.stamps, edge.poses = [stamp_ns], [T]
            else:
                i = bisect.bisect_left(edge.stamps, stamp_ns)
                if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
                    edge.poses[i] = T  # a later message with the same stamp wins
                else:
                    edge.stamps.insert(i, stamp_ns)
                    edge.poses.insert(i, T)
                if self.cache_ns is not None:
                    drop = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
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

    # -- the tree ------------------------------------------------------------------------
    def frames(self) -> list[str]:
        with self._cond:
            return sorted(self._known())

    def _known(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def edges(self) -> list[tuple[str, str, str]]:
        """(parent, child, "static" or "dynamic") of every edge."""
        with self._cond:
            return sorted((e.parent, c, "static" if e.static else "dynamic") for c, e in self._edges.items())

    def describe(self) -> str:
        """One line listing the edges (for error messages)."""
        edges = self.edges()
        return ", ".join(f"{p} -> {c} ({kind})" for p, c, kind in edges) if edges else "no transforms"

    def _chain(self, frame: str) -> list[str]:
        """frame, its parent, ..., its root."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _branches(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """The children below the common ancestor on the source's and on the target's
        side (TransformLookupError naming the frames when there is none)."""
        known = self._known()
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
        return up_source[: up_source.index(common)], up_target[: up_target.index(common)]

    def path(self, a: str, b: str) -> list[str] | None:
        """Frames from a to b (both included) through the tree, None if unconnected."""
        a, b = normalize_frame_id(a), normalize_frame_id(b)
        if a == b:
            return [a]
        with self._cond:
            try:
                up_b, up_a = self._branches(a, b)
            except TransformLookupError:
                return None
            common = self._edges[(up_a or up_b)[-1]].parent
        return up_a + [common] + up_b[::-1]

    # -- lookups -------------------------------------------------------------------------
    def lookup(
        self, target: str, source: str, stamp_ns: int | None = 0, coverage: Coverage | None = None
    ) -> np.ndarray:
        """``target_from_source`` at ``stamp_ns`` (0: the latest common time; None:
        static edges only); ``coverage``: this lookup's, instead of the tree's."""
        target, source = normalize_frame_id(target), normalize_frame_id(source)
        if not target or not source:
            raise TransformLookupError(f"lookup {target!r} <- {source!r}: frame ids must not be empty")
        if target == source:
            return np.eye(4)
        cover = coverage or self.coverage
        with self._cond:
            src_edges, tgt_edges = self._branches(target, source)
            dynamic = [c for c in src_edges + tgt_edges if not self._edges[c].static]
            if stamp_ns is None and dynamic:
                e = self._edges[dynamic[0]]
                raise TransformLookupError(
                    f"lookup {target!r} <- {source!r}: transform {e.parent!r} -> {dynamic[0]!r} on the way "
                    "is not static"
                )
            if not stamp_ns:
                stamp_ns = min((self._edges[c].stamps[-1] for c in dynamic), default=0)
            common_from_source = np.eye(4)
            for child in reversed(src_edges):  # from the common ancestor down to source
                common_from_source = common_from_source @ self._edges[child].at(child, stamp_ns, cover)
            common_from_target = np.eye(4)
            for child in reversed(tgt_edges):
                common_from_target = common_from_target @ self._edges[child].at(child, stamp_ns, cover)
        return invert_pose(common_from_target) @ common_from_source

    def lookup_or_none(
        self, target: str, source: str, stamp_ns: int | None = 0, coverage: Coverage | None = None
    ) -> np.ndarray | None:
        """:meth:`lookup`, None instead of a TransformLookupError."""
        try:
            return self.lookup(target, source, stamp_ns, coverage)
        except TransformLookupError:
            return None

    def can_transform(self, target: str, source: str, stamp_ns: int | None = 0) -> bool:
        return self.lookup_or_none(target, source, stamp_ns) is not None

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
