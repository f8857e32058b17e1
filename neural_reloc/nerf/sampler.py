"""Ray sampling with a cached density grid as the proposal distribution.

The grid (``resolution^3`` over the field's unit cube) caches the field's density,
updated every few training steps from the network (max with exponential decay, as
Instant-NGP's occupancy grid). Sampling a ray:

1. ``num_coarse`` stratified samples in s-space (linear inside, disparity outside for
   contracted scenes) read the pruned, dilated, capped grid by trilinear
   interpolation — no network;
2. their volume-rendering weights form a piecewise-constant pdf over s;
3. ``num_fine + 1`` interval edges are drawn from that pdf by inverse CDF; the network
   is evaluated once per interval at its midpoint, except where the midpoint lies in
   an empty (pruned) cell: there the density is zero by definition, as in Instant-NGP.

Empty space therefore costs lookups only, and network samples land on surfaces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamplerConfig
from .grid_lookup import sample_volume
from .scene import SceneNormalization


class DensityGrid(nn.Module):
    def __init__(self, cfg: SamplerConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.grid_resolution
        self.register_buffer("density", torch.full((g, g, g), 1.0))
        self.register_buffer("proposal", torch.full((1, 1, g, g, g), 1.0))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @property
    def resolution(self) -> int:
        return self.cfg.grid_resolution

    def cell_centers(self, flat_idx: torch.Tensor, jitter: bool) -> torch.Tensor:
        g = self.resolution
        z = flat_idx // (g * g)
        y = (flat_idx // g) % g
        x = flat_idx % g
        ijk = torch.stack([x, y, z], -1).float()
        off = torch.rand_like(ijk) if jitter else torch.full_like(ijk, 0.5)
        return (ijk + off) / g

    @torch.no_grad()
    def update(self, density_fn, cell_size_m: float, all_cells: bool = False, chunk: int = 262144) -> None:
        """Refresh cached densities (all cells, or a random subset) from ``density_fn``."""
        g = self.resolution
        n = g**3
        dev = self.density.device
        if all_cells:
            idx = torch.arange(n, device=dev)
        else:
            idx = torch.randint(0, n, (min(n, self.cfg.grid_cells_per_update),), device=dev)
        flat = self.density.view(-1)
        for s in range(0, idx.numel(), chunk):
            ii = idx[s : s + chunk]
            sigma = density_fn(self.cell_centers(ii, jitter=True)).float()
            if bool(self.initialized):
                flat[ii] = torch.maximum(flat[ii] * self.cfg.grid_decay, sigma)
            else:
                flat[ii] = sigma
        self.initialized.fill_(True)
        self.refresh_proposal(cell_size_m)

    @torch.no_grad()
    def refresh_proposal(self, cell_size_m: float) -> None:
        """Proposal density: dilated (max-pooled) cached density, capped.

        The cap keeps one cell's optical depth at ``proposal_cell_opacity`` so that the
        proposal weight spreads over the first few occupied cells along a ray instead of
        being absorbed by the dilated cell in *front* of a surface.
        """
        d = self.density.clone()
        # Prune: cells whose optical depth is below the threshold are empty (as
        # Instant-NGP's occupancy grid); this is what removes early "fog".
        d[d * cell_size_m < self.cfg.grid_prune_optical_depth] = 0.0
        d = d[None, None]
        k = 2 * self.cfg.grid_dilation + 1
        if k > 1:
            d = F.max_pool3d(d, kernel_size=k, stride=1, padding=self.cfg.grid_dilation)
        cap = self.cfg.proposal_cell_optical_depth / cell_size_m
        self.proposal.copy_(d.clamp_max(cap))

    def lookup(self, x01: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Proposal density at unit-cube points (..., 3) (trilinear or nearest cell)."""
        shp = x01.shape[:-1]
        g = (x01.reshape(-1, 3) * 2.0 - 1.0).to(self.proposal.dtype)
        # grid_sample's (x, y, z) index (W, H, D); cells are stored [z, y, x].
        return sample_volume(self.proposal, g, mode=mode, padding_mode="border", align_corners=False).view(shp)

    def random_empty_points(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Up to ``n`` jittered unit-cube points in cells the proposal calls empty."""
        empty = (self.proposal.view(-1) == 0).nonzero().squeeze(-1)
        if empty.numel() == 0:
            return torch.zeros(0, 3, device=self.density.device)
        pick = empty[torch.randint(0, empty.numel(), (n,), device=empty.device, generator=generator)]
        return self.cell_centers(pick, jitter=True)

    def occupancy_fraction(self) -> float:
        return float((self.proposal > 0).float().mean())


def _invert_cdf(edges: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample positions from a piecewise-constant pdf on ``edges`` (R, N+1) at u (R, M)."""
    pdf = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-12)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp(1, edges.shape[1] - 1)
    c0 = torch.gather(cdf, 1, idx - 1)
    c1 = torch.gather(cdf, 1, idx)
    e0 = torch.gather(edges, 1, idx - 1)
    e1 = torch.gather(edges, 1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return e0 + frac * (e1 - e0)


def narrow_bounds(near: torch.Tensor, far: torch.Tensor, band_near: torch.Tensor | None,
                  band_far: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The scene's per-ray bounds (near, far) narrowed to a band where the band
    overlaps them (no band, or no overlap: the scene's)."""
    if band_near is None or band_far is None:
        return near, far
    n2, f2 = torch.maximum(near, band_near), torch.minimum(far, band_far)
    ok = f2 > n2
    return torch.where(ok, n2, near), torch.where(ok, f2, far)


def sample_intervals(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    scene: SceneNormalization,
    grid: DensityGrid,
    cfg: SamplerConfig,
    randomized: bool,
    num_fine: int | None = None,
    num_coarse: int | None = None,
    near: torch.Tensor | None = None,
    far: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intervals along each ray: (t_starts, t_ends, occupied), each (R, num_fine).

    ``occupied`` is False for intervals whose midpoint lies in a pruned (empty) cell of
    the density grid: their density is zero by definition and the network is not run.

    ``near`` / ``far`` (R,), metres along the ray: narrower per-ray bounds within the
    scene's (e.g. a band around a known surface, :mod:`.depth_band`); a ray whose band
    misses the scene's bounds keeps the scene's.
    """
    r = origins.shape[0]
    dev = origins.device
    nf = num_fine or cfg.num_fine
    near, far = narrow_bounds(*scene.ray_bounds(origins, dirs), near, far)
    s0, s1 = scene.s_from_t(near), scene.s_from_t(far)
    nc = num_coarse or cfg.num_coarse
    base = torch.linspace(0.0, 1.0, nc + 1, device=dev)
    if randomized:
        jitter = (torch.rand(r, nc + 1, device=dev) - 0.5) / nc
        jitter[:, 0] = 0.0
        jitter[:, -1] = 0.0
        frac = (base[None] + jitter).clamp(0.0, 1.0)
    else:
        frac = base[None].expand(r, -1)
    s_edges = s0[:, None] + frac * (s1 - s0)[:, None]
    if bool(grid.initialized):
        t_edges = scene.t_from_s(s_edges)
        s_mid = 0.5 * (s_edges[:, 1:] + s_edges[:, :-1])
        t_mid = scene.t_from_s(s_mid)
        x = origins[:, None] + dirs[:, None] * t_mid[..., None]
        sigma = grid.lookup(scene.to_unit(x))
        delta = (t_edges[:, 1:] - t_edges[:, :-1]).clamp_min(0.0)
        tau = sigma * delta
        trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], -1), -1))
        w = trans * (1.0 - torch.exp(-tau))
        # A little uniform mass everywhere (so empty space keeps being checked) and a
        # uniform pdf for rays that cross no occupied cell.
        w = w + cfg.pdf_padding * w.sum(-1, keepdim=True) / nc + 1e-6
    else:
        w = torch.ones(r, nc, device=dev)
    if randomized:
        u = (torch.arange(nf + 1, device=dev)[None] + torch.rand(r, 1, device=dev)) / (nf + 1)
    else:
        u = ((torch.arange(nf + 1, device=dev) + 0.5) / (nf + 1))[None].expand(r, -1)
    u = torch.cat([torch.zeros_like(u[:, :1]), u[:, 1:-1], torch.ones_like(u[:, :1])], -1)
    s_fine = _invert_cdf(s_edges, w, u)
    t_fine = scene.t_from_s(s_fine)
    t0, t1 = t_fine[:, :-1], t_fine[:, 1:]
    if bool(grid.initialized):
        s_mid = 0.5 * (s_fine[:, 1:] + s_fine[:, :-1])
        x = origins[:, None] + dirs[:, None] * scene.t_from_s(s_mid)[..., None]
        occupied = grid.lookup(scene.to_unit(x), mode="nearest") > 0
    else:
        occupied = torch.ones_like(t0, dtype=torch.bool)
    return t0, t1, occupied
