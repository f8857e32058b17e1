"""PoseMap's losses (Sec. 3.1): L_pose, L_image (DFNet's triplet), L_posemap (cosine)
and the PoseMap distance inside L_rvs (eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Cosine similarities of zero vectors (rays that hit nothing) are taken as 0.
COSINE_EPS = 1e-8


def pose_loss(pred_c2w: torch.Tensor, gt_c2w: torch.Tensor, center_scale: torch.Tensor,
              rotation_weight: float) -> torch.Tensor:
    """L2 of the camera-centre error in units of the centres' RMS radius plus
    ``rotation_weight`` x the Frobenius norm of the rotation difference, batch mean."""
    dt = (pred_c2w[:, :3, 3] - gt_c2w[:, :3, 3]).norm(dim=-1) / center_scale
    dr = (pred_c2w[:, :3, :3] - gt_c2w[:, :3, :3]).flatten(1).norm(dim=-1)
    return (dt + rotation_weight * dr).mean()


def posemap_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine similarity over the pixels of two (B, k, h, w) PoseMaps
    (L_posemap; also the PoseMap term of L_rvs, where eq. 1 writes an L2 norm: the
    cosine is scale-free, the rendered features' norms follow the ray's opacity)."""
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=COSINE_EPS)).mean()


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean cosine distance of two (B, D, h, w) unit feature maps -> (B,)."""
    return (1.0 - (a * b).sum(1)).flatten(1).mean(1)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """L_image: the real image's features (anchor) closer to the render at its true pose
    (positive) than to another view's render (negative) by ``margin``."""
    return F.relu(margin + feature_distance(anchor, positive) - feature_distance(anchor, negative)).mean()


__all__ = ["feature_distance", "pose_loss", "posemap_distance", "triplet_loss"]
