"""The image encoder: a CNN giving a coarse feature map (H/8, D_c) of unit vectors.

Trained per scene from scratch (no weights can be downloaded on our machines); the
paper's ConvFormer backbone with ImageNet weights is the user's-machine option left to
a later step (NOTES.md). Three stride-2 stages, two dilated context convolutions (a
receptive field of ~100 px, so a cell on a plain wall sees the wall's surroundings),
and a 1x1 projection to D_c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig

#: Output stride of the coarse map.
STRIDE = 8


class ImageEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if len(cfg.channels) != 3:
            raise ValueError(f"encoder.channels needs 3 stages (stride 8), got {cfg.channels}")
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        for d in cfg.context_dilations:
            layers += [nn.Conv2d(c_in, c_in, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, cfg.dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 8 -> (B, D_c, H/8, W/8), unit norm."""
        return F.normalize(self.head(self.backbone(x - 0.5)), dim=1)


class NerfFeatureProjection(nn.Module):
    """NeRF features (N, D_nerf), volume-rendered and divided by their ray's opacity, ->
    the matching space (N, D_c), unit norm. The field itself is never changed."""

    def __init__(self, nerf_dim: int, cfg: EncoderConfig):
        super().__init__()
        self.norm = nn.LayerNorm(nerf_dim)
        self.mlp = nn.Sequential(
            nn.Linear(nerf_dim, cfg.nerf_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.nerf_hidden, cfg.nerf_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.nerf_hidden, cfg.dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.norm(features)), dim=-1)


__all__ = ["STRIDE", "ImageEncoder", "NerfFeatureProjection"]
