"""Transformer blocks and positional encodings of the full NeRFMatch (paper Sec. 4.2).

* :func:`image_positional_encoding` the 2D sinusoidal encoding of a feature map's cells
  (DETR / LoFTR style: sines and cosines of the column and of the row at geometric
  frequencies), added to the image features before self-attention;
* :func:`point_positional_encoding` NeRF's frequency encoding P_x of 3D points (the
  field's own input encoding, Fig. 2), which the coarse matcher projects and adds to the
  NeRF features;
* :class:`AttentionLayer` one transformer layer: multi-head attention of a set of
  tokens to a source set (itself: self-attention; the other domain: cross-attention),
  its message normalized, mixed with the tokens by an MLP and added back (residual).
  Attention is either *linear* (Katharopoulos et al. 2020, kernel elu + 1: the cost is
  linear in the number of tokens, used for the thousands of coarse tokens on a CPU) or
  the usual *softmax* (used on the fine windows' few tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def image_positional_encoding(dim: int, height: int, width: int, device=None) -> torch.Tensor:
    """(dim, height, width): for k < dim/4, channels 4k..4k+3 are sin and cos of the
    column and sin and cos of the row (in cells), times the frequency 10000^(-k/(dim/4))."""
    if dim % 4:
        raise ValueError(f"the 2D positional encoding needs a multiple of 4 channels, got {dim}")
    n = dim // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(n, device=device, dtype=torch.float32) / n)
    cols = torch.arange(width, device=device, dtype=torch.float32)[None, None, :] * freq[:, None, None]
    rows = torch.arange(height, device=device, dtype=torch.float32)[None, :, None] * freq[:, None, None]
    shape = (n, height, width)
    pe = torch.stack([cols.sin().expand(shape), cols.cos().expand(shape),
                      rows.sin().expand(shape), rows.cos().expand(shape)], dim=1)
    return pe.reshape(dim, height, width)


def point_positional_encoding(unit_points: torch.Tensor, frequencies: int) -> torch.Tensor:
    """Points (N, 3) in the field's [0, 1]^3 domain -> (N, 3 + 6 * frequencies): the
    coordinates p mapped to [-1, 1], then sin and cos of 2^k * pi * p for k < frequencies."""
    p = unit_points * 2.0 - 1.0
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=p.device, dtype=p.dtype)
    x = (p[:, None, :] * scales[None, :, None]).reshape(len(p), -1)
    return torch.cat([p, x.sin(), x.cos()], dim=-1)


def point_encoding_dim(frequencies: int) -> int:
    return 3 + 6 * frequencies


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """q (B, L, H, d), k and v (B, S, H, d) -> (B, L, H, d): each query's average of
    the values weighted by phi(q) . phi(k), phi = elu + 1, without forming the L x S
    matrix (sum over S of phi(k) v^T first)."""
    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
    kv = torch.einsum("bshd,bshv->bhdv", k, v)
    norm = 1.0 / (torch.einsum("blhd,bhd->blh", q, k.sum(dim=1)) + eps)
    return torch.einsum("blhd,bhdv,blh->blhv", q, kv, norm)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, L, H, d), k and v (B, S, H, d) -> (B, L, H, d): softmax(q k^T / sqrt(d)) v."""
    w = torch.einsum("blhd,bshd->bhls", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhls,bshd->blhd", torch.softmax(w, dim=-1), v)


class AttentionLayer(nn.Module):
    """One transformer layer: tokens x (B, L, D) attend to a source (B, S, D) (x itself
    for self-attention). ``kind``: "linear" or "softmax" attention."""

    def __init__(self, dim: int, heads: int, kind: str = "linear"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{dim} channels do not split into {heads} heads")
        if kind not in ("linear", "softmax"):
            raise ValueError(f"attention kind must be linear or softmax, got {kind!r}")
        self.heads, self.kind = heads, kind
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.merge = nn.Linear(dim, dim, bias=False)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(2 * dim, dim, bias=False))

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h)
        k = self.k(source).view(b, source.shape[1], h, d // h)
        v = self.v(source).view(b, source.shape[1], h, d // h)
        attend = linear_attention if self.kind == "linear" else softmax_attention
        message = self.norm1(self.merge(attend(q, k, v).reshape(b, n, d)))
        message = self.norm2(self.mlp(torch.cat([x, message], dim=-1)))
        return x + message


__all__ = ["AttentionLayer", "image_positional_encoding", "linear_attention", "point_encoding_dim",
           "point_positional_encoding", "softmax_attention"]
