"""D2S: keypoint descriptors -> scene coordinates and reliability (Bui et al.).

An image's keypoint descriptors are a graph: ``gnn_layers`` attention layers (multi-head
self-attention over all the image's keypoints, residual message MLP, as SuperGlue's
attentional propagation that D2S uses) let each descriptor see the others, then a
per-keypoint MLP ((512, 1024, 1024, 512) hidden, 4 out) predicts its scene coordinate
(x, y, z) and a reliability logit. Descriptors only: no keypoint position goes in, so
the regressor does not learn where in the image a thing was seen.

Coordinates are regressed in a normalized frame (world minus ``center``, divided by
``scale``, both from the training points and stored with the weights), so the same
initialization suits a room in metres and fox in its arbitrary units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Defaults (the paper's; mirrored by D2SConfig in config.py).
DEFAULT_DIM = 256
DEFAULT_GNN_LAYERS = 5
DEFAULT_HEADS = 4
DEFAULT_MLP = (512, 1024, 1024, 512)


class AttentionLayer(nn.Module):
    """x <- x + MLP([x, attention(x, x)]) over the keypoints of each image (masked)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        msg, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
        return x + self.mlp(torch.cat([x, msg], dim=-1))


class D2S(nn.Module):
    def __init__(self, descriptor_dim: int, dim: int = DEFAULT_DIM, gnn_layers: int = DEFAULT_GNN_LAYERS,
                 heads: int = DEFAULT_HEADS, mlp: tuple[int, ...] = DEFAULT_MLP):
        super().__init__()
        if descriptor_dim < 1 or dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"D2S: descriptor_dim={descriptor_dim} and dim={dim} must be positive, dim a multiple "
                             f"of heads={heads}")
        self.descriptor_dim = descriptor_dim
        self.input = nn.Linear(descriptor_dim, dim)
        self.layers = nn.ModuleList(AttentionLayer(dim, heads) for _ in range(gnn_layers))
        widths = (dim, *mlp)
        head: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            head += [nn.Linear(a, b), nn.ReLU()]
        head.append(nn.Linear(widths[-1], 4))
        self.head = nn.Sequential(*head)
        # The normalized frame of the coordinates (set from the training points).
        self.register_buffer("center", torch.zeros(3))
        self.register_buffer("scale", torch.ones(()))

    def set_frame(self, xyz_world: torch.Tensor) -> None:
        """Centre and scale of the scene coordinates from the training points (N, 3)."""
        xyz_world = xyz_world.to(self.center)
        self.center.copy_(xyz_world.mean(0))
        self.scale.copy_((xyz_world - self.center).norm(dim=-1).median().clamp_min(1e-6))

    def forward(self, descriptors: torch.Tensor, pad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``descriptors`` (B, N, D), ``pad`` (B, N) True where a row is padding.
        Returns world coordinates (B, N, 3) and reliability logits (B, N)."""
        if descriptors.shape[-1] != self.descriptor_dim:
            raise ValueError(f"D2S expects {self.descriptor_dim}-d descriptors, got {descriptors.shape[-1]}-d "
                             "(a query extractor other than the one the regressor was trained with?)")
        # unit descriptors (SIFT, SuperPoint) scaled to unit variance per dimension: at unit norm their
        # entries are ~1/sqrt(D) and the regressor learns several times more slowly
        x = self.input(F.normalize(descriptors, dim=-1) * math.sqrt(self.descriptor_dim))
        for layer in self.layers:
            x = layer(x, pad)
        out = self.head(x)
        xyz = out[..., :3] * self.scale + self.center
        return xyz, out[..., 3]


__all__ = ["D2S"]
