"""D2S's losses (Bui et al.): scene coordinates, reliability, reprojection.

* coordinates: Euclidean distance between predicted and target scene coordinates of the
  reliable keypoints (those with a trustworthy 3D point), in the regressor's normalized
  frame (so its size does not depend on the scene's units);
* reliability: binary cross-entropy of the reliability logit against "has a reliable
  3D point" (keypoints on sky, moving things or unmatched texture learn to say so);
* reprojection: the reliable keypoints' predicted coordinates projected with the view's
  true pose and intrinsics, distance to the keypoint in normalized image units
  (pixels / focal length), capped at ``max_reprojection`` so far-off points while the
  regressor is still learning do not dominate; points predicted behind the camera get
  the cap. Added from ``reprojection_after_fraction`` of training on, as D2S does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Predicted points closer than this to the camera plane (scene units x model scale)
#: have no reprojection; they get the capped loss.
MIN_DEPTH_REL = 1e-3


@dataclass
class Batch:
    """B images' keypoints, padded to N: descriptors (B, N, D), keypoints_px (B, N, 2),
    xyz_world (B, N, 3), reliable (B, N) bool, pad (B, N) bool (True: padding),
    w2c_opencv (B, 4, 4), K (B, 3, 3)."""

    descriptors: torch.Tensor
    keypoints_px: torch.Tensor
    xyz_world: torch.Tensor
    reliable: torch.Tensor
    pad: torch.Tensor
    w2c_opencv: torch.Tensor
    K: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def coordinate_loss(xyz: torch.Tensor, batch: Batch, scale: torch.Tensor) -> torch.Tensor:
    m = batch.reliable & ~batch.pad
    if not m.any():
        return xyz.sum() * 0
    return ((xyz[m] - batch.xyz_world[m]).norm(dim=-1) / scale).mean()


def reliability_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    valid = ~batch.pad
    return F.binary_cross_entropy_with_logits(logits[valid], batch.reliable[valid].float())


def reprojection_loss(xyz: torch.Tensor, batch: Batch, scale: torch.Tensor, max_reprojection: float) -> torch.Tensor:
    m = batch.reliable & ~batch.pad
    if not m.any():
        return xyz.sum() * 0
    R, t = batch.w2c_opencv[:, :3, :3].to(xyz), batch.w2c_opencv[:, :3, 3].to(xyz)
    cam = torch.einsum("bij,bnj->bni", R, xyz) + t[:, None]
    K = batch.K.to(xyz)
    z = cam[..., 2]
    front = z > MIN_DEPTH_REL * scale
    zs = torch.where(front, z, torch.ones_like(z))
    u = K[:, 0, 0, None] * cam[..., 0] / zs + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * cam[..., 1] / zs + K[:, 1, 2, None]
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])[:, None]
    err = torch.hypot(u - batch.keypoints_px[..., 0], v - batch.keypoints_px[..., 1]) / focal
    err = torch.where(front, err.clamp(max=max_reprojection), torch.full_like(err, max_reprojection))
    return err[m].mean()


__all__ = ["Batch", "coordinate_loss", "reliability_loss", "reprojection_loss"]
