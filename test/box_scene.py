"""A small exactly-rendered scene for the warp and flow-refinement tests: a textured wall
with a textured square (the "box") in front of it, ray-cast at pixel centres."""

import numpy as np

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.se3 import invert_pose, make_pose, rotation_from_rotvec
from neural_reloc.geometry.warp import RenderedView

CAM = Camera(160, 120, 140.0, 140.0, 80.0, 60.0)
WALL_Z = 4.0
BOX_Z = 2.5  # a square facing the camera, |x|, |y| < BOX_HALF
BOX_HALF = 0.4


def _texture(p: np.ndarray) -> np.ndarray:
    x, y = p[:, 0], p[:, 1]
    g = 0.5 + 0.25 * np.sin(7.0 * x) * np.cos(5.0 * y) + 0.2 * np.sin(13.0 * x + 3.0 * y)
    return np.stack([g, 0.8 * g + 0.1, 0.6 * g + 0.2], -1)


def ray_cast(w2c_opencv: np.ndarray, cam: Camera = CAM) -> RenderedView:
    """Exact render of the scene: the nearest of the box and the wall per pixel centre."""
    c2w_opencv = invert_pose(w2c_opencv)
    uv = cam.pixel_centers().reshape(-1, 2)
    d = cam.pixel_rays_opencv(uv) @ c2w_opencv[:3, :3].T
    o = c2w_opencv[:3, 3]
    t_wall = (WALL_Z - o[2]) / d[:, 2]
    t_box = (BOX_Z - o[2]) / d[:, 2]
    p_box = o + d * t_box[:, None]
    on_box = (np.abs(p_box[:, 0]) < BOX_HALF) & (np.abs(p_box[:, 1]) < BOX_HALF) & (t_box > 0)
    t = np.where(on_box, t_box, t_wall)
    p = o + d * t[:, None]
    h, w = cam.height, cam.width
    return RenderedView(cam, w2c_opencv, _texture(p).reshape(h, w, 3), p.reshape(h, w, 3), np.ones((h, w), bool))


def w2c_at(center, rotvec=(0.0, 0.0, 0.0)) -> np.ndarray:
    return invert_pose(make_pose(rotation_from_rotvec(np.array(rotvec)), np.array(center, float)))
