"""Analytic primitives of the procedural scenes: the room box seen from inside, boxes,
vertical cylinders and spheres, and the texture tiles their faces map to.

Rays and points are passed as separate float32 coordinate arrays of any (same) shape
(structure of arrays: numpy's elementwise kernels are far cheaper than gathers).
``intersect(o, dx, dy, dz)`` returns the hit distance (inf = miss) of rays from the
point ``o`` (3,) with unit directions (dx, dy, dz); ``surface(px, py, pz)`` returns
(face, u, v, nx, ny, nz) for points on the surface: the face index (tile offset), the
texture coordinates in metres and the outward (room: inward) unit normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Hits closer than this (metres) along a ray are ignored (self-intersection guard).
RAY_EPS = 1e-5
#: Ray direction components smaller than this are treated as this (avoids 0/0).
TINY_DIRECTION = 1e-12
#: Tolerance (metres) of the geometric containment tests when placing objects.
GEOM_TOL = 1e-9


@dataclass(eq=False)
class Tile:
    """A rectangle of the texture atlas holding one surface's albedo."""

    width_m: float
    height_m: float
    x0: int = 0
    y0: int = 0
    tw: int = 0
    th: int = 0


def _safe(x: np.ndarray) -> np.ndarray:
    """x pushed away from zero by TINY_DIRECTION (keeps its sign; never exactly 0)."""
    return x + np.copysign(np.asarray(TINY_DIRECTION, dtype=x.dtype), x)


