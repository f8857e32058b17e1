"""Position and direction encodings of the neural map.

Positions arrive normalized to [0, 1]^3 (see :mod:`neural_reloc.nerf.scene`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncodingConfig
from .grid_lookup import sample_volume

# Initial spread of grid features. Dense levels start near zero (as Instant-NGP);
# tri-plane features start near one because plane features are multiplied (K-Planes).
DENSE_INIT_STD = 1e-2
PLANE_INIT_LOW, PLANE_INIT_HIGH = 0.1, 0.5
HASH_INIT_RANGE = 1e-4
# Instant-NGP's spatial hash primes.
HASH_PRIMES = (1, 2654435761, 805459861)


class MultiResGridEncoding(nn.Module):
    """Dense 3D grids for coarse levels + tri-plane grids for fine levels.

    Output: concatenation over levels of the trilinearly interpolated dense features
    and of the Hadamard product of the three bilinearly interpolated plane features.
    The first ``geometry_dim`` outputs (the dense, fully 3D levels) drive density: the
    tri-planes share one cell between every point on an axis-parallel line, which
    inside a room couples empty space to walls and floor and breeds "fog", so plane
    features only add detail to colour and to the extra heads.
    """

    def __init__(self, cfg: EncodingConfig):
        super().__init__()
        self.volumes = nn.ParameterList(
            [
                nn.Parameter(torch.randn(1, cfg.dense_features, r, r, r) * DENSE_INIT_STD)
                for r in cfg.dense_resolutions
            ]
        )
        self.planes = nn.ParameterList(
            [
                nn.Parameter(
                    torch.empty(3, cfg.plane_features, r, r).uniform_(PLANE_INIT_LOW, PLANE_INIT_HIGH)
                )
                for r in cfg.plane_resolutions
            ]
        )
        #: Leading output dims that come from the fully 3D (local) dense levels.
        self.geometry_dim = cfg.dense_features * len(cfg.dense_resolutions)
        self.out_dim = self.geometry_dim + cfg.plane_features * len(cfg.plane_resolutions)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        n = x01.shape[0]
        g = x01 * 2.0 - 1.0
        feats = []
        if len(self.volumes):
            for vol in self.volumes:
                feats.append(sample_volume(vol, g, mode="bilinear", padding_mode="border", align_corners=True))
        if len(self.planes):
            # planes: xy, xz, yz
            coords = torch.stack([g[:, [0, 1]], g[:, [0, 2]], g[:, [1, 2]]], 0).unsqueeze(1)
            for plane in self.planes:
                s = F.grid_sample(plane, coords, mode="bilinear", padding_mode="border", align_corners=True)
                feats.append(s.prod(0).view(plane.shape[1], n).t())
        return torch.cat(feats, -1)

    def plane_tv(self) -> torch.Tensor:
        """Total variation of the plane grids (K-Planes' smoothness regularizer)."""
        tv = torch.zeros((), device=self.planes[0].device if len(self.planes) else "cpu")
        for p in self.planes:
            tv = tv + (p[..., 1:, :] - p[..., :-1, :]).square().mean() + (
                p[..., :, 1:] - p[..., :, :-1]
            ).square().mean()
        return tv


class HashGridEncoding(nn.Module):
    """Instant-NGP multiresolution hash encoding in plain PyTorch.

    Levels whose dense grid fits in the table are indexed densely (no collisions), as
    in Instant-NGP. Kept for CUDA users and as a reference; ``MultiResGridEncoding`` is
    several times faster on CPU.
    """

    def __init__(self, cfg: EncodingConfig):
        super().__init__()
        table_size = 2**cfg.hash_log2_table_size
        growth = math.exp(
            (math.log(cfg.hash_max_resolution) - math.log(cfg.hash_base_resolution)) / max(1, cfg.hash_levels - 1)
        )
        self.resolutions = [int(math.floor(cfg.hash_base_resolution * growth**l)) for l in range(cfg.hash_levels)]
        self.dense = [(r + 1) ** 3 <= table_size for r in self.resolutions]
        self.tables = nn.ParameterList(
            [
                nn.Parameter(
                    torch.empty(min(table_size, (r + 1) ** 3), cfg.hash_features).uniform_(
                        -HASH_INIT_RANGE, HASH_INIT_RANGE
                    )
                )
                for r in self.resolutions
            ]
        )
        self.out_dim = cfg.hash_levels * cfg.hash_features
        self.geometry_dim = self.out_dim

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        out = []
        for res, dense, table in zip(self.resolutions, self.dense, self.tables):
            p = x01.clamp(0.0, 1.0) * res
            p0 = p.floor().clamp(0, res - 1)
            w = p - p0
            p0 = p0.long()
            x0, y0, z0 = p0.unbind(-1)
            wx, wy, wz = w.unbind(-1)
            size = table.shape[0]
            acc = 0.0
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        if dense:
                            idx = (x0 + dx) + (y0 + dy) * (res + 1) + (z0 + dz) * (res + 1) ** 2
                        else:
                            idx = (
                                (x0 + dx) * HASH_PRIMES[0]
                                ^ (y0 + dy) * HASH_PRIMES[1]
                                ^ (z0 + dz) * HASH_PRIMES[2]
                            ) % size
                        wgt = (wx if dx else 1 - wx) * (wy if dy else 1 - wy) * (wz if dz else 1 - wz)
                        acc = acc + table[idx] * wgt[:, None]
            out.append(acc)
        return torch.cat(out, -1)

    def plane_tv(self) -> torch.Tensor:
        return torch.zeros((), device=self.tables[0].device)


def make_position_encoding(cfg: EncodingConfig) -> nn.Module:
    if cfg.kind == "grid":
        return MultiResGridEncoding(cfg)
    if cfg.kind == "hash":
        return HashGridEncoding(cfg)
    raise ValueError(f"encoding.kind must be 'grid' or 'hash', got {cfg.kind!r}")


def spherical_harmonics(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics basis of unit directions, degree 1..4 -> degree^2 dims."""
    if not 1 <= degree <= 4:
        raise ValueError("direction_sh_degree must be in 1..4")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525252005,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, -1)
