"""Trilinear lookups of 3D grids at scattered points, on every CPU core.

The neural map reads its dense grids (the encoding's levels, the sampler's proposal
density) with ``F.grid_sample`` at the points of a render. PyTorch's CPU kernel for 3D
inputs parallelizes over the batch dimension only, and a render's points come as one
batch: the lookup ran on one core while the others waited. :func:`sample_volume` splits
the points into one batch per thread, with the volume expanded (not copied) along the
batch, so each thread reads the same grid for its own points: the same kernel, the same
values, ``torch.get_num_threads()`` cores. The backward pass (training the grids) splits
the same way: each batch's gradient lands in a copy of the volume's shape, summed after.
On a GPU (one kernel over all points anyway) it is a plain ``grid_sample``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Fewer points than this per thread are looked up in one batch: splitting them costs
#: more than it saves.
MIN_POINTS_PER_THREAD = 4096
#: grid_sample's mode and padding names as the aten kernels number them.
_MODES = {"bilinear": 0, "nearest": 1}
_PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}


def lookup_batches(num_points: int, device: torch.device) -> int:
    """How many batches :func:`sample_volume` splits ``num_points`` into."""
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), num_points // MIN_POINTS_PER_THREAD))


class _SplitGridSample(torch.autograd.Function):
    """grid_sample of a (1, C, D, H, W) volume at ``grid`` (B, 1, 1, m, 3): the volume
    expanded to B batches; the volume's gradient is the sum of the batches' (the points
    carry none)."""

    @staticmethod
    def forward(ctx, volume, grid, mode: int, padding: int, align_corners: bool):
        ctx.save_for_backward(grid)
        ctx.args = (volume, mode, padding, align_corners)
        return torch.ops.aten.grid_sampler_3d(volume.expand(grid.shape[0], -1, -1, -1, -1), grid, mode, padding,
                                              align_corners)

    @staticmethod
    def backward(ctx, grad_out):
        (grid,) = ctx.saved_tensors
        volume, mode, padding, align_corners = ctx.args
        grad_volume, _ = torch.ops.aten.grid_sampler_3d_backward(
            grad_out.contiguous(), volume.detach().expand(grid.shape[0], -1, -1, -1, -1), grid, mode, padding,
            align_corners, [True, False])
        return grad_volume.sum(0, keepdim=True), None, None, None, None


def sample_volume(volume: torch.Tensor, g: torch.Tensor, *, mode: str = "bilinear", padding_mode: str = "border",
                  align_corners: bool = True) -> torch.Tensor:
    """``F.grid_sample`` of a (1, C, D, H, W) ``volume`` at points ``g`` (n, 3) in
    grid_sample's normalized (x, y, z) coordinates: (n, C)."""
    n, c = g.shape[0], volume.shape[1]
    batches = lookup_batches(n, volume.device)
    if batches == 1 or (g.requires_grad and torch.is_grad_enabled()):
        s = F.grid_sample(volume, g.reshape(1, 1, 1, n, 3), mode=mode, padding_mode=padding_mode,
                          align_corners=align_corners)
        return s.reshape(c, n).t()
    per = -(-n // batches)
    padded = torch.cat([g, g[: per * batches - n]]) if per * batches > n else g
    s = _SplitGridSample.apply(volume, padded.reshape(batches, 1, 1, per, 3).contiguous(), _MODES[mode],
                               _PADDINGS[padding_mode], align_corners)
    return s.reshape(batches, c, per).permute(0, 2, 1).reshape(batches * per, c)[:n]
