"""Rendering for the synthesis pipeline: a synthetic view's RGB at a pose, and the 3D
points of keypoints from the map's depth (one ray per keypoint, through its exact
sub-pixel position, so no interpolation across depth edges).

Renders use the mean appearance code and the deterministic (non-randomized) sampler:
the same pose gives the same image, which a resumed run relies on.
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import Camera
from ..geometry.frames import opengl_c2w_from_opencv_w2c
from .config import RenderConfig


def render_rgb(model, camera: Camera, w2c_opencv: np.ndarray, cfg: RenderConfig) -> np.ndarray:
    """The map's RGB at ``w2c_opencv`` with ``camera``'s intrinsics: uint8 (H, W, 3)."""
    out = model.render_view(camera, opengl_c2w_from_opencv_w2c(w2c_opencv), ("rgb",),
                            num_fine=cfg.num_fine or None, color_samples=cfg.color_samples or None)
    return (np.clip(out["rgb"], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def keypoint_points(model, camera: Camera, w2c_opencv: np.ndarray, keypoints_px: np.ndarray,
                    cfg: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) float32 of keypoints (N, 2) from the map's depth, and (N,) bool:
    the ray's accumulated opacity reaches ``cfg.min_opacity`` and the point is finite."""
    kp = np.asarray(keypoints_px, dtype=np.float32).reshape(-1, 2)
    if len(kp) == 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, bool)
    out = model.render_view(camera, opengl_c2w_from_opencv_w2c(w2c_opencv), ("points", "accumulation"),
                            pixels_uv=kp, num_fine=cfg.num_fine or None)
    xyz = np.asarray(out["points"], dtype=np.float32).reshape(-1, 3)
    valid = (np.asarray(out["accumulation"]).reshape(-1) >= cfg.min_opacity) & np.all(np.isfinite(xyz), axis=1)
    return xyz, valid


def project(camera: Camera, w2c_opencv: np.ndarray, xyz_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) of world points in a view, and (N,) bool: in front of the camera."""
    T = np.asarray(w2c_opencv, dtype=np.float64)
    p_cam = np.asarray(xyz_world, dtype=np.float64).reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
    return camera.project(p_cam)


def depth_in_view(w2c_opencv: np.ndarray, xyz_world: np.ndarray) -> np.ndarray:
    """z-depth (N,) of world points in a view (OpenCV axes)."""
    T = np.asarray(w2c_opencv, dtype=np.float64)
    return (np.asarray(xyz_world, dtype=np.float64).reshape(-1, 3) @ T[2, :3]) + T[2, 3]


__all__ = ["depth_in_view", "keypoint_points", "project", "render_rgb"]
