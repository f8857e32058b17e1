"""Grey levels and their gradient: where an image has texture for optical flow,
photometric residuals or feature matches (the localizers' tests and the mapping views'
flow stereo use one definition)."""

from __future__ import annotations

import cv2
import numpy as np


def grey(rgb: np.ndarray) -> np.ndarray:
    """Grey levels (H, W) uint8 of an RGB uint8 image."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def gradient_magnitude(grey_image: np.ndarray) -> np.ndarray:
    """Grey-level gradient magnitude (Sobel / 8: levels per pixel) of a grey image, float32."""
    gx = cv2.Sobel(grey_image, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(grey_image, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return cv2.magnitude(gx, gy)  # sqrt(gx^2 + gy^2), 7x faster than np.hypot at 640x480


__all__ = ["gradient_magnitude", "grey"]
