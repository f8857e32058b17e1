"""The debug image (as Autoware's ``~/output/image``): what the map sees at the estimate.

The camera image blended with the map's colours rendered at the estimated pose (where
the two disagree the render ghosts beside the image: a wrong pose is plain to see), the
inlier correspondences the pose rests on as dots, and a line of text (method, inliers,
latency, or why the frame failed). ROS-free: the node converts the array to a
``sensor_msgs/Image``; anything else (a report, a notebook) can use it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config_fields import setting
from ..geometry.camera import Camera
from ..geometry.frames import opengl_c2w_from_opencv_w2c

#: Colours (RGB) of inlier dots, and of the text of a frame that localized / failed.
INLIER_RGB = (0, 255, 0)
OK_TEXT_RGB = (255, 255, 255)
FAILED_TEXT_RGB = (255, 64, 64)
#: Dot radius and text height per pixel of image width (so a 640 px image gets 3 px dots).
DOT_RADIUS_PER_WIDTH = 1 / 200
TEXT_SCALE_PER_WIDTH = 1 / 1000


@dataclass
class DebugImageConfig:
    """How the node's ``~/debug_image`` is drawn (mirrored by config/relocalize.yaml)."""

    render_max_size: int = setting(
        160, "Long side, pixels, of the map's render at the estimate (upscaled to the camera's size); 0: no "
        "render, the camera image and the inliers only.", range=(0, 4096)
    )
    blend: float = setting(0.5, "Weight of the render in the blend (0: camera image only, 1: render only).",
                           range=(0.0, 1.0))
    max_inliers: int = setting(300, "Draw at most this many inliers (an even subset of them; flow refinement "
                               "keeps thousands).", range=(0, 1_000_000))


def render_at_estimate(relocalizer, camera: Camera, w2c_opencv_world: np.ndarray, max_size: int) -> np.ndarray | None:
    """The map's colours at ``w2c_opencv_world`` (the relocalizer's world), RGB uint8 of
    ``camera``'s size, rendered at ``max_size`` on the long side; None for a method
    without a neural field to render (``relocalizer.model.render_view``)."""
    import cv2

    model = getattr(relocalizer, "model", None)
    if max_size <= 0 or model is None or not hasattr(model, "render_view"):
        return None
    small = camera.fit_within(max_size, max_size) if max(camera.width, camera.height) > max_size else camera
    out = model.render_view(small, opengl_c2w_from_opencv_w2c(w2c_opencv_world), outputs=("rgb",))
    rgb = (np.clip(out["rgb"], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if rgb.shape[:2] != (camera.height, camera.width):
        rgb = cv2.resize(rgb, (camera.width, camera.height), interpolation=cv2.INTER_LINEAR)
    return rgb


def draw_debug_image(image_rgb: np.ndarray, render_rgb: np.ndarray | None = None, inlier_uv: np.ndarray | None = None,
                     text: str = "", failed: bool = False, blend: float = 0.5, max_inliers: int = 0) -> np.ndarray:
    """``image_rgb`` (H, W, 3) uint8 blended with ``render_rgb`` (same size, or None),
    ``inlier_uv`` (K, 2) pixels as dots (an even subset of ``max_inliers`` when > 0) and
    ``text`` on top: a new (H, W, 3) uint8."""
    import cv2

    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"debug image: the camera image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if render_rgb is not None:
        render = np.asarray(render_rgb)
        if render.shape != image.shape:
            raise ValueError(f"debug image: the render is {render.shape}, the camera image {image.shape}")
        out = cv2.addWeighted(image, 1.0 - blend, render.astype(np.uint8), blend, 0.0)
    else:
        out = image.copy()
    if inlier_uv is not None and len(inlier_uv):
        radius = max(1, round(w * DOT_RADIUS_PER_WIDTH))
        uv = np.asarray(inlier_uv, dtype=np.float64).reshape(-1, 2)
        uv = uv[np.all(np.isfinite(uv), axis=1)]
        if 0 < max_inliers < len(uv):
            uv = uv[np.linspace(0, len(uv) - 1, max_inliers).astype(int)]
        for u, v in np.rint(uv).astype(int):
            if 0 <= u < w and 0 <= v < h:
                cv2.circle(out, (int(u), int(v)), radius, INLIER_RGB, -1, lineType=cv2.LINE_AA)
    if text:
        scale = max(0.3, w * TEXT_SCALE_PER_WIDTH)
        thickness = max(1, round(scale))
        (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        org = (2, th + 2)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, FAILED_TEXT_RGB if failed else OK_TEXT_RGB,
                    thickness, cv2.LINE_AA)
    return out


def result_text(result, rejection: str = "") -> str:
    """One line about a :class:`~neural_reloc.methods.base.LocalizationResult`."""
    if rejection:
        return f"{result.method}: {rejection}"
    return (f"{result.method}: {result.num_inliers}/{result.num_matches} inliers, "
            f"{result.total_latency_ms:.0f} ms")


__all__ = ["DebugImageConfig", "draw_debug_image", "render_at_estimate", "result_text"]
