"""The full NeRFMatch's coarse matching (paper Sec. 4.2): attention between the image's
coarse cells and the NeRF points before the dual softmax.

1. The image features (unit, scaled to unit RMS per channel, like the encodings) get the
   2D positional encoding of their cell; the NeRF features (projected to D_c) none yet.
2. ``layers`` times: a self-attention layer, the same weights for both domains (which
   pulls the two into one embedding space), then a cross-attention layer (image cells
   attend to the points, then the points to the updated cells, one set of weights).
   After the first self-attention, the NeRF positional encoding of each point's 3D
   position, projected to D_c, is added to its feature (the paper concatenates it; a
   concatenation followed by the next layer's linear maps is this sum).
3. Both outputs are normalized: the dual softmax over cosine similarities and the coarse
   loss L_c are NeRFMatch-Mini's (``matcher.py``).

Linear attention (``attention.py``): the coarse sets are thousands of tokens on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionLayer, image_positional_encoding, point_encoding_dim, point_positional_encoding
from .config import MatcherConfig


class CoarseMatcher(nn.Module):
    def __init__(self, dim: int, cfg: MatcherConfig):
        super().__init__()
        self.dim, self.frequencies = dim, cfg.point_frequencies
        self.self_layers = nn.ModuleList(AttentionLayer(dim, cfg.heads, "linear") for _ in range(cfg.layers))
        self.cross_layers = nn.ModuleList(AttentionLayer(dim, cfg.heads, "linear") for _ in range(cfg.layers))
        self.point_encoding = nn.Linear(point_encoding_dim(cfg.point_frequencies), dim)

    def forward(self, image_map: torch.Tensor, nerf_features: torch.Tensor, unit_points: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's coarse map (D_c, h, w), unit; the NeRF features projected to D_c
        (N, D_c), unit; their points (N, 3) in the field's [0, 1]^3 domain -> the
        transformed image features (h*w, D_c), row-major over the cells, and NeRF
        features (N, D_c), both unit."""
        d, h, w = image_map.shape
        scale = math.sqrt(d)
        img = image_map * scale + image_positional_encoding(d, h, w, image_map.device)
        img = img.flatten(1).T[None]
        nerf = (nerf_features * scale)[None]
        for i, (self_layer, cross_layer) in enumerate(zip(self.self_layers, self.cross_layers)):
            img, nerf = self_layer(img, img), self_layer(nerf, nerf)
            if i == 0:
                nerf = nerf + self.point_encoding(point_positional_encoding(unit_points, self.frequencies))[None]
            img = cross_layer(img, nerf)
            nerf = cross_layer(nerf, img)
        if not self.self_layers:
            nerf = nerf + self.point_encoding(point_positional_encoding(unit_points, self.frequencies))[None]
        return F.normalize(img[0], dim=-1), F.normalize(nerf[0], dim=-1)


__all__ = ["CoarseMatcher"]
