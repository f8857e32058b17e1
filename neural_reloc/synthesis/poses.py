"""Pose synthesis (Sec. III-B of the descriptor-synthesis paper, eqs. 4-8).

Each training camera is paired with its k nearest training cameras by camera-centre
distance (eqs. 4-5); a pair found from both ends, (i, j) and (j, i), is one segment.
On each segment N poses are placed at fractions n/(N+1), n = 1..N, strictly between
the two cameras (eq. 6): the camera centre moves on the straight line, the rotation
follows the quaternion slerp of the two cameras' rotations along the shortest arc
(eqs. 7-8). Interpolation is done on camera-to-world poses, so it is the camera centre
that moves linearly (:func:`~neural_reloc.geometry.se3.interpolate_pose`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.frames import opencv_c2w_from_opencv_w2c, opencv_w2c_from_opencv_c2w
from ..geometry.neighbours import nearest_pairs
from ..geometry.se3 import interpolate_pose
from .config import PoseSynthesisConfig


@dataclass
class SynthesizedPoses:
    """M synthetic poses and where each came from."""

    w2c_opencv: np.ndarray  # (M, 4, 4)
    source_a: np.ndarray  # (M,) index (into the given poses) of the segment's first camera
    source_b: np.ndarray  # (M,) index of its second camera
    fraction: np.ndarray  # (M,) position along the segment: 0 at source_a, 1 at source_b

    def __len__(self) -> int:
        return int(self.w2c_opencv.shape[0])


def synthesize_poses(w2c_opencv: np.ndarray, cfg: PoseSynthesisConfig) -> SynthesizedPoses:
    """Synthetic poses between the given training cameras (w2c_opencv (N, 4, 4))."""
    w2c_opencv = np.asarray(w2c_opencv, dtype=np.float64).reshape(-1, 4, 4)
    c2w_opencv = np.stack([opencv_c2w_from_opencv_w2c(T) for T in w2c_opencv])
    pairs = nearest_pairs(c2w_opencv[:, :3, 3], cfg.num_neighbors)
    n_seg = int(cfg.poses_per_segment)
    fractions = np.arange(1, n_seg + 1, dtype=np.float64) / (n_seg + 1)
    out, a, b, f = [], [], [], []
    for i, j in pairs:
        for alpha in fractions:
            out.append(opencv_w2c_from_opencv_c2w(interpolate_pose(c2w_opencv[i], c2w_opencv[j], float(alpha))))
            a.append(i)
            b.append(j)
            f.append(alpha)
    return SynthesizedPoses(
        w2c_opencv=np.array(out, dtype=np.float64).reshape(-1, 4, 4),
        source_a=np.array(a, dtype=np.int64), source_b=np.array(b, dtype=np.int64),
        fraction=np.array(f, dtype=np.float64),
    )


__all__ = ["SynthesizedPoses", "synthesize_poses"]
