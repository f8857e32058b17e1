"""Depth-guided rendering (nerf/depth_band.py): the band of every pixel holds its
surface, edges included; the sampler stays inside a given band; a guided render of a
real (tiny) field matches the one-pass render where the band holds the surface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from box_scene import CAM, ray_cast, w2c_at  # test/ is on sys.path

from neural_reloc.nerf.config import EncodingConfig, FieldConfig, NeuralMapConfig
from neural_reloc.nerf.depth_band import band_bounds, render_view_depth_guided
from neural_reloc.nerf.neural_map import NeuralMap
from neural_reloc.nerf.sampler import DensityGrid, sample_intervals
from neural_reloc.nerf.scene import SceneNormalization

POSE = w2c_at((0.1, -0.05, 0.0), (0.0, 0.05, 0.0))  # the box's edges cross the view


def _distance(view, w2c_opencv) -> np.ndarray:
    centre = np.linalg.inv(w2c_opencv)[:3, 3]
    return np.linalg.norm(view.points - centre, axis=-1)


@pytest.mark.parametrize("stride", [4, 8])
def test_every_pixel_band_holds_its_surface_across_depth_edges(stride):
    full = _distance(ray_cast(POSE), POSE)
    coarse_cam = CAM.resized(CAM.width // stride, CAM.height // stride)  # pixel centres = block centres
    coarse = _distance(ray_cast(POSE, coarse_cam), POSE)
    near, far = band_bounds(coarse, np.ones_like(coarse), stride, CAM.width, CAM.height, 0.02, 0.5)
    d = full.reshape(-1)
    assert np.all((near <= d) & (d <= far))
    edge = far / near > 1.3  # pixels whose band spans the box and the wall behind it
    assert 0 < edge.mean() < 0.2  # at the edges only: elsewhere the band is narrow
    assert np.median(far / near) < 1.12  # the scene's own bounds: 0.05 m to the far wall


def test_pixels_next_to_a_transparent_block_keep_the_scene_bounds():
    coarse = np.full((30, 40), 3.0, np.float32)
    acc = np.ones_like(coarse)
    acc[10, 20] = 0.1
    acc[25, 5] = 0.7  # opaque enough for min_accumulation, but maybe two surfaces mixed
    near, far = band_bounds(coarse, acc, 4, 161, 122, 0.1, 0.5)  # sizes not multiples of the stride
    near, far = near.reshape(122, 161), far.reshape(122, 161)
    assert near[44, 84] == 0 and np.isinf(far[44, 84])  # block (11, 21): next to (10, 20)
    assert near[36, 76] == 0 and np.isinf(far[36, 76])  # block (9, 19)
    assert near[52, 92] == pytest.approx(2.7) and far[52, 92] == pytest.approx(3.3)  # block (13, 23)
    assert far[121, 160] == pytest.approx(3.3)  # the last row / column use the last block
    assert near[100, 20] == 0 and np.isinf(far[100, 20])  # block (25, 5)


def test_sampler_stays_in_the_band_and_falls_back_where_it_misses_the_scene():
    scene = SceneNormalization(mode="bounded", aabb_min=np.array([-1.0, -1.0, -1.0]),
                               aabb_max=np.array([1.0, 1.0, 1.0]), near=0.05)
    grid = DensityGrid(NeuralMapConfig().sampler)
    o = torch.tensor([[0.0, 0.0, -0.9]] * 3)
    d = torch.tensor([[0.0, 0.0, 1.0]] * 3)
    near = torch.tensor([0.5, 0.0, 5.0])  # inside; wider than the scene; beyond it
    far = torch.tensor([0.7, float("inf"), 6.0])
    t0, t1, _ = sample_intervals(o, d, scene, grid, grid.cfg, False, 8, 16, near, far)
    assert t0[0].min() >= 0.5 - 1e-6 and t1[0].max() <= 0.7 + 1e-6
    for k in (1, 2):  # the scene's own bounds: 0.05 .. 1.9
        assert t0[k].min() == pytest.approx(0.05) and t1[k].max() == pytest.approx(1.9)


def _solid_map() -> NeuralMap:
    """A tiny field with a dense, textured slab (z in [0.2, 0.5]) in empty space."""
    enc = EncodingConfig(dense_resolutions=(8, 16), dense_features=2)
    cfg = NeuralMapConfig(field=FieldConfig(encoding=enc, hidden_dim=16, color_hidden_dim=16))
    cfg.sampler.grid_resolution = 16
    scene = SceneNormalization(mode="bounded", aabb_min=np.array([-1.0, -1.0, -1.0]),
                               aabb_max=np.array([1.0, 1.0, 1.0]), near=0.05)
    torch.manual_seed(0)
    m = NeuralMap(cfg, scene, 1)
    with torch.no_grad():
        for p in m.field.encoding.parameters():
            p.normal_(0, 1.0)
        field = m.field

        def density(x01):  # the slab, in unit-cube coordinates (z in 0.6 .. 0.75)
            z = x01[:, 2]
            return torch.where((z > 0.6) & (z < 0.75), 50.0, 0.0)

        field.geometry = (lambda g: lambda x: {**g(x), "sigma": density(x)})(field.geometry)
        m.update_grid(all_cells=True)
    return m.eval()


def test_guided_render_matches_the_one_pass_render_of_a_solid_surface():
    m = _solid_map()
    cam = CAM.resized(80, 60)
    c2w_opengl = np.diag([1.0, -1.0, -1.0, 1.0])  # at the origin looking down +z (OpenCV), OpenGL axes
    c2w_opengl[:3, 3] = [0.0, 0.0, -0.9]
    outs = ("rgb", "distance", "accumulation")
    ref = m.render_view(cam, c2w_opengl, outs, num_fine=64, num_coarse=256)
    one_pass = m.render_view(cam, c2w_opengl, outs, num_fine=8, num_coarse=64)
    guided = render_view_depth_guided(m, cam, c2w_opengl, outs, guide_stride=4, margin_rel=0.1, band_coarse=16,
                                      min_accumulation=0.5, num_fine=8, num_coarse=64)
    assert ref["accumulation"].min() > 0.99 and guided["accumulation"].min() > 0.99
    # With the same fine samples, the band places them closer to the surface than one pass does.
    err_guided = np.abs(guided["distance"] - ref["distance"])
    err_one_pass = np.abs(one_pass["distance"] - ref["distance"])
    assert np.median(err_guided) < 0.8 * np.median(err_one_pass)
    assert np.quantile(err_guided, 0.9) < np.quantile(err_one_pass, 0.9)
    assert np.abs(guided["rgb"] - ref["rgb"]).mean() <= np.abs(one_pass["rgb"] - ref["rgb"]).mean()


def test_guided_render_of_some_pixels_leaves_the_others_to_the_guide_colour():
    """``pixels``: the selected pixels are the whole render's; the others have no surface
    and show the guide blocks' colour; none selected still gives every output."""
    import cv2

    m = _solid_map()
    cam = CAM.resized(80, 60)
    c2w_opengl = np.diag([1.0, -1.0, -1.0, 1.0])
    c2w_opengl[:3, 3] = [0.0, 0.0, -0.9]
    outs = ("rgb", "points", "accumulation")
    kw = dict(guide_stride=4, margin_rel=0.1, band_coarse=16, min_accumulation=0.5, num_fine=8, num_coarse=64)
    whole = render_view_depth_guided(m, cam, c2w_opengl, outs, **kw)
    pixels = np.zeros((60, 80), bool)
    pixels[10:30, 20:50] = True
    part = render_view_depth_guided(m, cam, c2w_opengl, outs, pixels=pixels, **kw)
    for o in outs:
        assert part[o].shape == whole[o].shape
        np.testing.assert_allclose(part[o][pixels], whole[o][pixels], atol=1e-5)
    assert not part["accumulation"][~pixels].any() and not part["points"][~pixels].any()
    guide = m.render_view(cam, c2w_opengl, ("rgb",), stride=4, num_fine=8, num_coarse=64)["rgb"]
    expected = cv2.resize(guide, (80, 60), interpolation=cv2.INTER_LINEAR)  # 80 x 60: whole 4-px blocks
    np.testing.assert_allclose(part["rgb"][~pixels], expected[~pixels], atol=1e-6)
    none = render_view_depth_guided(m, cam, c2w_opengl, outs, pixels=np.zeros((60, 80), bool), **kw)
    assert not none["accumulation"].any() and none["points"].shape == (60, 80, 3)
    np.testing.assert_allclose(none["rgb"], expected, atol=1e-6)  # the guide's colour everywhere


def test_guide_colour_keeps_each_block_at_its_place_when_a_side_is_not_whole_blocks():
    from neural_reloc.nerf.depth_band import guide_colour

    blocks = np.arange(6, dtype=np.float32).reshape(2, 3, 1).repeat(3, -1)  # 2 x 3 blocks of 4 px
    up = guide_colour(blocks, 4, 14, 10)  # 2 px past the blocks on each side
    assert up.shape == (10, 14, 3)
    np.testing.assert_allclose(up[:8, :12], guide_colour(blocks, 4, 12, 8))
    assert up[1, 1, 0] == 0 and up[6, 10, 0] == 5  # block centres hold their own colour
    np.testing.assert_array_equal(up[9], up[7])  # the rows past the blocks repeat the last one
    np.testing.assert_array_equal(up[:, 13], up[:, 11])
