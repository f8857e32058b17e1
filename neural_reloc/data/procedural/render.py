"""Rendering the procedural scenes: analytic ray casting, vectorized with numpy.

Shading is Lambertian (ambient + one directional light + one point lamp, no shadows),
so the colour of a 3D point does not depend on the viewing direction, except window
glass, which shows the outside view (a function of the ray direction only). Pixels on
a silhouette or surface edge, and pixels whose footprint on the surface is larger than
a texel, are supersampled on an n x n grid (box filter), so images downscaled with
``cv2.INTER_AREA`` agree with images rendered directly at the lower resolution. Depth
is the z-depth (along the optical axis) of the ray through the pixel centre.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...geometry.camera import Camera
from ...geometry.frames import opencv_c2w_from_opengl_c2w
from ...geometry.se3 import invert_pose
from .primitives import RAY_EPS
from .scene import ProceduralScene

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
    channels = atlas.shape[2]
    return out.reshape(-1, channels)[:n].reshape(*mx.shape, channels)


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
    rgb = albedo[..., :3] * light[..., None]
    glass = albedo[..., 3]
    if scene.outside is not None and glass.any():
        # Window glass shows the outside, far away: its colour depends on the ray's
        # direction only, and no room light falls on it.
        g = glass[..., None]
        rgb = rgb * (f32(1) - g) + scene.outside.color(dx, dy, dz) * g
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
