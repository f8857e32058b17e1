"""NeRF features at 3D points (paper eq. 2): along the ray through the centre of each
patch x patch block of a view, the weighted sums of the sampled points and of one
internal layer's features, from the map's field exactly as it was trained."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opengl_c2w_from_opencv_w2c
from .encoder import STRIDE


@dataclass
class RenderedPoints:
    """Per patch centre (row-major over the (H/8, W/8) grid): the layer's features
    divided by the ray's opacity (N, D), the rendered 3D point (N, 3) and the opacity (N,);
    ``unit_points`` the points in the field's [0, 1]^3 domain (N, 3), which the full
    variant's positional encoding takes."""

    features: torch.Tensor
    points: torch.Tensor
    accumulation: torch.Tensor
    unit_points: torch.Tensor | None = None


def encoder_camera(camera: Camera, long_side: int) -> Camera:
    """``camera`` resized so its long side is about ``long_side`` and both sides are
    multiples of the encoder's stride (the image is resized the same way)."""
    s = long_side / max(camera.width, camera.height)
    w = max(STRIDE, int(round(camera.width * s / STRIDE)) * STRIDE)
    h = max(STRIDE, int(round(camera.height * s / STRIDE)) * STRIDE)
    return camera.resized(w, h)


@torch.no_grad()
def render_nerf_features(model, camera: Camera, w2c_opencv: np.ndarray, layer: str, *, num_fine: int | None = None,
                         num_coarse: int | None = None, blocks: int = 1) -> RenderedPoints:
    """The ``layer`` features and points at the patch centres of ``camera`` seen from
    ``w2c_opencv`` (the field in eval mode, no gradients); ``blocks`` > 1: at the centres
    of blocks of ``blocks`` x ``blocks`` patches instead."""
    uv = camera.pixel_centers(stride=STRIDE * blocks).reshape(-1, 2)
    out = model.render_view(camera, opengl_c2w_from_opencv_w2c(w2c_opencv), (layer, "points", "accumulation"),
                            pixels_uv=uv, num_fine=num_fine, num_coarse=num_coarse)
    acc = torch.from_numpy(out["accumulation"])
    feats = torch.from_numpy(out[layer]).reshape(len(uv), -1) / acc.clamp_min(1e-3)[:, None]
    points = torch.from_numpy(out["points"])
    return RenderedPoints(feats, points, acc, model.scene.to_unit(points.float()))


__all__ = ["RenderedPoints", "encoder_camera", "render_nerf_features"]
