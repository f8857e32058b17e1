"""APR-Net (Sec. 3.1): a small CNN trained from scratch (torchvision's VGG-16 is not
available here) with a pose head (camera centre + 6D rotation) and a feature branch
fused from its blocks as in DFNet.

Blocks: ``len(channels)`` x [3x3 conv, BN, ReLU, 3x3 conv, BN, ReLU, 2x2 max-pool]. The
pose head average-pools the last block to ``head_pool`` cells, flattens, one hidden
layer, :class:`~.pose_repr.PoseOutput`. The feature branch projects the outputs of
blocks 2.. (1x1 convs) to ``feature_dim``, upsamples them to block 2's resolution
(H/4), sums and L2-normalizes them (F_image of L_image). At localization only the pose
head runs.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...geometry.camera import Camera
from .config import AprConfig
from .pose_repr import PoseOutput

#: ImageNet statistics as input normalization (as the project's other CNNs).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
#: Cells the last block is average-pooled to before the pose head (rows, cols): keeps
#: the coarse layout of the view, which a global average would lose.
HEAD_POOL = (3, 4)


def _block(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def apr_camera(camera: Camera, long_side: int, num_blocks: int) -> Camera:
    """``camera`` resized so its long side is ~``long_side`` and both sides are
    multiples of 2**num_blocks (the input APR-Net sees)."""
    m = 2**num_blocks
    s = long_side / max(camera.width, camera.height)
    w, h = max(m, round(camera.width * s / m) * m), max(m, round(camera.height * s / m) * m)
    return camera.resized(w, h)


#: An image more than this many times APR-Net's input on both axes is first averaged over
#: whole k x k blocks (k: the largest common divisor of its sides up to half the factor;
#: OpenCV's integer-factor path), then area-resized: the area resize of a 1080x1920 photo
#: straight to 64x128 is ~12 ms on 2 CPU cores, over the APR's whole budget (NOTES.md).
PRE_SHRINK_MIN_FACTOR = 4


def _block_factor(w: int, h: int, factor: float) -> int:
    for k in range(int(factor) // 2, 1, -1):
        if w % k == 0 and h % k == 0:
            return k
    return 1


def apr_input(image_rgb: np.ndarray, camera: Camera) -> np.ndarray:
    """The image resized to APR-Net's ``camera`` (uint8, H x W x 3) by area averaging
    (in two steps for a large image: :data:`PRE_SHRINK_MIN_FACTOR`)."""
    h, w = image_rgb.shape[:2]
    factor = min(w / camera.width, h / camera.height)
    k = _block_factor(w, h, factor) if factor >= PRE_SHRINK_MIN_FACTOR else 1
    if k > 1:
        image_rgb = cv2.resize(image_rgb, (w // k, h // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(image_rgb, (camera.width, camera.height), interpolation=cv2.INTER_AREA)


def to_tensor(images_uint8: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    x = torch.as_tensor(images_uint8, device=device)
    if x.dim() == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2).float() / 255.0


class AprNet(nn.Module):
    def __init__(self, cfg: AprConfig):
        super().__init__()
        chans = [int(c) for c in cfg.channels]
        self.num_blocks = len(chans)
        self.blocks = nn.ModuleList(_block(a, b) for a, b in zip([3] + chans[:-1], chans))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * HEAD_POOL[0] * HEAD_POOL[1], cfg.head_hidden),
                                  nn.ReLU(inplace=True))
        self.pose = PoseOutput(cfg.head_hidden)
        fused = chans[1:] if len(chans) > 1 else chans
        self.fuse = nn.ModuleList(nn.Conv2d(c, cfg.feature_dim, 1) for c in fused)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        #: Validation error: per-axis mean squares of the centre error (world, m^2) and
        #: of the rotation error (world axes, rad^2), set after training.
        self.register_buffer("validation_var", torch.full((6,), float("nan")))

    def forward(self, image: torch.Tensor, features: bool = False):
        """(B, 3, H, W) in [0, 1] -> c2w_opencv (B, 4, 4) [, fused unit features (B, D, H/4, W/4)]."""
        m = 2**self.num_blocks
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-1] % m or image.shape[-2] % m:
            raise ValueError(f"AprNet expects RGB (B, 3, H, W) with sides multiples of {m}, got {tuple(image.shape)}")
        x = (image - self.mean) / self.std
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        pose = self.pose(self.head(F.adaptive_avg_pool2d(x, HEAD_POOL)))
        if not features:
            return pose
        taps = outs[1:] if len(outs) > 1 else outs
        size = taps[0].shape[-2:]
        fused = sum(F.interpolate(conv(t), size=size, mode="bilinear", align_corners=False) if t.shape[-2:] != size
                    else conv(t) for conv, t in zip(self.fuse, taps))
        return pose, F.normalize(fused, dim=1)


__all__ = ["AprNet", "apr_camera", "apr_input", "to_tensor"]
