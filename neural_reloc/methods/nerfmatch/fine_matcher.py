"""The full NeRFMatch's fine matching (paper Sec. 4.2) and the fine loss L_f (eq. 4).

For each coarse match (image cell i, NeRF point j): the fine map (H/2) sampled on a
window x window grid of fine pixels centred on cell i's centre (bilinearly, so the window
is centred exactly and, for the default w = 5 and strides 8 / 2, spans the cell's own
8 x 8 pixels); the point's cross-attended coarse feature mapped D_c -> D_f by a linear
layer; softmax self-attention over the point's token and the window's tokens; then the
point's token is the query against the window: a heatmap (softmax of the dot products
/ sqrt(D_f)) whose expectation is the point's position inside the cell and whose total
variance is how sure it is. Positions are image pixels of the encoder camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionLayer
from .config import MatcherConfig
from .encoder import FINE_STRIDE, STRIDE

#: Smallest heatmap variance (fine pixels^2) in the inverse-variance weight of L_f.
MIN_VARIANCE = 1e-3


@dataclass
class FineMatches:
    """Per coarse match: the refined position ``uv`` (M, 2) in image pixels, its offset
    from the window centre (M, 2) and total variance (M,) in fine pixels (^2), the heatmap
    (M, w, w), row-major (rows = v)."""

    uv: torch.Tensor
    offset: torch.Tensor
    variance: torch.Tensor
    heatmap: torch.Tensor


def window_offsets(window: int, device=None) -> torch.Tensor:
    """(w*w, 2) offsets (du, dv) of a window's fine pixels from its centre, in fine
    pixels, row-major (dv outer)."""
    r = torch.arange(window, device=device, dtype=torch.float32) - window // 2
    dv, du = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([du.reshape(-1), dv.reshape(-1)], dim=-1)


def cell_centres(cells: torch.Tensor, grid_width: int) -> torch.Tensor:
    """Coarse cell indices (M,), row-major over a grid ``grid_width`` wide -> their
    centres (M, 2) in image pixels."""
    col, row = cells % grid_width, torch.div(cells, grid_width, rounding_mode="floor")
    return torch.stack([col, row], dim=-1).float() * STRIDE + STRIDE / 2.0


def gather_windows(fine_map: torch.Tensor, centres_uv: torch.Tensor, window: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The fine map (D_f, H/2, W/2) sampled around image positions (M, 2) -> window
    features (M, w*w, D_f) and whether each sample is inside the image, its edges
    included (M, w*w)."""
    d, hf, wf = fine_map.shape
    size = torch.tensor([wf * FINE_STRIDE, hf * FINE_STRIDE], device=fine_map.device, dtype=torch.float32)
    pos = centres_uv[:, None, :] + FINE_STRIDE * window_offsets(window, fine_map.device)[None]
    grid = pos / size * 2.0 - 1.0  # align_corners=False: -1 and 1 are the image's outer edges
    # border padding: a sample on the image's edge (a border cell's window) is the edge pixel's
    feats = F.grid_sample(fine_map[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)
    inside = ((pos >= 0) & (pos <= size)).all(dim=-1)
    return feats[0].permute(1, 2, 0), inside


def expectation(heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (M, w, w) summing to 1 -> the expected offset (M, 2) from the window
    centre, (du, dv) in fine pixels, and the total variance var_u + var_v (M,)."""
    m, w, _ = heatmap.shape
    offs = window_offsets(w, heatmap.device)
    p = heatmap.reshape(m, w * w)
    mean = p @ offs
    variance = (p @ offs.square()).sum(-1) - mean.square().sum(-1)
    return mean, variance.clamp_min(0.0)


def fine_loss(offset: torch.Tensor, variance: torch.Tensor, gt_offset: torch.Tensor, window: int) -> torch.Tensor:
    """L_f (eq. 4): the squared distance between the expected and the ground-truth
    offsets (in half-windows, so a miss by the window's half-width costs 1), weighted by
    the inverse variance of its heatmap, detached and normalized to mean 1 (a confident
    heatmap's miss counts more; the weight itself is not learned)."""
    if len(offset) == 0:
        return offset.sum() * 0.0
    d2 = ((offset - gt_offset) / (window // 2)).square().sum(-1)
    weight = 1.0 / variance.detach().clamp_min(MIN_VARIANCE)
    return (d2 * weight / weight.mean()).mean()


class FineMatcher(nn.Module):
    def __init__(self, coarse_dim: int, fine_dim: int, cfg: MatcherConfig):
        super().__init__()
        self.window = cfg.window
        self.point = nn.Linear(coarse_dim, fine_dim)
        self.layers = nn.ModuleList(AttentionLayer(fine_dim, cfg.fine_heads, "softmax") for _ in range(cfg.fine_layers))

    def forward(self, fine_map: torch.Tensor, centres_uv: torch.Tensor, nerf_features: torch.Tensor) -> FineMatches:
        """The fine map (D_f, H/2, W/2); the matched cells' centres (M, 2) in image
        pixels; the matched points' cross-attended coarse features (M, D_c)."""
        w = self.window
        m = len(centres_uv)
        if m == 0:
            z = centres_uv.new_zeros
            return FineMatches(z(0, 2), z(0, 2), z(0), z(0, w, w))
        window_feats, inside = gather_windows(fine_map, centres_uv, w)
        tokens = torch.cat([self.point(nerf_features)[:, None], window_feats], dim=1)
        for layer in self.layers:
            tokens = layer(tokens, tokens)
        logits = torch.einsum("md,mkd->mk", tokens[:, 0], tokens[:, 1:]) / math.sqrt(tokens.shape[-1])
        heatmap = torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=-1).view(m, w, w)
        offset, variance = expectation(heatmap)
        return FineMatches(centres_uv + FINE_STRIDE * offset, offset, variance, heatmap)


__all__ = ["FineMatcher", "FineMatches", "cell_centres", "expectation", "fine_loss", "gather_windows", "window_offsets"]
