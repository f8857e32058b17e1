"""The neural map: field + scene normalization + density grid, and volume rendering.

Renders, at any camera pose, resolution or pixel subset (batched, chunked):
``rgb``, ``depth`` (z-depth along the OpenCV optical axis, metres), ``distance``
(along the ray), ``points`` (expected 3D point in world), ``accumulation``, any
intermediate layer of :data:`~neural_reloc.nerf.field.FEATURE_LAYERS` and any extra
head added to the field (e.g. ``descriptor``) — all as volumetric weighted sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..geometry.camera import Camera
from .config import NeuralMapConfig
from .field import FEATURE_LAYERS, NeuralField
from .rays import c2w_opencv_tensor, camera_params, pixel_dirs_opencv, view_pixels, world_rays
from .sampler import DensityGrid, sample_intervals
from .scene import SceneNormalization

#: At inference, samples whose rendering weight is below this skip the colour MLP and
#: heads (their contribution is bounded by it). Never while training: a surface grows
#: from low density only through the colour gradient of its low-weight samples.
MIN_WEIGHT_FOR_APPEARANCE = 1e-4
#: Rays per chunk when rendering views without gradients.
RENDER_CHUNK = 16384

GEOMETRY_OUTPUTS = ("depth", "distance", "points", "accumulation")


def heaviest_samples(weights: torch.Tensor, accumulation: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (R, k) of each ray's k heaviest samples and their weights rescaled to sum
    to the ray's accumulated opacity: how extra heads are rendered with ``head_samples``
    (and how the staged descriptor training caches surface samples)."""
    idx = weights.detach().topk(k, dim=1).indices
    w = weights.gather(1, idx)
    return idx, w / w.sum(1, keepdim=True).clamp_min(1e-8) * accumulation[:, None]


@dataclass
class RayBatch:
    origins: torch.Tensor  # (R, 3) world
    dirs: torch.Tensor  # (R, 3) world, unit
    dirs_cam_z: torch.Tensor  # (R,) z component of the direction in the OpenCV camera frame
    image_index: torch.Tensor | None = None  # (R,) appearance index, None = mean appearance
    near: torch.Tensor | None = None  # (R,) metres along the ray: a narrower band to sample (None: the scene's bounds)
    far: torch.Tensor | None = None  # (R,)


