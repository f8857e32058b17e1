"""Rendering at known surfaces: one field evaluation per pixel.

Near a converged pose a coarser render already knows where each pixel's surface is;
a finer render of the same view then needs the colour there, not a volume integral
along the ray (a volume render costs a proposal pass and several fine samples per
ray). The coarse view's inverse depth is upsampled bilinearly (exact on planes, whose
inverse depth is affine in the pixel coordinates) and each fine pixel's colour is
the field's at its ray's point at that depth, under the training images' mean
appearance. Pixels at a depth edge of the coarse view (a kink of its inverse depth,
``edge_rel``) or next to a coarse pixel that was no surface are left out:
interpolation there puts points in the air between two surfaces.
Fine texture on a surface the coarse view resolved is what this adds; a surface the
coarse view missed (thinner than its pixels) it cannot add.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..geometry.camera import Camera
from .neural_map import RENDER_CHUNK

#: Neighbourhood (pixels of the coarse view) that must be surfaces for a fine pixel.
EDGE_NEIGHBOURHOOD = 3


def upsample_depth(depth_z: np.ndarray, valid: np.ndarray, width: int, height: int,
                   edge_rel: float) -> tuple[np.ndarray, np.ndarray]:
    """A coarse view's depth (z, (h, w)) and surface mask, resized to ``width`` x
    ``height`` by bilinear interpolation of the inverse depth (pixel centres aligned).
    A fine pixel is valid where it lies between the outermost coarse pixel centres, the
    coarse pixels around its lookup (3x3 around the nearest) are surfaces and none is a
    kink of the inverse depth: its second difference
    along a row or a column, relative to the inverse depth itself, above ``edge_rel``
    (zero on any plane, however slanted; large across a depth edge)."""
    valid = np.asarray(valid, bool) & np.isfinite(depth_z) & (depth_z > 0)
    inv = np.where(valid, 1.0 / np.where(valid, depth_z, 1.0), 0.0).astype(np.float32)
    padded = np.pad(inv, 1, mode="reflect", reflect_type="odd")  # continues a plane: no kink at the border
    second_x = np.abs(padded[1:-1, :-2] - 2.0 * inv + padded[1:-1, 2:])
    second_y = np.abs(padded[:-2, 1:-1] - 2.0 * inv + padded[2:, 1:-1])
    kernel = np.ones((EDGE_NEIGHBOURHOOD, EDGE_NEIGHBOURHOOD), np.uint8)
    all_valid = cv2.erode(valid.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0
    kink = (np.maximum(second_x, second_y) > edge_rel * inv).astype(np.uint8)
    smooth = all_valid & (cv2.dilate(kink, kernel, borderType=cv2.BORDER_REPLICATE) == 0)
    fine_inv = cv2.resize(np.where(valid, inv, 1.0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    ok = cv2.resize(smooth.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    # Beyond the outermost coarse pixel centres cv2.resize holds the border value instead of
    # extending the plane: those fine pixels are left out.
    h, w = depth_z.shape
    ok &= _between_centres(height, h)[:, None] & _between_centres(width, w)[None, :]
    return (1.0 / fine_inv).astype(np.float32), ok


def _between_centres(fine: int, coarse: int) -> np.ndarray:
    """Fine pixels (of ``fine``) whose centres lie between the first and the last coarse
    pixel centre (of ``coarse``) along one axis, pixel centres at +0.5."""
    x = (np.arange(fine) + 0.5) * coarse / fine
    return (x >= 0.5) & (x <= coarse - 0.5)


@torch.no_grad()
def render_at_surface(model, camera: Camera, c2w_opengl: np.ndarray, depth_z: np.ndarray, valid: np.ndarray,
                      chunk: int = RENDER_CHUNK) -> dict[str, np.ndarray]:
    """Colour and world points of ``camera``'s pixels (H, W) at known depths ``depth_z``
    (z in the OpenCV camera, (H, W), used where ``valid``): ``rgb`` (H, W, 3) float in
    [0, 1] (0 where not valid) and ``points`` (H, W, 3)."""
    h, w = camera.height, camera.width
    if depth_z.shape != (h, w) or valid.shape != (h, w):
        raise ValueError(f"depth {depth_z.shape} / valid {valid.shape} for a {w}x{h} camera")
    rays = model.rays_for_view(camera, c2w_opengl)
    dev = rays.origins.device
    keep = torch.from_numpy(np.flatnonzero(valid)).to(dev)
    z = torch.from_numpy(np.ascontiguousarray(depth_z, dtype=np.float32).reshape(-1)).to(dev)[keep]
    dirs = rays.dirs[keep]
    points = rays.origins[keep] + dirs * (z / rays.dirs_cam_z[keep])[:, None]
    field = model.field
    colours = []
    for s in range(0, keep.numel(), chunk):
        x = points[s : s + chunk]
        geo = field.geometry(model.scene.to_unit(x))
        app = field.appearance_codes(None, x.shape[0], dev)
        colours.append(field.color(geo, dirs[s : s + chunk], app)["rgb"])
    rgb = torch.zeros(h * w, 3, device=dev)
    pts = torch.zeros(h * w, 3, device=dev)
    if keep.numel():
        rgb[keep] = torch.cat(colours).float()
        pts[keep] = points
    return {"rgb": rgb.view(h, w, 3).cpu().numpy(), "points": pts.view(h, w, 3).cpu().numpy()}


__all__ = ["render_at_surface", "upsample_depth"]
