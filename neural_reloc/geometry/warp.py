"""Warping a rendered view (colour + world points) to a nearby pose.

Depth-image-based rendering: the view's points are splatted into the target camera
(nearest pixel, z-buffered) to get the target's depth, each target pixel centre is
back-projected at that depth and looked up in the source view (bilinear), and a pixel
is kept only where the source saw that very point (no occlusion in between) and was
opaque. What comes out is what a render at the target pose would show, minus what the
source view did not see, at the cost of a few milliseconds instead of a render of the
neural map: the flow refinement renders the map once and warps that render to its
later estimates (:mod:`neural_reloc.methods.common.refinement`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import Camera
from .se3 import invert_pose

#: Grey levels of 8-bit images.
_GREY_MAX = 255.0
#: Bilinear validity of a source lookup: all four neighbours must be valid.
_FULL_SUPPORT = 0.999
#: Lookups per row of cv2.remap's map (its sides must stay below 2^15 = 32768).
_REMAP_COLS = 4096


@dataclass
class RenderedView:
    """A render of the map: ``camera`` and ``w2c_opencv`` it was rendered at, ``rgb``
    (H, W, 3) float in [0, 1], world ``points`` (H, W, 3) and ``valid`` (H, W) bool
    (opaque pixels, whose points are surfaces)."""

    camera: Camera
    w2c_opencv: np.ndarray
    rgb: np.ndarray
    points: np.ndarray
    valid: np.ndarray


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) sampled bilinearly at ``uv`` (N, 2; pixel centres at
    +0.5), as (N, C) float32; 0 outside the image. cv2.remap wants both sides of its map
    below 2^15, so the N lookups go in rows of ``_REMAP_COLS``."""
    n = len(uv)
    if n == 0:
        return np.zeros((0, image.shape[2] if image.ndim == 3 else 1), np.float32)
    cols = max(1, min(n, _REMAP_COLS))
    rows = -(-n // cols)
    map_xy = np.full((rows * cols, 2), -1.0, np.float32)  # padding: outside, reads the border (0)
    map_xy[:n] = uv - 0.5
    out = cv2.remap(np.ascontiguousarray(image, dtype=np.float32), map_xy.reshape(rows, cols, 2), None,
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(rows * cols, -1)[:n]


def _to_camera(w2c_opencv: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    return points_world @ w2c_opencv[:3, :3].T + w2c_opencv[:3, 3]


def splat_depth(camera: Camera, w2c_opencv: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """Z-buffered depth (H, W) of world points (N, 3) seen by ``camera`` at ``w2c_opencv``:
    each point lands on its nearest pixel, the nearest point wins; inf where none landed."""
    h, w = camera.height, camera.width
    depth = np.full(h * w, np.inf)
    if len(points_world) == 0:
        return depth.reshape(h, w)
    pc = _to_camera(w2c_opencv, points_world)
    uv, in_front = camera.project(pc)
    inside = in_front & camera.in_image(uv)
    cols = np.floor(uv[inside, 0]).astype(np.int64)
    rows = np.floor(uv[inside, 1]).astype(np.int64)
    np.minimum.at(depth, rows * w + cols, pc[inside, 2])
    return depth.reshape(h, w)


def fill_cracks(depth: np.ndarray, occlusion_edge_rel: float = 0.1) -> np.ndarray:
    """Close one-pixel cracks of a splatted depth map (a pixel no point landed on takes
    its 3x3 neighbourhood's nearest depth) and drop pixels more than ``occlusion_edge_rel``
    behind that nearest neighbour (background seen through a crack of the foreground,
    and the far side of depth edges); dropped pixels are inf."""
    finite = np.isfinite(depth)
    big = np.float32(np.finfo(np.float32).max)
    d32 = np.where(finite, depth, big).astype(np.float32)
    nearest = cv2.erode(d32, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(np.float64)
    filled = np.where(finite, depth, np.where(nearest < big, nearest, np.inf))
    behind = np.isfinite(filled) & (filled > nearest * (1.0 + occlusion_edge_rel))
    filled[behind] = np.inf
    return filled


def warp_rendered_view(
    view: RenderedView, w2c_opencv: np.ndarray, *, occlusion_rel: float = 0.05
) -> RenderedView:
    """``view`` as seen from ``w2c_opencv`` (same camera): rgb, world points and validity
    at the target's pixel centres. A target pixel is valid where a source point landed
    near it, the source saw the same surface there (its depth at the lookup agrees within
    ``occlusion_rel``) and all four source pixels of the bilinear lookup were valid.
    Invalid pixels get an inpainted colour (so that an image filter or optical flow sees
    no artificial edges) and no point."""
    cam = view.camera
    h, w = cam.height, cam.width
    depth = fill_cracks(splat_depth(cam, w2c_opencv, view.points[view.valid]))
    target = np.isfinite(depth)
    uv_t = cam.pixel_centers().reshape(-1, 2)[target.reshape(-1)]
    rays = cam.pixel_rays_opencv(uv_t)
    x_cam = rays * (depth[target] / rays[:, 2])[:, None]
    c2w_opencv = invert_pose(w2c_opencv)
    x_world = x_cam @ c2w_opencv[:3, :3].T + c2w_opencv[:3, 3]
    x_src = _to_camera(view.w2c_opencv, x_world)
    uv_s, in_front = cam.project(x_src)

    def lookup(image: np.ndarray) -> np.ndarray:
        return sample_bilinear(image, uv_s)

    support = lookup(view.valid.astype(np.float32))[:, 0]
    points = lookup(view.points)
    rgb = lookup(view.rgb)
    z_seen = _to_camera(view.w2c_opencv, points)[:, 2]
    ok = in_front & (support >= _FULL_SUPPORT) & (np.abs(z_seen - x_src[:, 2]) <= occlusion_rel * x_src[:, 2])
    valid = np.zeros(h * w, bool)
    valid[np.flatnonzero(target.reshape(-1))[ok]] = True
    valid = valid.reshape(h, w)
    out_points = np.zeros((h * w, 3), np.float32)
    out_points[valid.reshape(-1)] = points[ok]
    out_rgb = np.zeros((h * w, 3), np.float32)
    out_rgb[valid.reshape(-1)] = rgb[ok]
    rgb_u8 = np.clip(out_rgb.reshape(h, w, 3) * _GREY_MAX, 0, _GREY_MAX).astype(np.uint8)
    if not valid.all():
        rgb_u8 = cv2.inpaint(rgb_u8, (~valid).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return RenderedView(
        cam, np.asarray(w2c_opencv, np.float64), rgb_u8.astype(np.float32) / _GREY_MAX,
        out_points.reshape(h, w, 3), valid,
    )


__all__ = ["RenderedView", "fill_cracks", "sample_bilinear", "splat_depth", "warp_rendered_view"]