class NeuralMap(nn.Module):
    def __init__(self, cfg: NeuralMapConfig, scene: SceneNormalization, num_images: int):
        super().__init__()
        self.cfg = cfg
        self.scene = scene
        self.num_images = num_images
        self.field = NeuralField(cfg.field, num_images)
        self.grid = DensityGrid(cfg.sampler)

    @property
    def device(self) -> torch.device:
        return self.grid.density.device

    # ------------------------------------------------------------ rays
    def rays_for_view(
        self,
        camera: Camera,
        c2w_opengl: np.ndarray,
        pixels_uv: np.ndarray | torch.Tensor | None = None,
        stride: int = 1,
        image_index: int | None = None,
    ) -> RayBatch:
        dev = self.device
        uv = (
            view_pixels(camera, stride, dev)
            if pixels_uv is None
            else torch.as_tensor(pixels_uv, dtype=torch.float32, device=dev).reshape(-1, 2)
        )
        dirs_cam = pixel_dirs_opencv(camera_params([camera], dev), uv)
        o, d = world_rays(c2w_opencv_tensor(c2w_opengl, dev), dirs_cam)
        idx = None if image_index is None else torch.full((uv.shape[0],), image_index, dtype=torch.long, device=dev)
        return RayBatch(o, d, dirs_cam[:, 2], idx)

    # ------------------------------------------------------------ rendering
    def render_rays(
        self,
        rays: RayBatch,
        outputs: tuple[str, ...] = ("rgb", "depth"),
        randomized: bool = False,
        num_fine: int | None = None,
        heads_train_field: bool = True,
        head_samples: int | None = None,
        num_coarse: int | None = None,
        color_samples: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Volume-render ``outputs`` for a batch of rays (differentiable).

        ``heads_train_field=False``: extra heads (e.g. descriptors) are rendered from
        detached field features and weights, so their losses train the heads only and
        cannot reshape the geometry or the shared grid.

        ``head_samples=k``: extra heads are evaluated at the k heaviest samples of each
        ray only, their weights rescaled to sum to the ray's opacity (what the staged
        descriptor training renders, :func:`cache_surface_samples`); the heads are the
        costliest part of a descriptor render and most samples near a surface carry
        little weight.

        ``color_samples=k``: the same for the colour (``rgb``): the colour MLP runs at the
        k heaviest samples of each ray only (inference renders of opaque surfaces, where
        the colour MLP is the costliest part).

        ``num_fine`` / ``num_coarse`` override the sampler's fine samples (network
        evaluations) and coarse proposal samples per ray.
        """
        field = self.field
        t0, t1, occupied = sample_intervals(
            rays.origins, rays.dirs, self.scene, self.grid, self.cfg.sampler, randomized, num_fine, num_coarse,
            rays.near, rays.far,
        )
        r, s = t0.shape
        s_mid = 0.5 * (self.scene.s_from_t(t0) + self.scene.s_from_t(t1))
        t_mid = self.scene.t_from_s(s_mid)
        x_world = rays.origins[:, None] + rays.dirs[:, None] * t_mid[..., None]
        delta = (t1 - t0).clamp_min(0.0)
        if torch.is_grad_enabled():
            # Training: intervals in cells the grid calls empty stay live as *probes*
            # spanning at most one cell, so a surface pruned too early still gets a
            # gradient and can come back, while a long empty interval cannot act as fog.
            live = torch.arange(r * s, device=t0.device)
            delta = torch.where(occupied, delta, delta.clamp_max(self.grid_cell_size_m()))
        else:
            # Inference: empty cells have zero density; the network runs on occupied
            # ("live") samples only, packed.
            live = occupied.reshape(-1).nonzero().squeeze(-1)
        x01 = self.scene.to_unit(x_world.reshape(-1, 3)[live])
        geo = field.geometry(x01)
        sigma = torch.zeros(r * s, dtype=geo["sigma"].dtype, device=x01.device).index_put(
            (live,), geo["sigma"]
        ).view(r, s)
        tau = sigma * delta
        excl = torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], -1), -1)
        trans = torch.exp(-excl)
        weights = trans * (1.0 - torch.exp(-tau))
        out: dict[str, torch.Tensor] = {"weights": weights, "t_mid": t_mid, "delta": delta, "t0": t0, "t1": t1}
        acc = weights.sum(-1)
        if "accumulation" in outputs:
            out["accumulation"] = acc
        if any(k in outputs for k in ("depth", "distance", "points")):
            dist = (weights * t_mid).sum(-1)
            # Unseen rays (acc ~ 0) get the far bound's value scaled by acc -> 0; keep
            # the raw expectation, normalized by accumulation where it is meaningful.
            dist = dist / acc.clamp_min(1e-6)
            if "distance" in outputs:
                out["distance"] = dist
            if "depth" in outputs:
                out["depth"] = dist * rays.dirs_cam_z
            if "points" in outputs:
                out["points"] = rays.origins + rays.dirs * dist[:, None]
        # Per-sample features are needed only where the weight matters.
        need_color = "rgb" in outputs or "color_hidden" in outputs
        heads = [k for k in outputs if k in field.heads]
        layers = [k for k in outputs if k in ("encoding", "density_hidden", "geo_feat")]
        topk_heads = bool(heads) and head_samples is not None and head_samples < s
        topk_color = need_color and color_samples is not None and color_samples < s
        if (need_color and not topk_color) or (heads and not topk_heads):
            w_live = weights.reshape(-1)[live]
            if torch.is_grad_enabled():
                keep = torch.arange(live.numel(), device=live.device)
            else:
                keep = (w_live > MIN_WEIGHT_FOR_APPEARANCE).nonzero().squeeze(-1)
            ray_of = live[keep] // s
            needed = set() if topk_heads else set(i for h in heads for i in field.heads[h].inputs)
            if need_color and not topk_color:
                needed.update(("geo_feat", "encoding"))
            geo_k = {k: geo[k][keep] for k in needed}
            wk = w_live[keep][:, None]
        if need_color:
            if topk_color:
                geo_c, w_c, ray_c = self._heaviest_samples(geo, weights, live, acc, color_samples, ("geo_feat", "encoding"))
            else:
                geo_c, w_c, ray_c = geo_k, wk, ray_of
            app = None
            if field.appearance is not None:
                app = field.appearance_codes(
                    None if rays.image_index is None else rays.image_index[ray_c], ray_c.numel(), x01.device
                )
            col = field.color(geo_c, rays.dirs[ray_c], app)
            for name in ("rgb", "color_hidden"):
                if name in outputs:
                    v = col[name]
                    out[name] = torch.zeros(r, v.shape[-1], device=v.device, dtype=v.dtype).index_add(0, ray_c, v * w_c)
        if heads:
            if topk_heads:
                geo_h, wk_h, ray_of_h = self._heaviest_samples(geo, weights, live, acc, head_samples, heads)
            else:
                geo_h, wk_h, ray_of_h = geo_k, wk, ray_of
            if not heads_train_field:
                geo_h = {k: v.detach() for k, v in geo_h.items()}
                wk_h = wk_h.detach()
            hv = field.head_outputs(geo_h, heads)
            for name, v in hv.items():
                out[name] = torch.zeros(r, v.shape[-1], device=v.device, dtype=v.dtype).index_add(0, ray_of_h, v * wk_h)
        for name in layers:
            v = geo[name]
            out[name] = torch.zeros(r, v.shape[-1], device=v.device, dtype=v.dtype).index_add(
                0, live // s, v * weights.reshape(-1)[live][:, None]
            )
        return out

    def _heaviest_samples(self, geo, weights, live, acc, k: int, inputs):
        """Field features (``inputs``: feature names, or head names whose inputs are
        gathered), weights (rescaled to the ray's opacity) and ray index of the k
        heaviest live samples of each ray."""
        r, s = weights.shape
        idx, w = heaviest_samples(weights, acc, k)
        flat = (idx + torch.arange(r, device=idx.device)[:, None] * s).reshape(-1)
        pos = torch.full((r * s,), -1, dtype=torch.long, device=idx.device)
        pos[live] = torch.arange(live.numel(), device=idx.device)
        sel = pos[flat]
        ok = (sel >= 0) & (w.reshape(-1) > 0)
        needed = set()
        for name in inputs:
            needed.update(self.field.heads[name].inputs if name in self.field.heads else (name,))
        geo_h = {name: geo[name][sel[ok]] for name in needed}
        return geo_h, w.reshape(-1)[ok][:, None], flat[ok] // s

    @torch.no_grad()
    def render_view(
        self,
        camera: Camera,
        c2w_opengl: np.ndarray,
        outputs: tuple[str, ...] = ("rgb", "depth"),
        pixels_uv: np.ndarray | None = None,
        stride: int = 1,
        image_index: int | None = None,
        chunk: int = RENDER_CHUNK,
        num_fine: int | None = None,
        head_samples: int | None = None,
        num_coarse: int | None = None,
        color_samples: int | None = None,
        ray_bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Render a view (or a pixel subset) to numpy arrays.

        With ``pixels_uv=None`` arrays are (H/stride, W/stride, C) images; otherwise
        (N, C) per pixel. Single-channel outputs drop the channel axis.

        ``ray_bounds`` = (near, far), one value per ray in render order, metres along the
        ray: sample only there (within the scene's bounds), e.g. a band around a surface
        found by a coarser render (:func:`~.depth_band.render_view_depth_guided`).
        """
        unknown = [
            o
            for o in outputs
            if o not in ("rgb",) + GEOMETRY_OUTPUTS + FEATURE_LAYERS and o not in self.field.heads
        ]
        if unknown:
            raise ValueError(
                f"unknown render outputs {unknown}; available: rgb, {', '.join(GEOMETRY_OUTPUTS)}, "
                f"{', '.join(FEATURE_LAYERS)}, heads {list(self.field.heads)}"
            )
        rays = self.rays_for_view(camera, c2w_opengl, pixels_uv, stride, image_index)
        n = rays.origins.shape[0]
        near = far = None
        if ray_bounds is not None:
            near, far = (torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1), device=self.device)
                         for b in ray_bounds)
            if near.shape[0] != n or far.shape[0] != n:
                raise ValueError(f"ray_bounds have {near.shape[0]} / {far.shape[0]} values for {n} rays")
        parts: dict[str, list[torch.Tensor]] = {o: [] for o in outputs}
        for s in range(0, n, chunk):
            sub = RayBatch(
                rays.origins[s : s + chunk],
                rays.dirs[s : s + chunk],
                rays.dirs_cam_z[s : s + chunk],
                None if rays.image_index is None else rays.image_index[s : s + chunk],
                None if near is None else near[s : s + chunk],
                None if far is None else far[s : s + chunk],
            )
            res = self.render_rays(
                sub, outputs, randomized=False, num_fine=num_fine, head_samples=head_samples, num_coarse=num_coarse,
                color_samples=color_samples,
            )
            for o in outputs:
                parts[o].append(res[o])
        result = {}
        for o in outputs:
            v = torch.cat(parts[o], 0).float().cpu().numpy()
            if pixels_uv is None:
                h, w = camera.height // stride, camera.width // stride
                v = v.reshape(h, w, *v.shape[1:])
            result[o] = v
        return result

    # ------------------------------------------------------------ grid
    def grid_cell_size_m(self) -> float:
        """Edge of a density-grid cell in metres (inner region for contracted scenes)."""
        if self.scene.mode == "bounded":
            return float(np.mean(self.scene.aabb_max - self.scene.aabb_min)) / self.grid.resolution
        return 4.0 * self.scene.radius / self.grid.resolution

    def update_grid(self, all_cells: bool = False) -> None:
        was = self.training
        self.eval()
        self.grid.update(self.field.density, self.grid_cell_size_m(), all_cells=all_cells)
        self.train(was)
