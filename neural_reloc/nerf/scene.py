"""Mapping between world coordinates (metres) and the field's [0, 1]^3 domain.

Two modes:
* ``bounded``: an axis-aligned box (e.g. a room) is mapped affinely (per axis) onto the
  unit cube; rays are clipped to the box.
* ``contracted``: unbounded real scenes. Points are expressed relative to a centre and
  radius, and the mip-NeRF 360 contraction with the L-inf norm (as nerfacto) squeezes
  everything into a cube of half-size 2, mapped onto the unit cube. Samples are spaced
  linearly inside the inner cube and linearly in disparity outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.posed_images import PosedImages
from .config import SceneConfig

#: Smallest ray segment kept after clipping to a box, metres.
MIN_SEGMENT = 1e-4


@dataclass
class SceneNormalization:
    mode: str
    aabb_min: np.ndarray | None = None
    aabb_max: np.ndarray | None = None
    center: np.ndarray | None = None
    radius: float = 1.0
    near: float = 0.05
    far_contracted: float = 200.0

    # ------------------------------------------------------------ creation
    @classmethod
    def from_dataset(cls, data: PosedImages, cfg: SceneConfig, far_contracted: float) -> "SceneNormalization":
        mode = cfg.mode
        aabb = data.extras.get("aabb")
        if mode == "auto":
            mode = "bounded" if aabb is not None else "contracted"
        if mode == "bounded":
            if aabb is None:
                raise ValueError(
                    f"{data.source}: scene.mode=bounded needs an 'aabb' in the dataset; use mode=contracted"
                )
            lo, hi = np.asarray(aabb[0], float), np.asarray(aabb[1], float)
            margin = (hi - lo) * cfg.aabb_margin
            return cls(mode="bounded", aabb_min=lo - margin, aabb_max=hi + margin, near=cfg.near_m)
        if mode == "contracted":
            centers = data.camera_centers()
            # Optical axes (OpenGL: the camera looks along -z).
            axes = -data.c2w_opengl[:, :3, 2]
            focus = focus_point(centers, axes)
            dist = np.linalg.norm(centers - focus, axis=1)
            radius = float(np.median(dist) * cfg.inner_radius_scale)
            return cls(mode="contracted", center=focus, radius=radius, near=cfg.near_m, far_contracted=far_contracted)
        raise ValueError(f"scene.mode must be auto, bounded or contracted, got {cfg.mode!r}")

    def to_dict(self) -> dict:
        d = {"mode": self.mode, "near": self.near}
        if self.mode == "bounded":
            d.update(aabb_min=self.aabb_min.tolist(), aabb_max=self.aabb_max.tolist())
        else:
            d.update(center=self.center.tolist(), radius=self.radius, far_contracted=self.far_contracted)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SceneNormalization":
        if d["mode"] == "bounded":
            return cls(mode="bounded", aabb_min=np.array(d["aabb_min"]), aabb_max=np.array(d["aabb_max"]), near=d["near"])
        return cls(
            mode="contracted",
            center=np.array(d["center"]),
            radius=float(d["radius"]),
            near=d["near"],
            far_contracted=float(d["far_contracted"]),
        )

    @property
    def extent(self) -> float:
        """A characteristic scene size in metres (box diagonal or inner diameter)."""
        if self.mode == "bounded":
            return float(np.linalg.norm(self.aabb_max - self.aabb_min))
        return 2.0 * self.radius

    # ------------------------------------------------------------ mapping
    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) -> field domain [0, 1]^3."""
        if self.mode == "bounded":
            lo = torch.as_tensor(self.aabb_min, dtype=x.dtype, device=x.device)
            hi = torch.as_tensor(self.aabb_max, dtype=x.dtype, device=x.device)
            return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        c = torch.as_tensor(self.center, dtype=x.dtype, device=x.device)
        y = (x - c) / self.radius
        n = y.abs().amax(-1, keepdim=True).clamp_min(1e-9)
        y = torch.where(n <= 1.0, y, (2.0 - 1.0 / n) * (y / n))
        return y * 0.25 + 0.5

    def ray_bounds(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-ray (near, far) distances in metres; far <= near marks a miss."""
        r = origins.shape[0]
        if self.mode == "bounded":
            lo = torch.as_tensor(self.aabb_min, dtype=origins.dtype, device=origins.device)
            hi = torch.as_tensor(self.aabb_max, dtype=origins.dtype, device=origins.device)
            inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
            t0 = (lo - origins) * inv
            t1 = (hi - origins) * inv
            near = torch.minimum(t0, t1).amax(-1).clamp_min(self.near)
            far = torch.maximum(t0, t1).amin(-1)
            far = torch.where(far > near + MIN_SEGMENT, far, near)
            return near, far
        near = torch.full((r,), self.near, dtype=origins.dtype, device=origins.device)
        far = torch.full((r,), self.radius * self.far_contracted, dtype=origins.dtype, device=origins.device)
        return near, far

    # "s-space": where samples are spaced uniformly.
    def s_from_t(self, t: torch.Tensor) -> torch.Tensor:
        if self.mode == "bounded":
            return t
        r = self.radius
        return torch.where(t <= r, t / (2 * r), 1.0 - r / (2 * t.clamp_min(1e-9)))

    def t_from_s(self, s: torch.Tensor) -> torch.Tensor:
        if self.mode == "bounded":
            return s
        r = self.radius
        return torch.where(s <= 0.5, 2 * r * s, r / (2 * (1.0 - s).clamp_min(1e-9)))


def focus_point(centers: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Least-squares point closest to all camera optical axes (lines c + s*a).

    Falls back to the mean camera centre when the axes are (nearly) parallel, and
    only uses points in front of the cameras.
    """
    a = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, d in zip(centers, a):
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c
    if np.linalg.cond(A) > 1e6:
        return centers.mean(0)
    p = np.linalg.solve(A, b)
    in_front = np.mean(np.einsum("ij,ij->i", p - centers, a) > 0)
    return p if in_front > 0.5 else centers.mean(0)
