"""Warping a rendered view to a nearby pose (geometry/warp.py), against exact ray casts
of a small scene: a textured wall with a textured box in front of it."""

import numpy as np
import pytest
from box_scene import CAM, WALL_Z, ray_cast, w2c_at  # test/ is on sys.path

from neural_reloc.geometry.warp import fill_cracks, splat_depth, warp_rendered_view

@pytest.mark.parametrize("move", [((0.05, 0.0, 0.0), (0.0, 0.0, 0.0)), ((0.03, -0.02, 0.04), (0.0, 0.03, 0.01))])
def test_warp_matches_an_exact_render_at_the_target(move):
    source = ray_cast(w2c_at((0.0, 0.0, 0.0)))
    target_w2c = w2c_at(*move)
    exact = ray_cast(target_w2c)
    warped = warp_rendered_view(source, target_w2c)
    v = warped.valid
    assert v.mean() > 0.85  # a few cm of motion: most of the view is seen by the source
    point_err = np.linalg.norm(warped.points[v] - exact.points[v], axis=-1)
    # Off the occlusion edges (where the exact render switches surface) the points agree
    # to a fraction of a pixel footprint (~3 cm at 4 m); edges are a thin band.
    assert np.median(point_err) < 1e-3
    assert np.mean(point_err > 0.05) < 0.005
    assert np.median(np.abs(warped.rgb[v] - exact.rgb[v])) < 0.02


def test_warp_hides_what_the_source_could_not_see():
    """Moving sideways uncovers wall behind the box's edge: those pixels are not valid
    (the source saw the box there), and no valid pixel takes the box's colour for the wall."""
    source = ray_cast(w2c_at((0.0, 0.0, 0.0)))
    target_w2c = w2c_at((0.3, 0.0, 0.0))
    exact = ray_cast(target_w2c)
    warped = warp_rendered_view(source, target_w2c)
    on_wall = np.abs(exact.points[..., 2] - WALL_Z) < 1e-6
    wrong_surface = warped.valid & (np.abs(warped.points[..., 2] - exact.points[..., 2]) > 0.1)
    assert wrong_surface.sum() <= 0.01 * warped.valid.sum()
    uncovered = on_wall & ~warped.valid
    assert uncovered.sum() > 100  # the disoccluded strip beside the box


def test_warp_of_a_view_with_more_pixels_than_cv2_remap_takes_in_one_row():
    """320x240 = 76 800 lookups (cv2.remap's map sides must stay below 32 768)."""
    cam = CAM.scaled(2.0)
    source = ray_cast(w2c_at((0.0, 0.0, 0.0)), cam)
    target_w2c = w2c_at((0.03, 0.0, 0.0))
    exact = ray_cast(target_w2c, cam)
    warped = warp_rendered_view(source, target_w2c)
    v = warped.valid
    assert v.shape == (240, 320) and v.mean() > 0.85
    assert np.median(np.linalg.norm(warped.points[v] - exact.points[v], axis=-1)) < 1e-3


def test_identity_warp_keeps_the_view():
    source = ray_cast(w2c_at((0.0, 0.1, 0.0), (0.02, 0.0, 0.0)))
    warped = warp_rendered_view(source, source.w2c_opencv)
    assert warped.valid.mean() > 0.97
    np.testing.assert_allclose(warped.points[warped.valid], source.points[warped.valid], atol=1e-3)


def test_splat_and_crack_filling():
    w2c = np.eye(4)
    # one point per pixel of a 3x3 block but the centre; a far point behind one pixel
    uv = np.array([[10.5 + i, 20.5 + j] for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)])
    pts = np.concatenate([CAM.pixel_rays_opencv(uv) * 2.0 / CAM.pixel_rays_opencv(uv)[:, 2:], [[0, 0, 9.0]]])
    depth = splat_depth(CAM, w2c, pts)
    assert np.isinf(depth[20, 10]) and np.isclose(depth[19, 9], 2.0)
    assert np.isclose(depth[60, 80], 9.0)
    filled = fill_cracks(depth)
    assert np.isclose(filled[20, 10], 2.0)  # the crack takes its neighbours' depth
    assert np.isclose(filled[60, 80], 9.0)  # an isolated point keeps its own
    assert np.isinf(splat_depth(CAM, w2c, np.zeros((0, 3)))).all()


def test_bilinear_lookup_of_more_points_than_one_remap_row_takes():
    from neural_reloc.geometry.warp import sample_bilinear

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (60, 80, 2)).astype(np.float32)
    uv = rng.uniform([0.5, 0.5], [79.5, 59.5], (40000, 2))  # cv2.remap's map sides stop at 32767
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, 79), np.minimum(y0 + 1, 59)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    expected = (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x1] * fx * (1 - fy)
                + image[y1, x0] * (1 - fx) * fy + image[y1, x1] * fx * fy)
    assert np.abs(sample_bilinear(image, uv) - expected).max() < 1 / 32  # OpenCV interpolates with 5-bit weights
    assert sample_bilinear(image[..., 0], uv).shape == (40000, 1)
    assert sample_bilinear(image, uv[:0]).shape == (0, 2)
