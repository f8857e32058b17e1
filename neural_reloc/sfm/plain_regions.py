"""Free space in front of plain surfaces, bounded by the depth measured around them.

Keypoints and flow stereo (:mod:`.flow_stereo`) measure textured pixels only. A plain
wall or door between them is left to the photometric loss, which explains its one
colour as well by a slab of that colour metres in front of the wall as by the wall: a
map trained without depth images renders such slabs at views off the mapping path, over
the textured things behind them (NOTES.md, twenty-fourth and twenty-fifth sessions).

The plain surface's depth is not measured, but it is bounded. For a plane seen by a
pinhole camera, 1/z is an affine function of the pixel; at a pixel inside the convex
hull of measured pixels on the plane, 1/z is a convex combination of theirs, so z is at
least their smallest z. Measured pixels on things in front of the plane (an occluding
chair's edge) only lower that bound. So every plain pixel inside the hull of the
measured pixels near its region (within ``border_px``, inside it included) is free space
up to ``(1 - margin)`` times the smallest z measured there: a line-of-sight bound, not a
depth, that removes slabs without claiming where the wall is (StructNeRF and
Manhattan-SDF fit planes to such regions; a fit to a border of a few lines of points is
too thin to trust, NOTES.md, twenty-fifth session).

What it assumes: the plain surface's own edge, or something in front of it, is measured
near the region. A plain object whose border was measured only on the background behind
it (a table top whose edges flow stereo missed, the floor beside it) would get a bound
behind its surface, which the margin absorbs only up to ``margin``; on the rooms this was
measured on, 0-0.13% of the bounded pixels (NOTES.md). Curved plain surfaces and lens
distortion (the hull is taken in distorted pixels) bend the claim by as much; the margin
is there for them.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ..data.posed_images import PosedImages
from ..geometry.camera import Camera
from ..geometry.gradients import gradient_magnitude, grey
from .config import PlainRegionsConfig
from .flow_stereo import PixelDistances


def plain_regions(grey_image: np.ndarray, valid: np.ndarray | None, cfg: PlainRegionsConfig) -> list[np.ndarray]:
    """Plain regions of one grey image: boolean masks (H, W) of the connected areas
    (4-connected) whose grey-level gradient is under ``cfg.min_gradient``, opened by
    ``cfg.opening_px`` (texture speckle does not join or split them) and covering at
    least ``cfg.min_region_fraction`` of the image; inside ``valid`` when given."""
    h, w = grey_image.shape
    plain = (gradient_magnitude(grey_image) < cfg.min_gradient).astype(np.uint8)
    if valid is not None:
        plain &= valid.astype(np.uint8)
    if cfg.opening_px > 0:
        k = 2 * cfg.opening_px + 1
        plain = cv2.morphologyEx(plain, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(plain, connectivity=4)
    min_area = cfg.min_region_fraction * h * w
    return [labels == k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area]


def plain_free_space_view(grey_image: np.ndarray, valid: np.ndarray | None, camera: Camera, uv: np.ndarray,
                          distance: np.ndarray, cfg: PlainRegionsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Free space of one view's plain pixels from its measured pixels ``uv`` (K, 2; pixel
    centres at +0.5) and their distances along the rays ``distance`` (K,): the plain
    pixels (M, 2) inside the hull of their region's measured border and, for each, the
    distance along its ray (M,) in front of which the field should be empty (the
    module's docstring). Regions with fewer than ``cfg.min_border_points`` measured
    pixels within ``cfg.border_px`` of them get none."""
    h, w = grey_image.shape
    z_measured = np.full((h, w), np.nan, np.float32)
    if len(uv):
        col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h) & np.isfinite(distance) & (distance > 0)
        # two measurements in one pixel: the nearer (a bound must not pass either)
        np.fmin.at(z_measured, (row[ok], col[ok]), distance[ok] * camera.pixel_rays_opencv(uv[ok])[:, 2])
    k = 2 * cfg.border_px + 1
    kernel = np.ones((k, k), np.uint8)
    out_uv, out_dist = [], []
    for region in plain_regions(grey_image, valid, cfg):
        border = cv2.dilate(region.astype(np.uint8), kernel).astype(bool) & np.isfinite(z_measured)
        rows, cols = np.nonzero(border)
        if len(rows) < cfg.min_border_points:
            continue
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.stack([cols, rows], -1).astype(np.int32)), 1)
        pr, pc = np.nonzero(region & hull.astype(bool))
        if not len(pr):
            continue
        z_free = (1.0 - cfg.margin) * float(z_measured[rows, cols].min())
        pix = np.stack([pc + 0.5, pr + 0.5], -1)
        out_uv.append(pix)
        out_dist.append(z_free / camera.pixel_rays_opencv(pix)[:, 2])
    if not out_uv:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(out_uv).astype(np.float32), np.concatenate(out_dist).astype(np.float32)


def plain_free_space(data: PosedImages, measured: PixelDistances, cfg: PlainRegionsConfig | None = None,
                     progress: Callable | None = None) -> PixelDistances:
    """:func:`plain_free_space_view` for every view of ``data`` (at its loaded size, the
    size ``measured`` is in), at most ``cfg.max_points_per_view`` a view (a seeded
    random subset). The distances are free-space bounds, not depths."""
    cfg = cfg or PlainRegionsConfig()
    rng = np.random.default_rng(cfg.seed)
    uvs, dists = [], []
    bounded = 0
    items = range(len(data)) if progress is None else progress(range(len(data)), desc="plain free space")
    for i in items:
        uv, dist = plain_free_space_view(grey(data.image(i)), data.mask(i), data.camera(i), measured.uv[i],
                                         measured.distance[i], cfg)
        bounded += len(dist)
        if len(dist) > cfg.max_points_per_view:
            pick = np.sort(rng.choice(len(dist), cfg.max_points_per_view, replace=False))
            uv, dist = uv[pick], dist[pick]
        uvs.append(uv)
        dists.append(dist)
    stats = {"views": len(data), "bounded_pixels": bounded, "kept": int(sum(len(d) for d in dists))}
    return PixelDistances(uvs, dists, stats)


__all__ = ["plain_free_space", "plain_free_space_view", "plain_regions"]
