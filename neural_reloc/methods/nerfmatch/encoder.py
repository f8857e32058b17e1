"""The image encoder: a CNN giving a coarse feature map (H/8, D_c) of unit vectors and,
for the full variant, a fine feature map (H/2, D_f).

Trained per scene from scratch (no weights can be downloaded on our machines); the
paper's ConvFormer backbone with ImageNet weights is the user's-machine option left to
a later step (NOTES.md). Three stride-2 stages, two dilated context convolutions (a
receptive field of ~100 px, so a cell on a plain wall sees the wall's surroundings),
and a 1x1 projection to D_c. The fine map is FPN-style: the first stage's map (H/2)
plus the trunk's (H/8) upsampled, each through a 1x1 convolution, then a 1x1 head (a
3x3 one at H/2 would cost most of the encoder on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.texture import trunk_receptive_field
from .config import EncoderConfig

#: Output stride of the coarse map.
STRIDE = 8
#: Output stride of the fine map (the first stage's).
FINE_STRIDE = 2
#: Modules of ``backbone`` in the first stage (conv stride 2, ReLU, conv, ReLU).
_FIRST_STAGE = 4


class ImageEncoder(nn.Module):
    """``fine``: with the fine map's layers (the full variant); their weights are then
    part of the state, so a map trained without them does not load with them."""

    def __init__(self, cfg: EncoderConfig, fine: bool = False):
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
        #: Input pixels along each axis that one coarse cell sees.
        self.receptive_field = trunk_receptive_field(self.backbone)
        self.head = nn.Conv2d(c_in, cfg.dim, 1)
        self.fine = fine
        if fine:
            self.fine_lateral = nn.Conv2d(cfg.channels[0], cfg.fine_dim, 1)
            self.fine_top = nn.Conv2d(c_in, cfg.fine_dim, 1)
            self.fine_head = nn.Conv2d(cfg.fine_dim, cfg.fine_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 8 -> (B, D_c, H/8, W/8), unit norm."""
        return F.normalize(self.head(self.backbone(x - 0.5)), dim=1)

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> the coarse map (B, D_c, H/8, W/8), unit norm, and the fine map
        (B, D_f, H/2, W/2) (an encoder built with ``fine``)."""
        if not self.fine:
            raise ValueError("this encoder has no fine map (built for the mini variant)")
        first = self.backbone[:_FIRST_STAGE](x - 0.5)
        trunk = self.backbone[_FIRST_STAGE:](first)
        coarse = F.normalize(self.head(trunk), dim=1)
        top = F.interpolate(self.fine_top(trunk), size=first.shape[-2:], mode="bilinear", align_corners=False)
        fine = self.fine_head(F.relu(self.fine_lateral(first) + top))
        return coarse, fine


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


__all__ = ["FINE_STRIDE", "STRIDE", "ImageEncoder", "NerfFeatureProjection"]