def _corners_of(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


@dataclass(eq=False)
class Room:
    """The room interior: an axis-aligned box seen from inside.

    Faces (tile order): 0 x-min wall, 1 x-max wall, 2 y-min wall, 3 y-max wall,
    4 floor, 5 ceiling. Texture u runs along x (along y on the x walls), v along z
    (along y on floor and ceiling), both from the room's minimum corner.
    """

    lo: np.ndarray
    hi: np.ndarray
    name: str = "room"
    tile_base: int = 0

    def tile_sizes(self) -> list[tuple[float, float]]:
        sx, sy, sz = self.hi - self.lo
        return [(sy, sz), (sy, sz), (sx, sz), (sx, sz), (sx, sy), (sx, sy)]

    def intersect(self, o, dx, dy, dz):
        t = None
        for a, da in enumerate((dx, dy, dz)):
            da = _safe(da)
            ta = np.where(da > 0, np.float32(self.hi[a] - o[a]) / da, np.float32(self.lo[a] - o[a]) / da)
            t = ta if t is None else np.minimum(t, ta)
        return t

    def surface(self, px, py, pz):
        f32 = px.dtype.type
        mid = (self.lo + self.hi) / 2
        half = (self.hi - self.lo) / 2
        dist = [f32(half[a]) - np.abs(c - f32(mid[a])) for a, c in enumerate((px, py, pz))]
        ax0 = (dist[0] <= dist[1]) & (dist[0] <= dist[2])
        ax2 = ~ax0 & (dist[2] < dist[1])
        ax1 = ~ax0 & ~ax2
        pos = [c > f32(mid[a]) for a, c in enumerate((px, py, pz))]
        face = np.where(ax0, 0 + pos[0], np.where(ax1, 2 + pos[1], 4 + pos[2]))
        qx, qy, qz = px - f32(self.lo[0]), py - f32(self.lo[1]), pz - f32(self.lo[2])
        u = np.where(ax0, qy, qx)
        v = np.where(ax2, qy, qz)
        one = np.where(face % 2 == 1, f32(-1), f32(1))  # normals point into the room
        zero = np.zeros_like(px)
        return face, u, v, np.where(ax0, one, zero), np.where(ax1, one, zero), np.where(ax2, one, zero)

    def distance(self, p: np.ndarray) -> float:
        p = np.asarray(p, dtype=np.float64)
        return float(min((p - self.lo).min(), (self.hi - p).min()))


@dataclass(eq=False)
class Box:
    """A box rotated by ``yaw`` (radians) about the world z axis.

    Faces (tile order): 2 * axis + (1 if on the + side), axes of the box frame.
    """

    center: np.ndarray
    half: np.ndarray
    yaw: float
    name: str
    tile_base: int = 0

    @property
    def R(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def tile_sizes(self) -> list[tuple[float, float]]:
        hx, hy, hz = 2 * self.half
        return [(hy, hz), (hy, hz), (hx, hz), (hx, hz), (hx, hy), (hx, hy)]

    def _to_local(self, x, y):
        f32 = x.dtype.type
        c, s = f32(math.cos(self.yaw)), f32(math.sin(self.yaw))
        return c * x + s * y, c * y - s * x

    def intersect(self, o, dx, dy, dz):
        f32 = dx.dtype.type
        ol = self.R.T @ (np.asarray(o, np.float64) - self.center)
        dlx, dly = self._to_local(dx, dy)
        tn = tf = None
        for a, da in enumerate((dlx, dly, dz)):
            inv = f32(1) / _safe(da)
            t1 = f32(-self.half[a] - ol[a]) * inv
            t2 = f32(self.half[a] - ol[a]) * inv
            lo_, hi_ = np.minimum(t1, t2), np.maximum(t1, t2)
            tn = lo_ if tn is None else np.maximum(tn, lo_)
            tf = hi_ if tf is None else np.minimum(tf, hi_)
        return np.where((tn <= tf) & (tn > RAY_EPS), tn, f32(np.inf))

    def surface(self, px, py, pz):
        f32 = px.dtype.type
        h = [f32(v) for v in self.half]
        lx, ly = self._to_local(px - f32(self.center[0]), py - f32(self.center[1]))
        lz = pz - f32(self.center[2])
        r = [np.abs(lx) / h[0], np.abs(ly) / h[1], np.abs(lz) / h[2]]
        ax0 = (r[0] >= r[1]) & (r[0] >= r[2])
        ax2 = ~ax0 & (r[2] > r[1])
        ax1 = ~ax0 & ~ax2
        side = np.where(ax0, lx, np.where(ax1, ly, lz)) > 0
        face = np.where(ax0, 0, np.where(ax1, 2, 4)) + side
        u = np.where(ax0, ly + h[1], lx + h[0])
        v = np.where(ax2, ly + h[1], lz + h[2])
        sgn = np.where(side, f32(1), f32(-1))
        zero = np.zeros_like(px)
        nlx, nly = np.where(ax0, sgn, zero), np.where(ax1, sgn, zero)
        c, s = f32(math.cos(self.yaw)), f32(math.sin(self.yaw))
        return face, u, v, c * nlx - s * nly, s * nlx + c * nly, np.where(ax2, sgn, zero)

    def distance(self, p: np.ndarray) -> float:
        q = np.abs(self.R.T @ (np.asarray(p, dtype=np.float64) - self.center)) - self.half
        return float(np.linalg.norm(np.maximum(q, 0.0)) + min(q.max(), 0.0))

    def corners(self) -> np.ndarray:
        s = _corners_of(-np.ones(3), np.ones(3))
        return self.center + (s * self.half) @ self.R.T

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.corners()
        return c.min(0), c.max(0)


@dataclass(eq=False)
class Cylinder:
    """A vertical (z-axis) capped cylinder. Faces: 0 side, 1 top cap, 2 bottom cap."""

    center_xy: np.ndarray
    radius: float
    z0: float
    z1: float
    name: str
    tile_base: int = 0

    def tile_sizes(self) -> list[tuple[float, float]]:
        d = 2 * self.radius
        return [(2 * math.pi * self.radius, self.z1 - self.z0), (d, d), (d, d)]

    def intersect(self, o, dx, dy, dz):
        f32 = dx.dtype.type
        px, py, oz = o[0] - self.center_xy[0], o[1] - self.center_xy[1], o[2]
        a = _safe(dx * dx + dy * dy)
        b = f32(2 * px) * dx + f32(2 * py) * dy
        c = f32(px * px + py * py - self.radius**2)
        disc = b * b - f32(4) * a * c
        ts = (-b - np.sqrt(np.maximum(disc, f32(0)))) / (f32(2) * a)
        zs = f32(oz) + ts * dz
        hit = (disc > 0) & (ts > RAY_EPS) & (zs >= f32(self.z0)) & (zs <= f32(self.z1))
        t = np.where(hit, ts, f32(np.inf))
        for zc, needed in ((self.z1, oz > self.z1), (self.z0, oz < self.z0)):
            if not needed:
                continue
            tc = f32(zc - oz) / _safe(dz)
            xc, yc = f32(px) + tc * dx, f32(py) + tc * dy
            ok = (tc > RAY_EPS) & (xc * xc + yc * yc <= f32(self.radius**2))
            t = np.minimum(t, np.where(ok, tc, f32(np.inf)))
        return t

    def surface(self, px, py, pz):
        f32 = px.dtype.type
        r = f32(self.radius)
        qx, qy = px - f32(self.center_xy[0]), py - f32(self.center_xy[1])
        rho = np.sqrt(qx * qx + qy * qy)
        d_side = np.abs(rho - r)
        d_top = np.abs(pz - f32(self.z1))
        d_bot = np.abs(pz - f32(self.z0))
        side = (d_side <= d_top) & (d_side <= d_bot)
        top = ~side & (d_top <= d_bot)
        face = np.where(side, 0, np.where(top, 1, 2))
        u = np.where(side, (np.arctan2(qy, qx) + f32(math.pi)) * r, qx + r)
        v = np.where(side, pz - f32(self.z0), qy + r)
        inv_rho = f32(1) / np.maximum(rho, f32(TINY_DIRECTION))
        zero = np.zeros_like(px)
        nz = np.where(side, zero, np.where(top, f32(1), f32(-1)))
        return face, u, v, np.where(side, qx * inv_rho, zero), np.where(side, qy * inv_rho, zero), nz

    def distance(self, p: np.ndarray) -> float:
        p = np.asarray(p, dtype=np.float64)
        dr = math.hypot(*(p[:2] - self.center_xy)) - self.radius
        dz = max(self.z0 - p[2], p[2] - self.z1)
        return float(math.hypot(max(dr, 0.0), max(dz, 0.0)) + min(max(dr, dz), 0.0))

    def corners(self) -> np.ndarray:
        return _corners_of(*self.aabb())

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        r, c = self.radius, self.center_xy
        return np.array([c[0] - r, c[1] - r, self.z0]), np.array([c[0] + r, c[1] + r, self.z1])


@dataclass(eq=False)
class Sphere:
    """A sphere with a latitude-longitude texture (one face)."""

    center: np.ndarray
    radius: float
    name: str
    tile_base: int = 0

    def tile_sizes(self) -> list[tuple[float, float]]:
        return [(2 * math.pi * self.radius, math.pi * self.radius)]

    def intersect(self, o, dx, dy, dz):
        f32 = dx.dtype.type
        oc = np.asarray(o, np.float64) - self.center
        b = f32(oc[0]) * dx + f32(oc[1]) * dy + f32(oc[2]) * dz
        disc = b * b - f32(oc @ oc - self.radius**2)
        t = -b - np.sqrt(np.maximum(disc, f32(0)))
        return np.where((disc > 0) & (t > RAY_EPS), t, f32(np.inf))

    def surface(self, px, py, pz):
        f32 = px.dtype.type
        qx, qy, qz = px - f32(self.center[0]), py - f32(self.center[1]), pz - f32(self.center[2])
        inv = f32(1) / np.maximum(np.sqrt(qx * qx + qy * qy + qz * qz), f32(TINY_DIRECTION))
        nx, ny, nz = qx * inv, qy * inv, qz * inv
        r = f32(self.radius)
        u = (np.arctan2(ny, nx) + f32(math.pi)) * r
        v = np.arccos(np.clip(nz, f32(-1), f32(1))) * r
        return np.zeros(px.shape, dtype=np.int64), u, v, nx, ny, nz

    def distance(self, p: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(p, dtype=np.float64) - self.center) - self.radius)

    def corners(self) -> np.ndarray:
        return _corners_of(*self.aabb())

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center - self.radius, self.center + self.radius
