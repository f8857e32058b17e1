"""Rendering at known surfaces (nerf/surface_render.py): the upsampled inverse depth is
exact on planes and leaves depth edges out; one field evaluation at a solid surface
gives the volume render's colour and point."""

from __future__ import annotations

import numpy as np
import pytest
from box_scene import CAM, ray_cast, w2c_at  # test/ is on sys.path
from test_depth_band import _solid_map

from neural_reloc.nerf.surface_render import render_at_surface, upsample_depth

STRIDE = 4
COARSE = CAM.resized(CAM.width // STRIDE, CAM.height // STRIDE)  # pixel centres = block centres


def _z(view) -> np.ndarray:
    w2c = view.w2c_opencv
    return (view.points @ w2c[:3, :3].T + w2c[:3, 3])[..., 2]


def test_inverse_depth_upsampling_is_exact_on_a_slanted_plane():
    pose = w2c_at((2.5, 0.0, 1.0), (0.0, 0.5, 0.0))  # the wall only, seen at an angle
    coarse, fine = ray_cast(pose, COARSE), ray_cast(pose, CAM)
    assert np.ptp(_z(fine)) > 2.0  # slanted: depth varies across the view
    depth, valid = upsample_depth(_z(coarse), coarse.valid, CAM.width, CAM.height, edge_rel=0.05)
    half = STRIDE // 2  # beyond the outermost coarse centres the resize would hold, not extend, the plane
    assert not valid[:half].any() and not valid[-half:].any() and not valid[:, :half].any()
    assert valid[half:-half, half:-half].all()  # the slant is no kink, at the border either
    assert np.abs(depth - _z(fine))[valid].max() < 1e-4 * _z(fine).max()


def test_pixels_near_a_depth_edge_are_left_out():
    pose = w2c_at((0.1, -0.05, 0.0), (0.0, 0.05, 0.0))  # the box's edges cross the view
    coarse, fine = ray_cast(pose, COARSE), ray_cast(pose, CAM)
    depth, valid = upsample_depth(_z(coarse), coarse.valid, CAM.width, CAM.height, edge_rel=0.05)
    off = np.abs(depth - _z(fine)) > 0.01 * _z(fine)
    assert off.any() and not (off & valid).any()  # every pixel interpolated across the edge is out
    assert valid.mean() > 0.75  # the rest, but for the image's outer half block
    _, valid_all = upsample_depth(_z(coarse), coarse.valid, CAM.width, CAM.height, edge_rel=10.0)
    assert valid_all[2:-2, 2:-2].all()  # no edge test: every pixel between the coarse centres
    holes = coarse.valid.copy()
    holes[3, 5] = False
    _, valid_holes = upsample_depth(_z(coarse), holes, CAM.width, CAM.height, edge_rel=10.0)
    assert not valid_holes[8:20, 16:28].any()  # the fine pixels around a coarse pixel without a surface


def test_one_evaluation_at_a_solid_surface_gives_the_volume_render():
    m = _solid_map()
    cam = CAM.resized(80, 60)
    c2w_opengl = np.diag([1.0, -1.0, -1.0, 1.0])  # at (0, 0, -0.9) looking down +z (OpenCV), OpenGL axes
    c2w_opengl[:3, 3] = [0.0, 0.0, -0.9]
    ref = m.render_view(cam, c2w_opengl, ("rgb", "depth", "points", "accumulation"), num_fine=64, num_coarse=256)
    assert ref["accumulation"].min() > 0.99
    valid = np.ones(ref["depth"].shape, bool)
    valid[:5] = False
    out = render_at_surface(m, cam, c2w_opengl, ref["depth"], valid)
    assert np.allclose(out["points"][valid], ref["points"][valid], atol=1e-5)
    assert (out["rgb"][~valid] == 0).all() and (out["points"][~valid] == 0).all()
    assert np.abs(out["rgb"][valid] - ref["rgb"][valid]).mean() < 0.02


def test_depth_of_another_size_is_refused():
    with pytest.raises(ValueError, match="for a 160x120 camera"):
        render_at_surface(None, CAM, np.eye(4), np.ones((60, 80)), np.ones((60, 80), bool))
