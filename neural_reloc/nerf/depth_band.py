"""Depth-guided rendering: a coarse render finds the surfaces, the full render samples
only a band around them.

A full-resolution render spends about half its time on the proposal: every ray reads
the density grid at ``num_coarse`` points from the near to the far bound of the scene,
most of them in empty space. Neighbouring pixels see nearly the same surface, so a
render at every ``stride``-th pixel block finds it for all of them: each pixel's band
is the smallest to largest distance of the 3x3 blocks around its own, widened by
``margin_rel``, and the full render places its proposal samples there only (fewer of
them, each a shorter interval: the fine samples land as close to the surface or closer).
Where any of those blocks is not opaque (a miss, the edge of the map, or two surfaces
mixed in one block: its distance may lie between them) the pixel keeps the scene's full
bounds. A surface thinner than a block that none of the coarse rays
hit (a chair leg in front of a wall) is missed by the pixels around it: the render
there shows what is behind it. Distances are along the ray (``distance``), in metres.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.camera import Camera

#: Blocks around a pixel's own whose distances bound its band (3x3).
NEIGHBOURHOOD = 3
#: A block less opaque than this may mix two surfaces (its distance is their opacity-
#: weighted mean, possibly between them): its pixels' neighbours keep the scene's bounds.
GUIDE_MIN_OPACITY = 0.9


def band_bounds(
    distance: np.ndarray, accumulation: np.ndarray, stride: int, width: int, height: int, margin_rel: float,
    min_accumulation: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (near, far) of a ``width`` x ``height`` view, row-major (H*W,), from a
    render of its ``stride``-blocks' centres (``distance`` and ``accumulation``, (h, w)
    with h = height // stride, w = width // stride). Pixels next to a block less opaque
    than ``min_accumulation`` (and :data:`GUIDE_MIN_OPACITY`) get (0, inf): the scene's
    bounds."""
    d = torch.from_numpy(np.ascontiguousarray(distance, dtype=np.float32))[None, None]
    opaque = np.asarray(accumulation) >= max(min_accumulation, GUIDE_MIN_OPACITY)
    unknown = torch.from_numpy(~opaque).float()[None, None]
    pad = NEIGHBOURHOOD // 2
    d_max = F.max_pool2d(d, NEIGHBOURHOOD, stride=1, padding=pad)
    d_min = -F.max_pool2d(-d, NEIGHBOURHOOD, stride=1, padding=pad)
    unknown = F.max_pool2d(unknown, NEIGHBOURHOOD, stride=1, padding=pad) > 0
    h, w = d.shape[-2:]
    rows = np.minimum(np.arange(height) // stride, h - 1)
    cols = np.minimum(np.arange(width) // stride, w - 1)
    pick = (rows[:, None] * w + cols[None, :]).reshape(-1)
    near = (d_min.reshape(-1).numpy() * (1.0 - margin_rel))[pick]
    far = (d_max.reshape(-1).numpy() * (1.0 + margin_rel))[pick]
    miss = unknown.reshape(-1).numpy()[pick]
    near[miss] = 0.0
    far[miss] = np.inf
    return near, far


def render_view_depth_guided(
    model, camera: Camera, c2w_opengl: np.ndarray, outputs: tuple[str, ...], *, guide_stride: int, margin_rel: float,
    band_coarse: int, min_accumulation: float, num_fine: int | None = None, num_coarse: int | None = None,
    color_samples: int | None = None, pixels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:meth:`~.neural_map.NeuralMap.render_view` of a whole view (``outputs`` as (H, W,
    ...) arrays) by two passes: the distances of every ``guide_stride``-th block
    (``num_fine`` / ``num_coarse`` samples, the full bounds), then every pixel in its band
    (``band_coarse`` proposal samples, ``num_fine`` fine ones).

    ``pixels`` (H, W) bool: the second pass renders only these; the others get the
    guide's colour (its blocks' ``rgb``, bilinearly upsampled: a stand-in where nothing
    is measured, e.g. for optical flow on flat regions) and zero in every other output
    (``accumulation`` 0: no surface there). Without a guide pass (``guide_stride`` < 2 or
    a camera smaller than one block) every pixel is rendered in one pass and ``pixels``
    does not apply."""
    if guide_stride < 2 or camera.width < guide_stride or camera.height < guide_stride:
        return model.render_view(camera, c2w_opengl, outputs, num_fine=num_fine, num_coarse=num_coarse,
                                 color_samples=color_samples)
    subset = pixels is not None and not np.all(pixels)
    guide_outputs = ("distance", "accumulation") + (("rgb",) if subset and "rgb" in outputs else ())
    guide = model.render_view(camera, c2w_opengl, guide_outputs, stride=guide_stride,
                              num_fine=num_fine, num_coarse=num_coarse, color_samples=color_samples)
    near, far = band_bounds(guide["distance"], guide["accumulation"], guide_stride, camera.width, camera.height,
                            margin_rel, min_accumulation)
    if not subset:
        return model.render_view(camera, c2w_opengl, outputs, num_fine=num_fine, num_coarse=band_coarse,
                                 color_samples=color_samples, ray_bounds=(near, far))
    sel = np.asarray(pixels, bool).reshape(-1)
    # No pixel selected: one is rendered all the same, for the outputs' shapes, and not used.
    render_sel = sel if sel.any() else np.eye(1, sel.size, dtype=bool)[0]
    uv = camera.pixel_centers().reshape(-1, 2)[render_sel]
    part = model.render_view(camera, c2w_opengl, outputs, pixels_uv=uv, num_fine=num_fine, num_coarse=band_coarse,
                             color_samples=color_samples, ray_bounds=(near[render_sel], far[render_sel]))
    h, w = camera.height, camera.width
    result = {}
    for o in outputs:
        if o == "rgb":
            full = guide_colour(guide["rgb"], guide_stride, w, h).reshape(h * w, -1)
        else:
            full = np.zeros((h * w,) + part[o].shape[1:], np.float32)
        if sel.any():
            full[sel] = part[o]
        result[o] = full.reshape(h, w, *full.shape[1:])
    return result


def guide_colour(guide_rgb: np.ndarray, stride: int, width: int, height: int) -> np.ndarray:
    """The guide pass's block colours (h, w, 3) upsampled to the view (height, width, 3),
    each block's colour at its own block (bilinear between them); the pixels past the last
    whole block (a side not a multiple of ``stride``) repeat the edge."""
    h, w = guide_rgb.shape[:2]
    up = cv2.resize(np.ascontiguousarray(guide_rgb, dtype=np.float32), (w * stride, h * stride),
                    interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(up, 0, height - h * stride, 0, width - w * stride, cv2.BORDER_REPLICATE)


__all__ = ["band_bounds", "guide_colour", "render_view_depth_guided"]
