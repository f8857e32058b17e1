"""NeRF-P (Sec. 3.2): a pose-feature branch on the map's frozen field and its decoder.

* :class:`PoseFeatureHead` is a field head (``field.add_head("posemap", ...)``, the
  extension point CROSSFIRE's descriptor head uses): position-only field features (the
  unit-cube point, the grid encoding, the geometric feature) -> MLP -> a k-dimensional
  pose feature f_i per sample point.
* :func:`render_posemap` volume-renders it with the field's own weights into the
  PoseMap F = sum_i w_i f_i (eq. 3-4), on a coarse grid of rays (the paper renders at
  full size and downsamples by 16). It is differentiable with respect to the pose
  (rays are built from a c2w tensor), which L_posemap needs: the PoseMap at APR-Net's
  predicted pose is compared to the one at the true pose.
* :class:`PoseMapDecoder` maps a PoseMap back to its pose (average pool, flatten, MLP:
  the paper's "series of MLP decoders"); it trains the head (the two-step schedule: the
  field first, then head + decoder with the field frozen).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...geometry.camera import Camera
from ...nerf.field import FieldHead
from ...nerf.neural_map import RayBatch
from ...nerf.rays import camera_params, pixel_dirs_opencv, view_pixels
from .config import PoseBranchConfig
from .pose_repr import PoseOutput

#: Name of the head on the field (its tensors: ``map.field.heads.posemap.*``).
HEAD_NAME = "posemap"
#: Position-only field features the head reads.
HEAD_INPUTS = ("position", "encoding", "geo_feat")


class PoseFeatureHead(FieldHead):
    def __init__(self, in_dim: int, cfg: PoseBranchConfig):
        super().__init__()
        self.inputs = HEAD_INPUTS
        self.in_dim = int(in_dim)
        self.out_dim = int(cfg.dim)
        layers: list[nn.Module] = []
        d = self.in_dim
        for _ in range(cfg.head_layers):
            layers += [nn.Linear(d, cfg.head_hidden), nn.ReLU(inplace=True)]
            d = cfg.head_hidden
        layers.append(nn.Linear(d, self.out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"PoseFeatureHead expects {self.in_dim} input features, got {features.shape[-1]}")
        return self.mlp(features)


def attach_pose_head(model, cfg: PoseBranchConfig) -> PoseFeatureHead:
    head = PoseFeatureHead(model.field.head_input_dim(HEAD_INPUTS), cfg)
    model.field.add_head(HEAD_NAME, head)
    return model.field.heads[HEAD_NAME]


def grid_size(camera: Camera, long_side: int) -> tuple[int, int]:
    """(width, height) of the PoseMap grid of ``camera``: ``long_side`` rays along its long side."""
    s = long_side / max(camera.width, camera.height)
    return max(1, round(camera.width * s)), max(1, round(camera.height * s))


def render_posemap(model, cameras: list[Camera], c2w_opencv: torch.Tensor, size: tuple[int, int],
                   num_fine: int, train_field: bool = True) -> torch.Tensor:
    """PoseMaps (B, k, h, w) at B poses (``c2w_opencv`` (B, 4, 4), differentiable), each
    view's camera resized to ``size`` = (w, h). ``train_field=False``: the field's
    features and weights are detached (the head's own training)."""
    w, h = size
    dev = model.device
    uv = view_pixels(cameras[0].resized(w, h), 1, dev)
    if all(c == cameras[0] for c in cameras):
        dirs_cam = pixel_dirs_opencv(camera_params([cameras[0].resized(w, h)], dev), uv)[None].expand(len(cameras), -1, -1)
    else:
        dirs_cam = torch.stack([pixel_dirs_opencv(camera_params([c.resized(w, h)], dev), uv) for c in cameras])
    if dirs_cam.shape[0] != c2w_opencv.shape[0]:
        raise ValueError(f"render_posemap: {dirs_cam.shape[0]} cameras for {c2w_opencv.shape[0]} poses")
    R, t = c2w_opencv[:, :3, :3], c2w_opencv[:, :3, 3]
    dirs = torch.einsum("bij,bnj->bni", R, dirs_cam)
    origins = t[:, None].expand_as(dirs)
    rays = RayBatch(origins.reshape(-1, 3), dirs.reshape(-1, 3), dirs_cam[..., 2].reshape(-1))
    out = model.render_rays(rays, (HEAD_NAME,), randomized=False, num_fine=num_fine, heads_train_field=train_field)
    return out[HEAD_NAME].view(c2w_opencv.shape[0], h, w, -1).permute(0, 3, 1, 2)


class PoseMapDecoder(nn.Module):
    """PoseMap (B, k, h, w) -> pool to ``decoder_pool`` -> flatten -> MLP -> c2w_opencv."""

    def __init__(self, cfg: PoseBranchConfig):
        super().__init__()
        self.pool = tuple(int(v) for v in cfg.decoder_pool)
        layers: list[nn.Module] = []
        d = cfg.dim * self.pool[0] * self.pool[1]
        for width in cfg.decoder_hidden:
            layers += [nn.Linear(d, int(width)), nn.ReLU(inplace=True)]
            d = int(width)
        self.mlp = nn.Sequential(*layers)
        self.pose = PoseOutput(d)

    def forward(self, posemap: torch.Tensor) -> torch.Tensor:
        return self.pose(self.mlp(F.adaptive_avg_pool2d(posemap, self.pool).flatten(1)))


__all__ = ["HEAD_NAME", "PoseFeatureHead", "PoseMapDecoder", "attach_pose_head", "grid_size", "render_posemap"]
