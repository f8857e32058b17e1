"""Where a query image has texture: grey-level gradients, and which feature cells see any.

A learned feature map gives every cell a descriptor, even a cell that sees only a flat
patch (a saturated or black region, a covered lens, a blank wall filling the view).
Such a descriptor is made of the network's padding and biases, not of the scene: on a
flat grey image the cells along the image border still matched rendered descriptors
by the dozen, and PnP on them returned the starting pose, a confident answer from
nothing. A match therefore needs texture within the feature's reach: some pixel within
half the network's receptive field of the cell with a grey-level gradient of at least
``match_min_gradient``. Saturated and black regions are exactly flat; every cell of the
procedural rooms' and fox's queries passes at the default (1 level per pixel), so the
test costs a real image nothing. A flat image with sensor noise passes it: its cells
match at random, and RANSAC is what refuses them (NOTES.md, seventeenth session).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from torch import nn

from ...geometry.gradients import gradient_magnitude, grey


def trunk_receptive_field(trunk: nn.Sequential) -> int:
    """Receptive field (input pixels along each axis) of a plain CNN trunk: an
    ``nn.Sequential`` of ``Conv2d`` and ``MaxPool2d``/``AvgPool2d`` layers and layers that
    do not widen it (activations, normalizations: modules without children). A nested
    module (a residual block, another Sequential) raises ValueError: its field is not the
    sum of its layers'."""
    rf, jump = 1, 1
    for layer in trunk:
        if isinstance(layer, nn.Conv2d):
            k, d, s = layer.kernel_size[0], layer.dilation[0], layer.stride[0]
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            k, d, s = _pair(layer.kernel_size), _pair(getattr(layer, "dilation", 1)), _pair(layer.stride)
        elif any(True for _ in layer.children()):
            raise ValueError(f"trunk_receptive_field: {type(layer).__name__} is a nested module; only plain layers")
        else:
            continue
        rf += (k - 1) * d * jump
        jump *= s
    return rf


def _pair(v) -> int:
    return int(v[0] if isinstance(v, tuple) else v)


def near_texture(image_rgb: np.ndarray, min_gradient: float, radius_px: int) -> np.ndarray:
    """(H, W) bool: the pixels of ``image_rgb`` (uint8 RGB) within ``radius_px`` (along each
    axis) of one with a grey-level gradient >= ``min_gradient``."""
    textured = (gradient_magnitude(grey(image_rgb)) >= min_gradient).astype(np.uint8)
    if radius_px > 0:
        textured = cv2.dilate(textured, np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8))
    return textured > 0


def textured_cells(image_rgb: np.ndarray, stride: int, radius_px: int, min_gradient: float) -> np.ndarray:
    """Which cells of a feature map of ``stride`` over ``image_rgb`` (the network's input
    image, uint8 RGB (H, W, 3)) see texture: (H // stride, W // stride) bool, True where a
    pixel within ``radius_px`` (along each axis, rounded up to whole cells) of the cell's
    block has a grey-level gradient >= ``min_gradient``. ``min_gradient`` <= 0: every cell."""
    h, w = image_rgb.shape[0] // stride, image_rgb.shape[1] // stride
    if min_gradient <= 0:
        return np.ones((h, w), bool)
    textured = gradient_magnitude(grey(image_rgb))[: h * stride, : w * stride] >= min_gradient
    # any textured pixel of each stride x stride block: the block's maximum, at its top-left
    cells = cv2.dilate(textured.astype(np.uint8), np.ones((stride, stride), np.uint8), anchor=(0, 0))[::stride, ::stride]
    r = math.ceil(radius_px / stride)
    if r > 0:
        cells = cv2.dilate(cells, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    return cells > 0


__all__ = ["gradient_magnitude", "grey", "near_texture", "textured_cells", "trunk_receptive_field"]
