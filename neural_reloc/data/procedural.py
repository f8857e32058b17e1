"""A procedural indoor scene with exact ground truth: the project's embedded default.

The scene is a closed room (metric, z-up world) with floor, ceiling, four walls and a
dozen boxes, cylinders and spheres, textured with multi-octave value noise, coloured
blobs and patterned "posters" in per-surface palettes, plus deliberately hard parts (a
plain-painted wall section, a plain ceiling and a repetitive tiled floor). Shading is
Lambertian (ambient + one directional light + one point lamp, no shadows), so the colour
of a 3D point does not depend on the viewing direction: a NeRF can represent it exactly.

Rendering is analytic ray casting, vectorized with numpy. Pixels on a silhouette or
surface edge, and pixels whose footprint on the surface is larger than a texel, are
supersampled on an n x n grid (box filter), so images downscaled with
``cv2.INTER_AREA`` agree with images rendered directly at the lower resolution. Depth is
the z-depth (along the optical axis) of the ray through the pixel centre.

:func:`generate_procedural_scene` writes an instant-ngp / nerfstudio ``transforms.json``
dataset (RGB PNGs, 16-bit millimetre depth PNGs, ``split.json``);
:func:`render_procedural_view` renders the same scene from any pose and camera (the
ground truth for tests and benchmarks).
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.camera import Camera
from ..geometry.frames import opencv_c2w_from_opengl_c2w, opengl_c2w_from_opencv_c2w
from ..geometry.se3 import invert_pose, make_pose

#: Bumped whenever the generator's output for a given config changes (part of the
#: stamp hash, so old datasets are regenerated rather than silently reused).
GENERATOR_VERSION = 1
SCENE_NAME = "neural_reloc procedural"
STAMP_NAME = ".procedural_stamp.json"
#: Depth PNGs store millimetres; 0 means "no depth".
DEPTH_UNIT_SCALE = 0.001
UINT16_MAX = 65535
FRAME_NAME_FORMAT = "{:04d}.png"
#: zlib level of the written PNGs (explicit, so the bytes do not depend on OpenCV's
#: default; 3 is as fast as 1 here and makes smaller depth images).
PNG_COMPRESSION = 3
#: Hits closer than this (metres) along a ray are ignored (self-intersection guard).
RAY_EPS = 1e-5
#: Ray direction components smaller than this are treated as this (avoids 0/0).
TINY_DIRECTION = 1e-12
#: Width of the texture atlas in texels (tiles are shelf-packed into rows).
ATLAS_WIDTH = 4096
#: cv2.remap needs both map dimensions below SHRT_MAX; larger lookups are folded into
#: rows of REMAP_ROW samples.
REMAP_MAX_SIDE = 32767
REMAP_ROW = 1024
#: Screen rectangles used to cull objects are grown by this many pixels.
CULL_MARGIN_PX = 2
#: Camera-frame depth below which a bounding-box corner counts as "behind the camera"
#: (then the object is tested against every pixel).
CULL_NEAR_M = 1e-3
#: |cos| of the incidence angle is clamped to this when estimating pixel footprints.
MIN_FOOTPRINT_COS = 0.05
#: Tolerance (metres) of the geometric containment tests when placing objects.
GEOM_TOL = 1e-9
#: Value noise: random lattice cells added around a tile, and the offset (in cells)
#: of the tile inside the upsampled lattice (away from the interpolation border).
NOISE_GRID_PAD_CELLS = 4
NOISE_OFFSET_CELLS = 1.5
#: Guards the normalization of noise by its standard deviation.
NOISE_STD_EPS = 1e-6
#: Poster patterns: 0 stripes, 1 rings, 2 checker, 3 frame, 4 two-tone noise.
POSTER_KINDS = 5
#: Centre of a ring poster, as a fraction of the poster size (random in this range).
POSTER_RING_CENTER = (0.3, 0.7)
#: Band width of a frame poster, as a fraction of its shorter side.
POSTER_FRAME_BAND = (0.12, 0.25)
#: Two-tone noise poster: signed distance (metres) per unit of noise std at the
#: boundary, i.e. how sharp the two-tone transition is.
TWO_TONE_SHARPNESS_M = 0.05
#: Independent random streams, so that e.g. changing an object count does not change
#: the wall textures.
STREAM_TRAJECTORY, STREAM_OBJECTS, STREAM_TEXTURES = 1, 2, 3


@dataclass(frozen=True)
class ProceduralSceneConfig:
    """Every tunable of the procedural scene (lengths in metres, angles in degrees)."""

    seed: int = 0

    # -- camera (pinhole, square pixels, principal point at the image centre)
    width: int = 640
    height: int = 480
    hfov_deg: float = 60.0

    # -- trajectory: a closed loop around the room centre, looking outwards
    num_frames: int = 120
    #: every ``test_stride``-th frame (those with index % stride == stride // 2) is a
    #: held-out test view; the others are training views.
    test_stride: int = 5
    traj_center_xy: tuple[float, float] = (0.0, 0.0)
    traj_radius_x: float = 1.4
    traj_radius_y: float = 1.0
    traj_start_angle_deg: float = 0.0
    #: relative radius modulation amplitude and its cycles per loop
    traj_radius_wobble: float = 0.08
    traj_radius_cycles: int = 3
    traj_height_mean: float = 1.4
    traj_height_amplitude: float = 0.25
    traj_height_cycles: int = 2
    #: heading = outward direction + offset + amplitude * sin(cycles * angle + phase)
    #: (offset 90 = looking along the direction of travel)
    traj_yaw_offset_deg: float = 30.0
    traj_yaw_amplitude_deg: float = 55.0
    traj_yaw_cycles: int = 2
    traj_pitch_mean_deg: float = -8.0
    traj_pitch_amplitude_deg: float = 12.0
    traj_pitch_cycles: int = 3
    traj_roll_amplitude_deg: float = 3.0
    traj_roll_cycles: int = 4
    #: no camera centre is closer than this to any surface (checked; ValueError if not)
    min_clearance_m: float = 0.5

    # -- room: [-sx/2, sx/2] x [-sy/2, sy/2] x [0, sz]
    room_size: tuple[float, float, float] = (6.0, 5.0, 2.8)

    # -- objects
    num_floor_boxes: int = 4
    floor_box_half_xy: tuple[float, float] = (0.15, 0.42)
    floor_box_height: tuple[float, float] = (0.3, 1.1)
    num_floor_cylinders: int = 2
    floor_cylinder_radius: tuple[float, float] = (0.12, 0.3)
    floor_cylinder_height: tuple[float, float] = (0.4, 1.3)
    #: floor-to-ceiling pillar at the trajectory centre (0 disables it)
    central_pillar_radius: float = 0.2
    num_pillars: int = 1
    pillar_radius: tuple[float, float] = (0.1, 0.22)
    num_spheres: int = 3
    sphere_radius: tuple[float, float] = (0.12, 0.3)
    #: floating objects (spheres, boxes) keep at least this gap to floor and ceiling
    float_gap_m: float = 0.3
    sphere_on_floor_probability: float = 0.5
    num_wall_cabinets: int = 3
    cabinet_width: tuple[float, float] = (0.6, 1.4)
    cabinet_depth: tuple[float, float] = (0.22, 0.35)
    cabinet_height: tuple[float, float] = (0.12, 0.45)
    cabinet_z: tuple[float, float] = (0.9, 2.2)
    num_floating_boxes: int = 1
    floating_box_half: tuple[float, float] = (0.12, 0.3)
    floating_box_z: tuple[float, float] = (1.6, 2.3)
    #: objects keep this extra distance beyond ``min_clearance_m`` from the camera path
    object_path_margin_m: float = 0.1
    #: minimum gap between objects' bounding boxes
    object_gap_m: float = 0.08
    #: trajectory samples per frame used for object placement clearance
    placement_path_oversampling: int = 4
    placement_attempts: int = 3000

    # -- textures (sampled on a texel grid, magnified bilinearly)
    texel_m: float = 0.01
    #: value-noise octaves: feature sizes and relative amplitudes
    noise_scales_m: tuple[float, ...] = (0.4, 0.16, 0.06)
    noise_amplitudes: tuple[float, ...] = (1.0, 0.55, 0.25)
    #: how far the noise mixes between a surface's two base colours (0..1)
    noise_contrast: float = 0.4
    #: relative brightness modulation (std) by the finer noise octaves
    brightness_noise: float = 0.12
    #: fraction of a surface covered by its third ("patch") colour, whose hue is offset
    #: from the surface's by a random amount in ``patch_hue_offset``
    patch_fraction: float = 0.3
    patch_hue_offset: tuple[float, float] = (0.25, 0.75)
    #: width of the patch boundary ramp, in standard deviations of the patch noise
    patch_softness: float = 0.15
    #: saturation / value ranges of surface base colours
    base_saturation: tuple[float, float] = (0.2, 0.6)
    base_value: tuple[float, float] = (0.4, 0.8)
    #: value / hue difference between a surface's two base colours
    base_value_step: tuple[float, float] = (0.15, 0.3)
    base_hue_step: float = 0.08
    #: surface hues follow the golden-ratio sequence (distinct palettes) plus this jitter
    surface_hue_jitter: float = 0.05
    accent_saturation: tuple[float, float] = (0.5, 0.9)
    accent_value: tuple[float, float] = (0.25, 0.95)
    #: edge softness of posters, blobs, stripes, tile grout (about one texel)
    edge_softness_m: float = 0.012
    poster_density_per_m2: float = 1.0
    poster_size_m: tuple[float, float] = (0.15, 0.6)
    pattern_period_m: tuple[float, float] = (0.08, 0.2)
    blob_density_per_m2: float = 5.0
    blob_radius_m: tuple[float, float] = (0.04, 0.14)
    object_blob_density_per_m2: float = 14.0
    object_noise_contrast: float = 0.52
    object_poster_density_per_m2: float = 2.0
    object_poster_size_m: tuple[float, float] = (0.08, 0.3)
    floor_tile_m: float = 0.5
    floor_grout_m: float = 0.02
    #: grout colour: the complementary hue at this fraction of a base colour's value
    floor_grout_value: float = 0.6
    floor_tile_jitter: float = 0.06
    floor_noise_scale: float = 0.35
    floor_rugs: int = 1
    rug_size_m: tuple[float, float] = (0.8, 1.4)
    #: fraction of the +x wall's width painted plain (low texture), floor to ceiling
    plain_wall_fraction: float = 0.3
    #: noise amplitude on plain surfaces (plain wall section, ceiling)
    plain_noise_amplitude: float = 0.02
    ceiling_saturation: float = 0.08
    ceiling_value: float = 0.85

    # -- lighting (view-independent)
    ambient: float = 0.55
    sun_direction: tuple[float, float, float] = (0.35, 0.2, 1.0)
    sun_intensity: float = 0.3
    lamp_position: tuple[float, float, float] = (0.4, -0.3, 2.5)
    lamp_intensity: float = 0.45
    lamp_falloff_m: float = 2.5

    # -- anti-aliasing
    #: edge pixels and pixels with a footprint above ``aa_footprint_texels`` texels get
    #: ``supersample`` x ``supersample`` samples
    supersample: int = 3
    aa_footprint_texels: float = 1.0

    def camera(self) -> Camera:
        fx = 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2.0)
        return Camera(
            width=self.width,
            height=self.height,
            fx=fx,
            fy=fx,
            cx=self.width / 2.0,
            cy=self.height / 2.0,
            source="procedural scene",
        )

    def config_hash(self) -> str:
        blob = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ===================================================================== primitives
# Rays and points are passed as separate float32 coordinate arrays of any (same) shape
# (structure of arrays: numpy's elementwise kernels are far cheaper than gathers).
# ``intersect(o, dx, dy, dz)`` returns the hit distance (inf = miss) of rays from the
# point ``o`` (3,) with unit directions (dx, dy, dz); ``surface(px, py, pz)`` returns
# (face, u, v, nx, ny, nz) for points on the surface: the face index (tile offset), the
# texture coordinates in metres and the outward (room: inward) unit normal.


@dataclass(eq=False)
class _Tile:
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


# ====================================================================== the scene
@dataclass(eq=False)
class ProceduralScene:
    """Everything needed to render the procedural scene and its trajectory."""

    config: ProceduralSceneConfig
    room: Room
    objects: list
    tiles: list[_Tile]
    atlas: np.ndarray  # (Ha, ATLAS_WIDTH, 3) float32 albedo in [0, 1]
    camera: Camera
    c2w_opengl: np.ndarray  # (N, 4, 4) trajectory
    split: dict[str, list[int]] = field(default_factory=dict)
    tile_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # per tile: first and last texel centre (x0, y0, x1, y1) in atlas coordinates
        self.tile_bounds = tuple(
            np.array(v, dtype=np.float32)
            for v in zip(*[(t.x0, t.y0, t.x0 + t.tw - 1, t.y0 + t.th - 1) for t in self.tiles])
        )

    @property
    def primitives(self) -> list:
        return [self.room, *self.objects]

    @property
    def aabb(self) -> list[list[float]]:
        return [self.room.lo.tolist(), self.room.hi.tolist()]

    def frame_names(self) -> list[str]:
        return [FRAME_NAME_FORMAT.format(i) for i in range(len(self.c2w_opengl))]

    def min_clearance(self, point: np.ndarray) -> float:
        """Distance from a point to the nearest surface (negative inside an object)."""
        return min(p.distance(point) for p in self.primitives)


def build_scene(config: ProceduralSceneConfig = ProceduralSceneConfig()) -> ProceduralScene:
    """Room, objects, textures and trajectory of a config (deterministic from the seed)."""
    _validate(config)
    sx, sy, sz = config.room_size
    room = Room(lo=np.array([-sx / 2, -sy / 2, 0.0]), hi=np.array([sx / 2, sy / 2, sz]))
    c2w_opencv_path = _trajectory_c2w_opencv(config, config.num_frames)
    dense_path = _trajectory_c2w_opencv(config, config.num_frames * config.placement_path_oversampling)
    objects = _place_objects(config, room, dense_path[:, :3, 3])

    for i, c2w in enumerate(c2w_opencv_path):
        centre = c2w[:3, 3]
        for prim in (room, *objects):
            dist = prim.distance(centre)
            if dist < config.min_clearance_m:
                raise ValueError(
                    f"procedural scene: camera {i} at {np.round(centre, 3).tolist()} is {dist:.3f} m from "
                    f"{prim.name} (< min_clearance_m={config.min_clearance_m}); adjust the trajectory or room"
                )

    tiles, tile_names = [], []
    for prim in (room, *objects):
        prim.tile_base = len(tiles)
        for k, (w, h) in enumerate(prim.tile_sizes()):
            tiles.append(_Tile(width_m=float(w), height_m=float(h)))
            tile_names.append(f"{prim.name}/{k}")
    atlas = _build_atlas(config, room, objects, tiles)

    c2w_opengl = np.stack([opengl_c2w_from_opencv_c2w(T) for T in c2w_opencv_path])
    k = config.test_stride
    test = [i for i in range(config.num_frames) if k > 0 and i % k == k // 2]
    train = [i for i in range(config.num_frames) if i not in set(test)]
    return ProceduralScene(
        config=config,
        room=room,
        objects=objects,
        tiles=tiles,
        atlas=atlas,
        camera=config.camera(),
        c2w_opengl=c2w_opengl,
        split={"train": train, "test": test},
        tile_names=tile_names,
    )


def _validate(config: ProceduralSceneConfig) -> None:
    problems = []
    if config.width <= 0 or config.height <= 0:
        problems.append(f"image size {config.width}x{config.height}")
    if not 0 < config.hfov_deg < 180:
        problems.append(f"hfov_deg={config.hfov_deg}")
    if config.num_frames < 2:
        problems.append(f"num_frames={config.num_frames} (need >= 2)")
    if config.test_stride == 1 or config.test_stride < 0:
        problems.append(f"test_stride={config.test_stride} (0 = no test split, or >= 2)")
    if config.supersample < 1:
        problems.append(f"supersample={config.supersample}")
    if len(config.noise_scales_m) != len(config.noise_amplitudes):
        problems.append("noise_scales_m and noise_amplitudes differ in length")
    if min(config.room_size) <= 0 or config.texel_m <= 0:
        problems.append("room_size and texel_m must be positive")
    if problems:
        raise ValueError("invalid ProceduralSceneConfig: " + "; ".join(problems))


# ==================================================================== trajectory
def _trajectory_c2w_opencv(config: ProceduralSceneConfig, n: int) -> np.ndarray:
    """OpenCV camera-to-world poses of ``n`` evenly spaced samples of the closed loop."""
    phases = np.random.default_rng([config.seed, STREAM_TRAJECTORY]).uniform(0.0, 2 * math.pi, 5)
    theta = 2 * math.pi * np.arange(n) / n + math.radians(config.traj_start_angle_deg)
    scale = 1.0 + config.traj_radius_wobble * np.sin(config.traj_radius_cycles * theta + phases[0])
    cx, cy = config.traj_center_xy
    x = cx + config.traj_radius_x * scale * np.cos(theta)
    y = cy + config.traj_radius_y * scale * np.sin(theta)
    z = config.traj_height_mean + config.traj_height_amplitude * np.sin(
        config.traj_height_cycles * theta + phases[1]
    )
    yaw = (
        theta
        + math.radians(config.traj_yaw_offset_deg)
        + math.radians(config.traj_yaw_amplitude_deg) * np.sin(config.traj_yaw_cycles * theta + phases[2])
    )
    pitch = math.radians(config.traj_pitch_mean_deg) + math.radians(config.traj_pitch_amplitude_deg) * np.sin(
        config.traj_pitch_cycles * theta + phases[3]
    )
    roll = math.radians(config.traj_roll_amplitude_deg) * np.sin(config.traj_roll_cycles * theta + phases[4])
    up = np.array([0.0, 0.0, 1.0])
    poses = []
    for i in range(n):
        fwd = np.array(
            [math.cos(yaw[i]) * math.cos(pitch[i]), math.sin(yaw[i]) * math.cos(pitch[i]), math.sin(pitch[i])]
        )
        right = np.cross(fwd, up)
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        R = np.stack([right, down, fwd], axis=1)  # columns: OpenCV camera axes in world
        c, s = math.cos(roll[i]), math.sin(roll[i])
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # roll about the optical axis
        poses.append(make_pose(R, [x[i], y[i], z[i]]))
    return np.stack(poses)


# ======================================================================= objects
def _place_objects(config: ProceduralSceneConfig, room: Room, path: np.ndarray) -> list:
    rng = np.random.default_rng([config.seed, STREAM_OBJECTS])
    lo, hi = room.lo, room.hi
    keep_off = config.min_clearance_m + config.object_path_margin_m
    placed: list = []

    def fits(obj) -> bool:
        blo, bhi = obj.aabb()
        if np.any(blo < lo - GEOM_TOL) or np.any(bhi > hi + GEOM_TOL):
            return False
        g = config.object_gap_m
        for other in placed:
            olo, ohi = other.aabb()
            if np.all(blo < ohi + g) and np.all(olo < bhi + g):
                return False
        return all(obj.distance(p) >= keep_off for p in path)

    def place(make, count: int, kind: str) -> None:
        for k in range(count):
            for _ in range(config.placement_attempts):
                obj = make(f"{kind}{k}")
                if fits(obj):
                    placed.append(obj)
                    break
            else:
                raise ValueError(
                    f"procedural scene: could not place {kind}{k} in {config.placement_attempts} attempts "
                    "(room too small / trajectory too wide for the requested objects)"
                )

    def uniform_xy(margin: float) -> np.ndarray:
        return np.array(
            [rng.uniform(lo[0] + margin, hi[0] - margin), rng.uniform(lo[1] + margin, hi[1] - margin)]
        )

    if config.central_pillar_radius > 0:
        pillar = Cylinder(
            center_xy=np.array(config.traj_center_xy, dtype=np.float64),
            radius=config.central_pillar_radius,
            z0=lo[2],
            z1=hi[2],
            name="central_pillar",
        )
        if not fits(pillar):
            raise ValueError("procedural scene: the central pillar is too close to the camera path")
        placed.append(pillar)

    def floor_box(name):
        hx, hy = rng.uniform(*config.floor_box_half_xy, size=2)
        h = rng.uniform(*config.floor_box_height)
        c = uniform_xy(0.0)
        return Box(
            np.array([c[0], c[1], lo[2] + h / 2]), np.array([hx, hy, h / 2]), rng.uniform(0, math.pi), name
        )

    def floor_cylinder(name):
        r = rng.uniform(*config.floor_cylinder_radius)
        return Cylinder(uniform_xy(r), r, lo[2], lo[2] + rng.uniform(*config.floor_cylinder_height), name)

    def pillar(name):
        r = rng.uniform(*config.pillar_radius)
        return Cylinder(uniform_xy(r), r, lo[2], hi[2], name)

    def sphere(name):
        r = rng.uniform(*config.sphere_radius)
        on_floor = rng.random() < config.sphere_on_floor_probability
        z = (
            lo[2] + r
            if on_floor
            else rng.uniform(lo[2] + r + config.float_gap_m, hi[2] - r - config.float_gap_m)
        )
        c = uniform_xy(r)
        return Sphere(np.array([c[0], c[1], z]), r, name)

    def cabinet(name):
        w = rng.uniform(*config.cabinet_width)
        dep = rng.uniform(*config.cabinet_depth)
        h = rng.uniform(*config.cabinet_height)
        z = rng.uniform(*config.cabinet_z)
        wall = int(rng.integers(4))
        axis, side = wall // 2, wall % 2
        along = 1 - axis
        c = np.zeros(3)
        c[2] = min(z, hi[2] - h / 2)
        c[axis] = (hi[axis] - dep / 2) if side else (lo[axis] + dep / 2)
        c[along] = rng.uniform(lo[along] + w / 2, hi[along] - w / 2)
        half = np.zeros(3)
        half[axis], half[along], half[2] = dep / 2, w / 2, h / 2
        return Box(c, half, 0.0, name)

    def floating_box(name):
        half = rng.uniform(*config.floating_box_half, size=3)
        c = uniform_xy(0.0)
        z = min(rng.uniform(*config.floating_box_z), hi[2] - half[2] - config.float_gap_m)
        return Box(np.array([c[0], c[1], z]), half, rng.uniform(0, math.pi), name)

    place(pillar, config.num_pillars, "pillar")
    place(cabinet, config.num_wall_cabinets, "cabinet")
    place(floor_box, config.num_floor_boxes, "box")
    place(floor_cylinder, config.num_floor_cylinders, "cylinder")
    place(sphere, config.num_spheres, "sphere")
    place(floating_box, config.num_floating_boxes, "floating_box")
    return placed


# ======================================================================= textures
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _soft(sd: np.ndarray, softness: float) -> np.ndarray:
    """Coverage from a signed distance in metres (positive inside), ramp of ``softness``."""
    return np.clip(0.5 + sd / softness, 0.0, 1.0).astype(np.float32)


def _value_noise(rng: np.random.Generator, th: int, tw: int, scale_texels: float) -> np.ndarray:
    """Smooth noise in [-0.5, 0.5]-ish with features of ``scale_texels`` texels."""
    import cv2

    scale_texels = max(scale_texels, 1.0)
    gh = math.ceil(th / scale_texels) + NOISE_GRID_PAD_CELLS
    gw = math.ceil(tw / scale_texels) + NOISE_GRID_PAD_CELLS
    grid = rng.random((gh, gw)).astype(np.float32) - 0.5
    up = cv2.resize(grid, (round(gw * scale_texels), round(gh * scale_texels)), interpolation=cv2.INTER_CUBIC)
    off = round(NOISE_OFFSET_CELLS * scale_texels)
    return up[off : off + th, off : off + tw]


def _fbm(
    rng: np.random.Generator, th: int, tw: int, config: ProceduralSceneConfig, scales=None, amps=None
) -> np.ndarray:
    """Multi-octave value noise normalized to zero mean, unit standard deviation."""
    scales = config.noise_scales_m if scales is None else scales
    amps = config.noise_amplitudes if amps is None else amps
    total = np.zeros((th, tw), dtype=np.float32)
    for s, a in zip(scales, amps):
        total += a * _value_noise(rng, th, tw, s / config.texel_m)
    return (total - total.mean()) / (total.std() + NOISE_STD_EPS)


def _uv_grid(tile: _Tile, texel: float) -> tuple[np.ndarray, np.ndarray]:
    u = (np.arange(tile.tw, dtype=np.float32) + 0.5) * texel
    v = (np.arange(tile.th, dtype=np.float32) + 0.5) * texel
    return np.meshgrid(u, v)


class _Painter:
    """Paints one tile: noise base, patches, blobs and patterned posters."""

    def __init__(self, config: ProceduralSceneConfig, tile: _Tile, rng: np.random.Generator, hue: float):
        self.c, self.tile, self.rng, self.hue = config, tile, rng, hue
        self.U, self.V = _uv_grid(tile, config.texel_m)
        self.img = np.zeros((tile.th, tile.tw, 3), dtype=np.float32)

    def base_color(self, hue_shift: float = 0.0, value: float | None = None) -> np.ndarray:
        r = self.rng
        sat = r.uniform(*self.c.base_saturation)
        val = r.uniform(*self.c.base_value) if value is None else value
        return _hsv(self.hue + hue_shift, sat, val)

    def accent_color(self) -> np.ndarray:
        r = self.rng
        return _hsv(r.random(), r.uniform(*self.c.accent_saturation), r.uniform(*self.c.accent_value))

    def noisy_base(self, contrast: float, with_patches: bool = True) -> None:
        c, r = self.c, self.rng
        v0 = r.uniform(*c.base_value)
        # the second base colour is clearly lighter or darker than the first
        dv = r.uniform(*c.base_value_step) * (1 if v0 < np.mean(c.base_value) else -1)
        c0 = self.base_color(value=v0)
        c1 = self.base_color(
            r.uniform(-c.base_hue_step, c.base_hue_step), value=float(np.clip(v0 + dv, 0, 1))
        )
        w = np.clip(0.5 + contrast * _fbm(r, self.tile.th, self.tile.tw, c), 0.0, 1.0)[..., None]
        self.img[:] = c0 * (1 - w) + c1 * w
        if with_patches:
            c2 = self.base_color(r.uniform(*c.patch_hue_offset))
            n = _fbm(r, self.tile.th, self.tile.tw, c, c.noise_scales_m[:2], c.noise_amplitudes[:2])
            thr = float(np.quantile(n, 1.0 - c.patch_fraction)) if n.size else 0.0
            m = np.clip(0.5 + (n - thr) / c.patch_softness, 0.0, 1.0)[..., None]
            self.img[:] = self.img * (1 - m) + c2 * m
        fine = _fbm(r, self.tile.th, self.tile.tw, c, c.noise_scales_m[1:], c.noise_amplitudes[1:])
        self.img *= 1.0 + c.brightness_noise * fine[..., None]

    def plain(self, color: np.ndarray, amplitude: float) -> None:
        n = _fbm(self.rng, self.tile.th, self.tile.tw, self.c, self.c.noise_scales_m[:1], (1.0,))
        self.img[:] = color * (1.0 + amplitude * n[..., None])

    def _region(self, u0: float, v0: float, u1: float, v1: float):
        t = self.c.texel_m
        j0, j1 = max(0, int(u0 / t) - 1), min(self.tile.tw, math.ceil(u1 / t) + 1)
        i0, i1 = max(0, int(v0 / t) - 1), min(self.tile.th, math.ceil(v1 / t) + 1)
        if j0 >= j1 or i0 >= i1:
            return None
        return (slice(i0, i1), slice(j0, j1))

    def blend(self, sl, alpha: np.ndarray, color: np.ndarray) -> None:
        a = alpha[..., None] if alpha.ndim == 2 else alpha
        self.img[sl] = self.img[sl] * (1 - a) + color * a

    def blobs(self, density: float, allowed_u: tuple[float, float] | None = None) -> None:
        c, r = self.c, self.rng
        area = self.tile.width_m * self.tile.height_m
        umin, umax = allowed_u if allowed_u else (0.0, self.tile.width_m)
        for _ in range(int(r.poisson(density * area))):
            ra, rb = r.uniform(*c.blob_radius_m, size=2)
            cu, cv = r.uniform(umin, umax), r.uniform(0.0, self.tile.height_m)
            col = self.accent_color()
            if allowed_u and not (umin + max(ra, rb) <= cu <= umax - max(ra, rb)):
                continue
            sl = self._region(cu - ra, cv - rb, cu + ra, cv + rb)
            if sl is None:
                continue
            du, dv = (self.U[sl] - cu) / ra, (self.V[sl] - cv) / rb
            sd = (1.0 - np.sqrt(du * du + dv * dv)) * min(ra, rb)
            self.blend(sl, _soft(sd, c.edge_softness_m), col)

    def poster(self, u0: float, v0: float, pw: float, ph: float) -> None:
        c, r = self.c, self.rng
        sl = self._region(u0, v0, u0 + pw, v0 + ph)
        if sl is None:
            return
        U, V = self.U[sl], self.V[sl]
        inside = np.minimum(np.minimum(U - u0, u0 + pw - U), np.minimum(V - v0, v0 + ph - V))
        alpha = _soft(inside, c.edge_softness_m)
        ca, cb = self.accent_color(), self.accent_color()
        kind = int(r.integers(POSTER_KINDS))
        period = r.uniform(*c.pattern_period_m)
        if kind == 0:  # stripes at a random angle
            ang = r.uniform(0, math.pi)
            coord = U * math.cos(ang) + V * math.sin(ang)
            f = coord / period - np.floor(coord / period)
            pat = _soft((0.25 - np.abs(f - 0.5)) * period, c.edge_softness_m)
        elif kind == 1:  # concentric rings
            rr = np.hypot(
                U - (u0 + pw * r.uniform(*POSTER_RING_CENTER)), V - (v0 + ph * r.uniform(*POSTER_RING_CENTER))
            )
            f = rr / period - np.floor(rr / period)
            pat = _soft((0.25 - np.abs(f - 0.5)) * period, c.edge_softness_m)
        elif kind == 2:  # coarse checker
            fx = U / period - np.floor(U / period)
            fy = V / period - np.floor(V / period)
            a = _soft((0.25 - np.abs(fx - 0.5)) * period, c.edge_softness_m)
            b = _soft((0.25 - np.abs(fy - 0.5)) * period, c.edge_softness_m)
            pat = a * b + (1 - a) * (1 - b)
        elif kind == 3:  # frame: border band + inner panel
            band = min(pw, ph) * r.uniform(*POSTER_FRAME_BAND)
            pat = _soft(inside - band, c.edge_softness_m)
        else:  # two-tone noise
            n = _fbm(r, U.shape[0], U.shape[1], c, c.noise_scales_m[1:], c.noise_amplitudes[1:])
            pat = _soft(n * TWO_TONE_SHARPNESS_M, c.edge_softness_m)
        col = ca * (1 - pat[..., None]) + cb * pat[..., None]
        self.img[sl] = self.img[sl] * (1 - alpha[..., None]) + col * alpha[..., None]

    def posters(self, density: float, allowed_u: tuple[float, float] | None = None, size=None) -> None:
        c, r = self.c, self.rng
        size = size or c.poster_size_m
        umin, umax = allowed_u if allowed_u else (0.0, self.tile.width_m)
        for _ in range(int(r.poisson(density * self.tile.width_m * self.tile.height_m))):
            pw, ph = r.uniform(*size, size=2)
            if umax - umin <= pw or self.tile.height_m <= ph:
                continue
            self.poster(r.uniform(umin, umax - pw), r.uniform(0.0, self.tile.height_m - ph), pw, ph)


def _paint_floor(p: _Painter) -> None:
    c, r = p.c, p.rng
    base = p.base_color()
    grout = p.base_color(0.5) * c.floor_grout_value
    t = c.floor_tile_m
    iu, iv = np.floor(p.U / t).astype(np.int64), np.floor(p.V / t).astype(np.int64)
    jitter = r.uniform(-c.floor_tile_jitter, c.floor_tile_jitter, size=(iv.max() + 1, iu.max() + 1)).astype(
        np.float32
    )
    n = _fbm(r, p.tile.th, p.tile.tw, c, (c.floor_noise_scale,), (1.0,))
    shade = 1.0 + jitter[iv, iu] + c.floor_tile_jitter * n
    p.img[:] = base * shade[..., None]
    fu, fv = p.U / t - iu, p.V / t - iv
    dist = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * t
    p.blend((slice(None), slice(None)), _soft(c.floor_grout_m / 2 - dist, c.edge_softness_m), grout)
    for _ in range(c.floor_rugs):
        rw, rh = r.uniform(*c.rug_size_m, size=2)
        if rw < p.tile.width_m and rh < p.tile.height_m:
            p.poster(r.uniform(0, p.tile.width_m - rw), r.uniform(0, p.tile.height_m - rh), rw, rh)


def _build_atlas(config: ProceduralSceneConfig, room: Room, objects: list, tiles: list[_Tile]) -> np.ndarray:
    texel = config.texel_m
    for tile in tiles:
        tile.tw = max(2, math.ceil(tile.width_m / texel))
        tile.th = max(2, math.ceil(tile.height_m / texel))
    # shelf packing, tallest first (stable order => deterministic)
    order = sorted(range(len(tiles)), key=lambda i: (-tiles[i].th, i))
    x = y = row_h = 0
    for i in order:
        tile = tiles[i]
        if tile.tw > ATLAS_WIDTH:
            raise ValueError(f"procedural scene: a surface is wider than the atlas ({tile.tw} texels)")
        if x + tile.tw > ATLAS_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        tile.x0, tile.y0 = x, y
        x += tile.tw
        row_h = max(row_h, tile.th)
    atlas = np.zeros((y + row_h, ATLAS_WIDTH, 3), dtype=np.float32)

    golden = (math.sqrt(5.0) - 1.0) / 2.0
    hue0 = np.random.default_rng([config.seed, STREAM_TEXTURES]).random()
    for i, tile in enumerate(tiles):
        rng = np.random.default_rng([config.seed, STREAM_TEXTURES, i])
        hue = hue0 + i * golden + rng.uniform(-config.surface_hue_jitter, config.surface_hue_jitter)
        p = _Painter(config, tile, rng, hue)
        if i < room.tile_base + 4:  # walls
            if i == room.tile_base + 1:  # +x wall: a plain-painted section
                plain_to = config.plain_wall_fraction * tile.width_m
                p.noisy_base(config.noise_contrast)
                wall_col = p.base_color()
                plain = (p.U < plain_to)[..., None]
                n = _fbm(rng, tile.th, tile.tw, config, config.noise_scales_m[:1], (1.0,))[..., None]
                p.img[:] = np.where(plain, wall_col * (1.0 + config.plain_noise_amplitude * n), p.img)
                p.blobs(config.blob_density_per_m2, allowed_u=(plain_to, tile.width_m))
                p.posters(config.poster_density_per_m2, allowed_u=(plain_to, tile.width_m))
            else:
                p.noisy_base(config.noise_contrast)
                p.blobs(config.blob_density_per_m2)
                p.posters(config.poster_density_per_m2)
        elif i == room.tile_base + 4:
            _paint_floor(p)
        elif i == room.tile_base + 5:
            p.plain(_hsv(hue, config.ceiling_saturation, config.ceiling_value), config.plain_noise_amplitude)
        else:
            p.noisy_base(config.object_noise_contrast)
            p.blobs(config.object_blob_density_per_m2)
            p.posters(config.object_poster_density_per_m2, size=config.object_poster_size_m)
        atlas[tile.y0 : tile.y0 + tile.th, tile.x0 : tile.x0 + tile.tw] = np.clip(p.img, 0.0, 1.0)
    return atlas


# ======================================================================= rendering
def _sample_atlas(atlas: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Bilinear atlas lookup at float texel coordinates (integer = texel centre)."""
    import cv2

    if mx.ndim == 2 and max(mx.shape) < REMAP_MAX_SIDE:
        return cv2.remap(atlas, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    n = mx.size
    rows = max(1, -(-n // REMAP_ROW))
    pad = rows * REMAP_ROW - n
    fx = np.concatenate([mx.ravel(), np.zeros(pad, np.float32)]).reshape(rows, REMAP_ROW)
    fy = np.concatenate([my.ravel(), np.zeros(pad, np.float32)]).reshape(rows, REMAP_ROW)
    out = cv2.remap(atlas, fx, fy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 3)[:n].reshape(*mx.shape, 3)


def _merge(dst: np.ndarray, sel: tuple, mask: np.ndarray, values: np.ndarray) -> None:
    """dst[sel][mask] = values[mask] for a slice selector (in place) or a row-index one."""
    if isinstance(sel[0], slice):
        np.copyto(dst[sel], values, where=mask)
    else:
        dst[sel] = np.where(mask, values, dst[sel])


def _trace(scene: ProceduralScene, o: np.ndarray, rays: tuple, selectors: list):
    """Nearest hit (distance, primitive index; 0 = room) of every ray. ``selectors[k]``
    says which rays may hit object k (an index tuple into the rays' leading axes, or
    None for none of them)."""
    t = scene.room.intersect(o, *rays)
    prim = np.zeros(t.shape, dtype=np.int16)
    for k, (obj, sel) in enumerate(zip(scene.objects, selectors), start=1):
        if sel is None:
            continue
        tk = obj.intersect(o, *(r[sel] for r in rays))
        closer = tk < t[sel]
        if closer.any():
            _merge(t, sel, closer, tk)
            _merge(prim, sel, closer, np.int16(k))
    return t, prim


def _shade(
    scene: ProceduralScene, o: np.ndarray, rays: tuple, t: np.ndarray, prim: np.ndarray, selectors: list
):
    """Lit colour (..., 3) float32, tile id (...) and |cos| of the incidence angle (...)
    of traced rays (``t``, ``prim`` and ``selectors`` as for :func:`_trace`)."""
    cfg = scene.config
    f32 = np.float32
    dx, dy, dz = rays
    p = (f32(o[0]) + t * dx, f32(o[1]) + t * dy, f32(o[2]) + t * dz)
    everything = tuple(slice(None) for _ in t.shape)
    out = [np.zeros(t.shape, np.int64), *(np.zeros(t.shape, f32) for _ in range(5))]  # face u v nx ny nz
    for k, (primitive, sel) in enumerate(zip(scene.primitives, [everything, *selectors])):
        if sel is None:
            continue
        mask = prim[sel] == k
        if not mask.any():
            continue
        vals = primitive.surface(*(c[sel] for c in p))
        face = vals[0] + primitive.tile_base
        for dst, val in zip(out, (face, *vals[1:])):
            _merge(dst, sel, mask, val)
    tile_id, u, v, nx, ny, nz = out
    x0, y0, x1, y1 = (np.take(b, tile_id) for b in scene.tile_bounds)
    inv_texel = f32(1.0 / cfg.texel_m)
    mx = np.clip(x0 + u * inv_texel - f32(0.5), x0, x1)
    my = np.clip(y0 + v * inv_texel - f32(0.5), y0, y1)
    albedo = _sample_atlas(scene.atlas, mx, my)

    sun = np.asarray(cfg.sun_direction, np.float64)
    sx, sy, sz = (f32(c) for c in sun / np.linalg.norm(sun))
    lx, ly, lz = (f32(c) - pc for c, pc in zip(cfg.lamp_position, p))
    dist2 = lx * lx + ly * ly + lz * lz
    lamp_cos = np.maximum(nx * lx + ny * ly + nz * lz, f32(0)) / np.sqrt(np.maximum(dist2, f32(1e-12)))
    light = (
        f32(cfg.ambient)
        + f32(cfg.sun_intensity) * np.maximum(nx * sx + ny * sy + nz * sz, f32(0))
        + f32(cfg.lamp_intensity) * lamp_cos / (f32(1) + dist2 * f32(1.0 / cfg.lamp_falloff_m**2))
    )
    rgb = albedo * light[..., None]
    cos_inc = np.abs(nx * dx + ny * dy + nz * dz)
    return rgb, tile_id, cos_inc


@functools.lru_cache(maxsize=8)
def _pixel_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rays = camera.pixel_rays_opencv(camera.pixel_centers()).astype(np.float32)
    out = tuple(np.ascontiguousarray(rays[..., a]) for a in range(3))
    for r in out:
        r.setflags(write=False)
    return out


def _rotate(R: np.ndarray, cx: np.ndarray, cy: np.ndarray, cz: np.ndarray) -> tuple:
    """World directions R @ (cx, cy, cz) as three float32 arrays."""
    R = R.astype(np.float32)
    return tuple(R[i, 0] * cx + R[i, 1] * cy + R[i, 2] * cz for i in range(3))


def _screen_rects(scene: ProceduralScene, camera: Camera, w2c_opencv: np.ndarray) -> list:
    """Per object: (row0, row1, col0, col1) of the pixels its projection may cover, or
    None when it is entirely outside the image / behind the camera."""
    rects = []
    for obj in scene.objects:
        pc = obj.corners() @ w2c_opencv[:3, :3].T + w2c_opencv[:3, 3]
        if np.all(pc[:, 2] <= CULL_NEAR_M):
            rects.append(None)
            continue
        if camera.is_distorted or np.any(pc[:, 2] <= CULL_NEAR_M):
            rects.append((0, camera.height, 0, camera.width))
            continue
        uv, _ = camera.project(pc)
        c0 = max(0, math.floor(uv[:, 0].min()) - CULL_MARGIN_PX)
        c1 = min(camera.width, math.ceil(uv[:, 0].max()) + CULL_MARGIN_PX)
        r0 = max(0, math.floor(uv[:, 1].min()) - CULL_MARGIN_PX)
        r1 = min(camera.height, math.ceil(uv[:, 1].max()) + CULL_MARGIN_PX)
        rects.append((r0, r1, c0, c1) if (r0 < r1 and c0 < c1) else None)
    return rects


def render_procedural_view(
    scene: ProceduralScene, camera: Camera, c2w_opengl: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Render the scene from any pose (OpenGL camera-to-world) and camera.

    Returns (rgb uint8 (H, W, 3), depth float32 (H, W) metres): depth is the z-depth of
    the surface hit by the ray through each pixel centre. Distorted cameras are
    supported. Poses are meant to be inside the room and outside the objects (every
    pixel then sees a surface); from outside the room its near walls are transparent
    and rays that leave it read black with depth 0, and from inside an object that
    object is invisible.
    """
    cfg = scene.config
    c2w = opencv_c2w_from_opengl_c2w(c2w_opengl)
    w2c = invert_pose(c2w)
    R, o = c2w[:3, :3], c2w[:3, 3]
    cam_rays = _pixel_rays(camera)
    rays = _rotate(R, *cam_rays)
    rects = _screen_rects(scene, camera, w2c)
    sels = [None if r is None else (slice(r[0], r[1]), slice(r[2], r[3])) for r in rects]
    t, prim = _trace(scene, o, rays, sels)
    rgb, tile_id, cos_inc = _shade(scene, o, rays, t, prim, sels)
    hit = np.isfinite(t) & (t > RAY_EPS)
    depth = np.where(hit, t * cam_rays[2], np.float32(0))
    rgb[~hit] = 0.0

    # Supersample silhouettes/surface edges and pixels larger than a texel on the surface.
    need = np.zeros(tile_id.shape, dtype=bool)
    dh = tile_id[:, 1:] != tile_id[:, :-1]
    dv = tile_id[1:, :] != tile_id[:-1, :]
    need[:, 1:] |= dh
    need[:, :-1] |= dh
    need[1:, :] |= dv
    need[:-1, :] |= dv
    pixel_angle = np.float32(1.0 / min(camera.fx, camera.fy))
    footprint = t * pixel_angle / np.maximum(cos_inc, np.float32(MIN_FOOTPRINT_COS))
    need |= footprint > np.float32(cfg.aa_footprint_texels * cfg.texel_m)
    n = cfg.supersample
    rows, cols = np.nonzero(need)
    if n > 1 and rows.size:
        offs = (np.arange(n) + 0.5) / n - 0.5
        ox, oy = np.meshgrid(offs, offs)
        uv = np.stack([cols[:, None] + 0.5 + ox.ravel(), rows[:, None] + 0.5 + oy.ravel()], axis=-1)
        sub = camera.pixel_rays_opencv(uv).astype(np.float32)  # (K, n*n, 3)
        rays_s = _rotate(R, sub[..., 0], sub[..., 1], sub[..., 2])
        sels_s = []
        for r in rects:
            inside = (
                None
                if r is None
                else np.flatnonzero((rows >= r[0]) & (rows < r[1]) & (cols >= r[2]) & (cols < r[3]))
            )
            sels_s.append((inside,) if inside is not None and inside.size else None)
        ts, prims = _trace(scene, o, rays_s, sels_s)
        rgb_s = _shade(scene, o, rays_s, ts, prims, sels_s)[0]
        rgb_s[~(np.isfinite(ts) & (ts > RAY_EPS))] = 0.0
        rgb[rows, cols] = rgb_s.mean(axis=1)
    out = np.clip(np.rint(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)
    return out, depth.astype(np.float32)


# ===================================================================== the dataset
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _encode_png(img: np.ndarray) -> bytes:
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def depth_to_png_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth -> uint16 millimetres (0 where invalid, saturating at 65.535 m)."""
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    mm = np.where(valid, np.rint(d / DEPTH_UNIT_SCALE), 0.0)
    return np.clip(mm, 0, UINT16_MAX).astype(np.uint16)


def _stamp_ok(out_dir: Path, config_hash: str) -> bool:
    stamp = out_dir / STAMP_NAME
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if info.get("config_hash") != config_hash or not isinstance(info.get("files"), dict):
        return False
    for rel, size in info["files"].items():
        p = out_dir / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def generate_procedural_scene(
    out_dir: Path,
    config: ProceduralSceneConfig = ProceduralSceneConfig(),
    *,
    workers: int | None = None,
    force: bool = False,
) -> Path:
    """Write the procedural dataset to ``out_dir`` and return its transforms.json path.

    Skips all work when ``out_dir`` already holds an intact output of the same config
    (checked against the stamp file, which is written last). ``workers`` rendering
    threads (default: the number of CPUs, at most 4) do not change the output.
    """
    out_dir = Path(out_dir)
    config_hash = config.config_hash()
    transforms_path = out_dir / "transforms.json"
    if not force and _stamp_ok(out_dir, config_hash):
        return transforms_path

    scene = build_scene(config)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    stamp = out_dir / STAMP_NAME
    if stamp.exists():
        stamp.unlink()
    names = scene.frame_names()
    for sub in ("images", "depth"):  # frames left over from a longer trajectory
        for stale in sorted((out_dir / sub).glob("*.png")):
            if stale.name not in set(names):
                stale.unlink()

    def render_frame(i: int) -> None:
        rgb, depth = render_procedural_view(scene, scene.camera, scene.c2w_opengl[i])
        _atomic_write(out_dir / "images" / names[i], _encode_png(rgb))
        _atomic_write(out_dir / "depth" / names[i], _encode_png(depth_to_png_mm(depth)))

    workers = workers or min(os.cpu_count() or 1, 4)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(render_frame, range(len(names))))
    else:
        for i in range(len(names)):
            render_frame(i)

    cam = scene.camera
    frames = [
        {
            "file_path": f"images/{name}",
            "depth_file_path": f"depth/{name}",
            "transform_matrix": scene.c2w_opengl[i].tolist(),
        }
        for i, name in enumerate(names)
    ]
    transforms = {
        "scene": SCENE_NAME,
        "seed": config.seed,
        "config_hash": config_hash,
        "camera_model": "OPENCV",
        "fl_x": cam.fx,
        "fl_y": cam.fy,
        "cx": cam.cx,
        "cy": cam.cy,
        "w": cam.width,
        "h": cam.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "depth_unit_scale_factor": DEPTH_UNIT_SCALE,
        "aabb": scene.aabb,
        "procedural_config": asdict(config),
        "frames": frames,
    }
    split = {k: [frames[i]["file_path"] for i in scene.split[k]] for k in ("train", "test")}
    _atomic_write(transforms_path, (json.dumps(transforms, indent=1) + "\n").encode())
    _atomic_write(out_dir / "split.json", (json.dumps(split, indent=1) + "\n").encode())

    files = ["transforms.json", "split.json"] + [f"images/{n}" for n in names] + [f"depth/{n}" for n in names]
    info = {
        "config_hash": config_hash,
        "generator_version": GENERATOR_VERSION,
        "files": {rel: (out_dir / rel).stat().st_size for rel in files},
    }
    _atomic_write(stamp, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return transforms_path


__all__ = [
    "ProceduralScene",
    "ProceduralSceneConfig",
    "build_scene",
    "depth_to_png_mm",
    "generate_procedural_scene",
    "render_procedural_view",
]
