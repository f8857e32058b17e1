"""Time series of rigid transforms, looked up at any time by interpolation.

A :class:`PoseTrack` holds ``a_from_b`` poses at increasing stamps (integer
nanoseconds, as ROS stamps them) and returns the pose at another stamp: slerp of the
rotation and linear interpolation of the translation between the two neighbouring
samples (:func:`~neural_reloc.geometry.se3.interpolate_pose`). Convention-free: for a
camera pass camera-to-world (``map_from_optical``) so the camera centre moves on a
straight line between samples.

Lookups refuse to bridge a gap longer than ``max_gap_ns`` (the track is missing data
there) and to extrapolate more than ``tolerance_ns`` beyond either end (within the
tolerance the end sample is returned).
"""

from __future__ import annotations

import bisect

import numpy as np

from .se3 import check_pose, interpolate_pose


class PoseTrack:
    """``a_from_b(t)`` sampled at ``stamps_ns``; duplicate stamps keep the last pose."""

    def __init__(self, stamps_ns, poses, what: str = "pose track"):
        stamps = [int(s) for s in stamps_ns]
        poses = [np.asarray(p, dtype=np.float64) for p in poses]
        if len(stamps) != len(poses):
            raise ValueError(f"{what}: {len(stamps)} stamps but {len(poses)} poses")
        for s, p in zip(stamps, poses):
            check_pose(p, f"{what} at t={s} ns")
        # stable sort, then keep the last of equal stamps (a later message wins)
        order = sorted(range(len(stamps)), key=lambda i: stamps[i])
        self.stamps_ns: list[int] = []
        self._poses: list[np.ndarray] = []
        for i in order:
            if self.stamps_ns and self.stamps_ns[-1] == stamps[i]:
                self._poses[-1] = poses[i]
            else:
                self.stamps_ns.append(stamps[i])
                self._poses.append(poses[i])
        self.what = what

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def start_ns(self) -> int | None:
        return self.stamps_ns[0] if self.stamps_ns else None

    @property
    def end_ns(self) -> int | None:
        return self.stamps_ns[-1] if self.stamps_ns else None

    @property
    def poses(self) -> np.ndarray:
        """(N, 4, 4) samples in stamp order."""
        return np.array(self._poses).reshape(-1, 4, 4)

    def at(self, stamp_ns: int, max_gap_ns: int | None = None, tolerance_ns: int = 0) -> np.ndarray | None:
        """The pose at ``stamp_ns``, or None when the track does not cover it.

        ``max_gap_ns``: None bridges any gap. ``tolerance_ns``: how far outside the
        sampled interval the nearest end sample is still returned.
        """
        n = len(self.stamps_ns)
        if n == 0:
            return None
        t = int(stamp_ns)
        i = bisect.bisect_left(self.stamps_ns, t)
        if i < n and self.stamps_ns[i] == t:
            return self._poses[i].copy()
        if i == 0:
            return self._poses[0].copy() if self.stamps_ns[0] - t <= tolerance_ns else None
        if i == n:
            return self._poses[-1].copy() if t - self.stamps_ns[-1] <= tolerance_ns else None
        t0, t1 = self.stamps_ns[i - 1], self.stamps_ns[i]
        if max_gap_ns is not None and t1 - t0 > max_gap_ns:
            # A gap in the data: only stamps within the tolerance of a sample count.
            if t - t0 <= tolerance_ns:
                return self._poses[i - 1].copy()
            if t1 - t <= tolerance_ns:
                return self._poses[i].copy()
            return None
        alpha = (t - t0) / (t1 - t0)
        return interpolate_pose(self._poses[i - 1], self._poses[i], alpha)
