"""Free space in front of plain surfaces (``neural_reloc.sfm.plain_regions``): plain
regions found and filtered, bounds that never pass the true surface (a floor seen at a
slant, an occluder on the border), nothing outside the hull of the measured border or
without one, masks honoured, and the trainer's free-space rays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from neural_reloc.geometry.camera import Camera
from neural_reloc.sfm.config import PlainRegionsConfig
from neural_reloc.sfm.plain_regions import plain_free_space_view, plain_regions

W, H, F = 160, 120, 150.0
CAM = Camera(W, H, F, F, W / 2, H / 2)
#: The plain region of the test image: rows, columns.
PLAIN = (slice(30, 90), slice(40, 120))


def _image(seed: int = 0) -> np.ndarray:
    """Grey noise texture with a plain (constant) rectangle ``PLAIN`` in it."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (H, W), dtype=np.uint8), (0, 0), 1.0)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    img[PLAIN] = 128
    return img


def _plane_distance(uv: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Distance along the rays of pixels ``uv`` to the plane normal . x = offset (camera frame)."""
    rays = CAM.pixel_rays_opencv(uv)
    return offset / (rays @ normal)


def _border_pixels(width: int = 3) -> np.ndarray:
    """Pixel centres of a ring ``width`` px wide around ``PLAIN``, outside it."""
    ring = np.zeros((H, W), bool)
    r, c = PLAIN
    ring[r.start - width: r.stop + width, c.start - width: c.stop + width] = True
    ring[PLAIN] = False
    rows, cols = np.nonzero(ring)
    return np.stack([cols + 0.5, rows + 0.5], -1)


def test_plain_regions_keep_large_plain_areas_inside_the_mask():
    img = _image()
    img[5:16, 5:16] = 128  # a plain speck: survives the opening, under min_region_fraction
    cfg = PlainRegionsConfig()
    assert 9 * 9 < cfg.min_region_fraction * W * H
    regions = plain_regions(img, None, cfg)
    assert len(regions) == 1
    assert len(plain_regions(img, None, PlainRegionsConfig(min_region_fraction=0.0))) > 1
    inside = np.zeros((H, W), bool)
    inside[PLAIN] = True
    assert (regions[0] & inside).sum() >= 0.9 * inside.sum()  # its rim next to the texture has a gradient
    assert (regions[0] & ~inside).sum() <= 0.02 * inside.sum()  # noise next to it is not plain
    valid = np.ones((H, W), bool)
    valid[:, : W // 2] = False
    masked = plain_regions(img, valid, cfg)
    assert len(masked) == 1 and not masked[0][:, : W // 2].any()
    assert plain_regions(img, np.zeros((H, W), bool), cfg) == []


@pytest.mark.parametrize("normal", [(0.0, 0.0, 1.0), (0.0, -0.6, 0.8), (0.5, 0.3, 0.81)])
def test_bounds_never_pass_a_plane_and_are_tight_when_it_faces_the_camera(normal):
    """A wall facing the camera, a floor seen at a slant, a tilted plane: the bound is
    in front of the plane at every pixel, even without a margin; facing the camera it is
    (1 - margin) x it."""
    normal = np.asarray(normal) / np.linalg.norm(normal)
    offset = 3.0 * normal[2]  # through (0, 0, 3)
    border = _border_pixels()
    dist = _plane_distance(border, normal, offset)
    # The claim itself (z inside the hull >= the border's smallest z), margin 0; the
    # tolerance is the border's pixel centres snapped to the hull's integer corners.
    uv0, free0 = plain_free_space_view(_image(), None, CAM, border, dist, PlainRegionsConfig(margin=0.0))
    assert (free0 <= _plane_distance(uv0, normal, offset) * (1 + 1e-3)).all()
    cfg = PlainRegionsConfig()
    uv, free = plain_free_space_view(_image(), None, CAM, border, dist, cfg)
    assert len(uv) >= 0.9 * 60 * 80
    true = _plane_distance(uv, normal, offset)
    assert (free < true).all()
    assert (free > 0).all()
    if normal[2] == 1.0:
        np.testing.assert_allclose(free, (1 - cfg.margin) * true, rtol=1e-5)
    else:  # a slanted plane: the bound is the nearest border depth, looser far away
        assert np.median(free / true) < 1 - cfg.margin


def test_an_occluder_on_the_border_only_lowers_the_bound():
    border = _border_pixels()
    dist = _plane_distance(border, np.array([0.0, 0.0, 1.0]), 3.0)
    near = border[:, 0] < PLAIN[1].start  # a post 1 m from the camera left of the wall
    dist[near] = _plane_distance(border[near], np.array([0.0, 0.0, 1.0]), 1.0)
    uv, free = plain_free_space_view(_image(), None, CAM, border, dist, PlainRegionsConfig())
    true = _plane_distance(uv, np.array([0.0, 0.0, 1.0]), 3.0)
    assert len(uv) and (free < 0.5 * true).all()


def test_no_bound_outside_the_hull_of_the_measured_border_or_without_one():
    border = _border_pixels()
    cfg = PlainRegionsConfig()
    # Measured along the top and left edges only: the hull is a triangle; the plain
    # pixels beyond its diagonal are not bounded (a floor reaching the image's edge).
    r, c = PLAIN
    corner = (border[:, 1] < r.start) | (border[:, 0] < c.start)
    dist = _plane_distance(border[corner], np.array([0.0, 0.0, 1.0]), 3.0)
    uv, _ = plain_free_space_view(_image(), None, CAM, border[corner], dist, cfg)
    assert 0.3 * 60 * 80 < len(uv) < 0.7 * 60 * 80
    u, v = (uv[:, 0] - c.start) / (c.stop - c.start), (uv[:, 1] - r.start) / (r.stop - r.start)
    assert (u + v <= 1.05).all()
    # Too few measured pixels, or none: nothing.
    few = border[: cfg.min_border_points - 1]
    assert len(plain_free_space_view(_image(), None, CAM, few, np.full(len(few), 3.0), cfg)[0]) == 0
    assert len(plain_free_space_view(_image(), None, CAM, np.zeros((0, 2)), np.zeros(0), cfg)[0]) == 0


def test_training_images_sample_free_space_rays_with_their_bound(tmp_path):
    from neural_reloc.data import load_transforms_json
    from neural_reloc.nerf.train import TrainingImages
    from neural_reloc.sfm.flow_stereo import PixelDistances

    from test_depth_and_masks import _mask_of, _write_frames

    # Pixels (column, row) of images 0 and 2 bounded (image 1: none); with the masks,
    # (3, 2) and (5, 4) are valid, the others not.
    uv = [np.array([[3.5, 2.5], [1.5, 2.5]], np.float32), np.zeros((0, 2), np.float32),
          np.array([[5.5, 4.5], [0.5, 0.5]], np.float32)]
    dist = [np.array([2.0, 4.0], np.float32), np.zeros(0, np.float32), np.array([1.0, 3.0], np.float32)]
    for masks in (False, True):
        ds = load_transforms_json(_write_frames(tmp_path / str(masks), masks=masks))
        imgs = TrainingImages(ds, torch.device("cpu"), load_depth=False, free_space=PixelDistances(uv, dist, {}))
        expected = {(0, 3, 2): 2.0, (0, 1, 2): 4.0, (2, 5, 4): 1.0, (2, 0, 0): 3.0}
        if masks:  # a masked pixel is never a training ray, free space or not
            expected = {k: v for k, v in expected.items() if _mask_of(k[0])[k[2], k[1]]}
            assert sorted(expected.values()) == [1.0, 2.0]
        img, pix = imgs.image_index[imgs.free_pixels].long(), imgs.pixel[imgs.free_pixels].long()
        assert {(int(i), int(p[0]), int(p[1])): float(d)
                for i, p, d in zip(img, pix, imgs.free_distance)} == expected
        rays, bound = imgs.random_free_space_rays(500, torch.Generator().manual_seed(0))
        # Each ray is its bounded pixel's: its image and its direction.
        image_of = {v: k[0] for k, v in expected.items()}
        assert [image_of[float(b)] for b in bound] == rays.image_index.tolist()
        assert set(bound.tolist()) == set(expected.values())
        for b in set(expected.values()):
            i, u, v = next(k for k, val in expected.items() if val == b)
            want, _, _ = imgs.rays(torch.nonzero((imgs.image_index == i) & (imgs.pixel[:, 0] == u)
                                                 & (imgs.pixel[:, 1] == v)).squeeze(-1))
            torch.testing.assert_close(rays.dirs[bound == b], want.dirs.expand(int((bound == b).sum()), 3))
    assert TrainingImages(ds, torch.device("cpu"), load_depth=False).random_free_space_rays(10) is None


class _Views:
    """The three calls plain_free_space makes of a dataset, on hand-made views."""

    def __init__(self, greys: list[np.ndarray]):
        self.greys = greys

    def __len__(self) -> int:
        return len(self.greys)

    def image(self, i: int) -> np.ndarray:
        return np.repeat(self.greys[i][..., None], 3, -1)

    def mask(self, i: int) -> None:
        return None

    def camera(self, i: int) -> Camera:
        return CAM


def test_every_view_bounded_from_its_own_measurements_at_most_a_cap_each():
    from neural_reloc.sfm.flow_stereo import PixelDistances
    from neural_reloc.sfm.plain_regions import plain_free_space

    border = _border_pixels()
    dist = _plane_distance(border, np.array([0.0, 0.0, 1.0]), 3.0)
    measured = PixelDistances([border, np.zeros((0, 2))], [dist, np.zeros(0)], {})
    views = _Views([_image(0), _image(1)])
    full = plain_free_space(views, measured, PlainRegionsConfig())
    assert len(full.uv[1]) == 0  # nothing measured in view 1: no bound
    assert full.stats["bounded_pixels"] == full.count == len(full.uv[0]) > 4000
    capped = plain_free_space(views, measured, PlainRegionsConfig(max_points_per_view=1000))
    assert capped.stats["bounded_pixels"] == full.count and capped.count == len(capped.uv[0]) == 1000
    whole = {tuple(p) for p in full.uv[0].tolist()}
    assert {tuple(p) for p in capped.uv[0].tolist()} <= whole
