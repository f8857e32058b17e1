"""The regressed pose: camera centre + rotation of an OpenCV camera-to-world pose
(``c2w_opencv``), from a 9-vector (3 normalized centre coordinates + the 6D continuous
rotation representation of Zhou et al. 2019, two columns Gram-Schmidt'ed).

:class:`PoseOutput` is the last layer of APR-Net's pose head and of NeRF-P's decoder;
it carries the normalization of camera centres (mean and RMS radius of the mapping
cameras' centres) so both regress O(1) numbers and return world poses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The RMS radius used to normalize centres is at least this (metres): a map of one view.
MIN_CENTER_SCALE = 1e-6


def rotation_from_6d(x: torch.Tensor) -> torch.Tensor:
    """(B, 6) -> (B, 3, 3) rotation matrices, columns b1, b2, b3 (Gram-Schmidt)."""
    a1, a2 = x[:, :3], x[:, 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def c2w_opencv_tensor_from_numpy(poses: np.ndarray, device=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(poses, dtype=np.float32).reshape(-1, 4, 4), device=device)


class PoseOutput(nn.Module):
    """Linear(in_dim, 9) -> (B, 4, 4) c2w_opencv in world units."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 9)
        with torch.no_grad():  # start at the mean centre, identity rotation
            self.linear.weight.mul_(0.1)
            self.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.register_buffer("center_mean", torch.zeros(3))
        self.register_buffer("center_scale", torch.ones(()))

    def set_normalization(self, centers_world: np.ndarray) -> None:
        c = torch.as_tensor(np.asarray(centers_world, dtype=np.float32).reshape(-1, 3))
        mean = c.mean(0)
        self.center_mean.copy_(mean)
        self.center_scale.fill_(max(float((c - mean).norm(dim=-1).pow(2).mean().sqrt()), MIN_CENTER_SCALE))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.linear(h)
        out = torch.zeros(y.shape[0], 4, 4, dtype=y.dtype, device=y.device)
        out[:, :3, :3] = rotation_from_6d(y[:, 3:])
        out[:, :3, 3] = self.center_mean + self.center_scale * y[:, :3]
        out[:, 3, 3] = 1.0
        return out


__all__ = ["PoseOutput", "c2w_opencv_tensor_from_numpy", "rotation_from_6d"]
