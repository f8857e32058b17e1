"""A small tf2-style transform buffer for offline use (no ROS): the /tf and /tf_static
of a whole bag, looked up between any two connected frames at any stamp.

Each edge is ``parent_from_child`` as the TF message states it; dynamic edges are
:class:`~neural_reloc.geometry.trajectory.PoseTrack` series interpolated at the lookup
stamp (slerp + lerp), static edges hold at all times. A lookup composes the edges on the
path between the two frames (in either direction), as ``tf2``'s ``lookup_transform``
does, and returns ``target_from_source``.
"""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

from ..geometry.se3 import check_pose, invert_pose
from ..geometry.trajectory import PoseTrack
from .messages import normalize_frame_id


class TransformBuffer:
    def __init__(self, max_gap_ns: int | None = None, tolerance_ns: int = 0):
        self.max_gap_ns = max_gap_ns
        self.tolerance_ns = tolerance_ns
        self._static: dict[tuple[str, str], np.ndarray] = {}
        self._samples: dict[tuple[str, str], tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        self._tracks: dict[tuple[str, str], PoseTrack] = {}
        self._neighbours: dict[str, set[str]] = defaultdict(set)

    # ------------------------------------------------------------ filling
    def add(self, parent: str, child: str, stamp_ns: int, parent_from_child: np.ndarray, static: bool = False) -> None:
        parent, child = normalize_frame_id(parent), normalize_frame_id(child)
        T = check_pose(parent_from_child, f"transform {parent} -> {child} at t={stamp_ns} ns")
        if static:
            self._static[(parent, child)] = T
        else:
            stamps, poses = self._samples[(parent, child)]
            stamps.append(int(stamp_ns))
            poses.append(T)
            self._tracks.pop((parent, child), None)
        self._neighbours[parent].add(child)
        self._neighbours[child].add(parent)

    # ------------------------------------------------------------ queries
    @property
    def frames(self) -> list[str]:
        return sorted(self._neighbours)

    @property
    def edges(self) -> list[tuple[str, str, str]]:
        """(parent, child, "static"|"dynamic") of every edge."""
        out = [(p, c, "static") for (p, c) in self._static]
        out += [(p, c, "dynamic") for (p, c) in self._samples if (p, c) not in self._static]
        return sorted(out)

    def has_edge(self, parent: str, child: str) -> bool:
        key = (normalize_frame_id(parent), normalize_frame_id(child))
        return key in self._static or key in self._samples

    def dynamic_stamps(self, parent: str, child: str) -> list[int]:
        return list(self._track(normalize_frame_id(parent), normalize_frame_id(child)).stamps_ns)

    def _track(self, parent: str, child: str) -> PoseTrack:
        key = (parent, child)
        if key not in self._tracks:
            stamps, poses = self._samples[key]
            self._tracks[key] = PoseTrack(stamps, poses, what=f"transform {parent} -> {child}")
        return self._tracks[key]

    def path(self, a: str, b: str) -> list[str] | None:
        """Frames from a to b (inclusive) through the TF graph, or None if unconnected."""
        a, b = normalize_frame_id(a), normalize_frame_id(b)
        if a == b:
            return [a]
        if a not in self._neighbours or b not in self._neighbours:
            return None
        prev = {a: None}
        queue = deque([a])
        while queue:
            f = queue.popleft()
            for n in sorted(self._neighbours[f]):
                if n not in prev:
                    prev[n] = f
                    if n == b:
                        out = [b]
                        while prev[out[-1]] is not None:
                            out.append(prev[out[-1]])
                        return out[::-1]
                    queue.append(n)
        return None

    def _edge(self, parent: str, child: str, stamp_ns: int | None) -> np.ndarray | None:
        if (parent, child) in self._static:
            return self._static[(parent, child)]
        if stamp_ns is None:
            return None
        return self._track(parent, child).at(stamp_ns, self.max_gap_ns, self.tolerance_ns)

    def lookup(self, target: str, source: str, stamp_ns: int | None) -> np.ndarray | None:
        """``target_from_source`` at ``stamp_ns`` (None: static edges only), or None when
        the frames are unconnected or a dynamic edge on the way has no data then."""
        path = self.path(target, source)
        if path is None:
            return None
        T = np.eye(4)
        for a, b in zip(path[:-1], path[1:]):
            if (a, b) in self._static or (a, b) in self._samples:
                step = self._edge(a, b, stamp_ns)
            else:
                step = self._edge(b, a, stamp_ns)
                step = None if step is None else invert_pose(step)
            if step is None:
                return None
            T = T @ step
        return T

    def describe(self) -> str:
        """One line listing the edges (for error messages)."""
        if not self._neighbours:
            return "no transforms"
        return ", ".join(f"{p} -> {c} ({kind})" for p, c, kind in self.edges)
