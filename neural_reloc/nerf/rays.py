"""Camera rays in torch (batched, device-resident; :func:`world_rays` is differentiable
in the pose, which the photometric refinement uses)."""

from __future__ import annotations

import numpy as np
import torch

from ..geometry.camera import Camera, undistort_normalized_newton
from ..geometry.frames import opencv_c2w_from_opengl_c2w

#: Column order of the per-camera parameter tensor built by :func:`camera_params`.
CAMERA_PARAM_NAMES = ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3")


def camera_params(cameras: list[Camera], device=None) -> torch.Tensor:
    """(N, 9) float32 tensor of intrinsics + distortion, in CAMERA_PARAM_NAMES order."""
    return torch.tensor(
        [[getattr(c, k) for k in CAMERA_PARAM_NAMES] for c in cameras], dtype=torch.float32, device=device
    )


def pixel_dirs_opencv(params: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Unit ray directions in the OpenCV camera frame.

    params: (N, 9) per ray (or (1, 9) broadcast); uv: (N, 2) pixel coordinates in the
    project's convention (pixel i's centre at i + 0.5). Distortion is inverted by the
    same Newton iteration as :meth:`Camera.undistort_normalized`.
    """
    fx, fy, cx, cy, k1, k2, p1, p2, k3 = params.unbind(-1)
    xd = (uv[:, 0] - cx) / fx
    yd = (uv[:, 1] - cy) / fy
    x, y = xd, yd
    if bool(torch.any(params[:, 4:] != 0)):
        x, y = undistort_normalized_newton(xd, yd, k1, k2, p1, p2, k3)
    d = torch.stack([x, y, torch.ones_like(x)], -1)
    return d / d.norm(dim=-1, keepdim=True)


def c2w_opencv_tensor(c2w_opengl: np.ndarray, device=None) -> torch.Tensor:
    """(N, 4, 4) OpenCV camera-to-world tensors from OpenGL camera-to-world arrays."""
    arr = np.asarray(c2w_opengl, dtype=np.float64).reshape(-1, 4, 4)
    cv = np.stack([opencv_c2w_from_opengl_c2w(T) for T in arr])
    return torch.tensor(cv, dtype=torch.float32, device=device)


def world_rays(
    c2w_opencv: torch.Tensor, dirs_cam_opencv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions in world for camera-frame directions.

    c2w_opencv: (N, 4, 4) per ray or (1, 4, 4).
    """
    R = c2w_opencv[:, :3, :3]
    d = torch.einsum("nij,nj->ni", R.expand(dirs_cam_opencv.shape[0], 3, 3), dirs_cam_opencv)
    o = c2w_opencv[:, :3, 3].expand(dirs_cam_opencv.shape[0], 3)
    return o, d


def view_pixels(camera: Camera, stride: int = 1, device=None) -> torch.Tensor:
    """Centres of a (H/stride, W/stride) grid of pixel blocks as (M, 2) uv."""
    return torch.tensor(camera.pixel_centers(stride).reshape(-1, 2), dtype=torch.float32, device=device)
