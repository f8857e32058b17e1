"""CROSSFIRE's image feature extractor (paper Sec. 3.2, "Features Extraction").

"A simple fully convolutional neural network with 8 layers, ReLU activations and max
poolings. The input is a RGB image I of size H x W and produces a dense descriptors map
F_I in R^{H/4 x W/4 x d}." The exact architecture is in the paper's supplementary
material, which we do not have; ours: seven 3x3 convolutions (``channels``), each
followed by ReLU, 2x2 max-pools after the 2nd and 4th, and a final 1x1 convolution to
``dim`` (no ReLU), L2-normalized over channels.

Descriptor cell <-> input pixel correspondence (the project's pixel convention, see
:mod:`neural_reloc.geometry.camera`: continuous coordinates with the origin at the
top-left *corner* of the image, pixel k's centre at k + 0.5):

* output cell (row i, col j) pools input pixels cols [4j, 4j + 4) x rows [4i, 4i + 4),
  i.e. the continuous square [4j, 4j + 4) x [4i, 4i + 4);
* its centre, the point a 2D-2D / 2D-3D match must use, is (u, v) = (4j + 2, 4i + 2),
  *not* (4j + 0.5, 4i + 0.5) (the centre of the block's first pixel) nor 4j + 1.5;
* that is exactly ``Camera.pixel_centers(stride=4)`` of the CNN input camera, and the
  pixel centre (j + 0.5, i + 0.5) of ``camera.scaled(0.25)`` scaled back by 4.

Why it holds: every 3x3 convolution has padding 1 (symmetric, no shift) and each 2x2
stride-2 max-pool maps cell k to inputs {2k, 2k + 1}, whose centres average to
2k + 1 = 2(k + 0.5) in the input's own units; twice: 4(k + 0.5) = 4k + 2. The receptive
field is 40 x 40 pixels without dilation, [4j - 18, 4j + 22) horizontally, symmetric
about 4j + 2; dilated convolutions (padding = dilation) keep the symmetry and widen it
(128 px with the default dilations; ``test/test_crossfire_parts.py`` checks both
numerically).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..common.cnn_inference import run_trunk

if TYPE_CHECKING:  # config imports the PnP module; the network does not need it
    from .config import DescriptorConfig

# ImageNet statistics, the usual input normalization of CNNs (the network is trained
# from scratch, so any fixed affine map would do; these keep activations O(1)).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# Defaults (mirrored by DescriptorConfig.dim / .cnn_channels).
DEFAULT_DIM = 32
DEFAULT_CHANNELS = (32, 32, 64, 64, 128, 128, 128)
#: Dilation of each 3x3 convolution (padding = dilation keeps every layer centred).
#: The last three, at 1/4 resolution, are dilated 2, 4, 8: the receptive field grows
#: from 40 to 128 input pixels at the same cost and output stride (see
#: :func:`receptive_field`). Measured on the procedural scene, whose surfaces carry
#: blobs ~100 px across at 640x480: with 40 px most cells see a flat patch.
DEFAULT_DILATIONS = (1, 1, 1, 1, 2, 4, 8)
#: 1-based indices of the 3x3 convolutions followed by a 2x2 max-pool.
POOL_AFTER = (2, 4)
#: Input pixels per descriptor cell along each axis.
STRIDE = 4


def receptive_field(dilations: tuple[int, ...] = DEFAULT_DILATIONS) -> int:
    """Receptive field (input pixels along each axis) of one descriptor cell: 40 without
    dilation, 128 with the default dilations."""
    rf, jump = 1, 1
    for k, d in enumerate(dilations, start=1):
        rf += 2 * d * jump
        if k in POOL_AFTER:
            rf += jump
            jump *= 2
    return rf


#: Receptive field of one descriptor cell with the default dilations, input pixels.
RECEPTIVE_FIELD = receptive_field(DEFAULT_DILATIONS)


class FeatureExtractor(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] -> unit descriptors (B, dim, H/4, W/4).

    H and W must be divisible by 4. See the module docstring for which input pixels
    each output cell stands for (:func:`descriptor_grid_pixels`).

    CPU inference: ``net.to(memory_format=torch.channels_last)`` with a channels-last
    input is ~1.6x faster at 640x480 than the default layout (same outputs).
    """

    def __init__(
        self,
        dim: int = DEFAULT_DIM,
        channels: tuple[int, ...] = DEFAULT_CHANNELS,
        dilations: tuple[int, ...] = DEFAULT_DILATIONS,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        dilations = tuple(int(d) for d in dilations)
        if len(channels) != 7:
            raise ValueError(f"FeatureExtractor needs 7 conv widths (8 layers with the 1x1 head), got {channels}")
        if len(dilations) != 7 or min(dilations) < 1:
            raise ValueError(f"FeatureExtractor needs 7 dilations >= 1 (one per 3x3 conv), got {dilations}")
        self.dim = int(dim)
        self.receptive_field = receptive_field(dilations)
        layers: list[nn.Module] = []
        c_in = 3
        for k, (c, d) in enumerate(zip(channels, dilations), start=1):
            layers += [nn.Conv2d(c_in, c, kernel_size=3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            if k in POOL_AFTER:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            c_in = c
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, self.dim, kernel_size=1)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: DescriptorConfig) -> FeatureExtractor:
        return cls(dim=cfg.dim, channels=tuple(cfg.cnn_channels), dilations=tuple(cfg.cnn_dilations))

    def forward(self, image: torch.Tensor, backbone_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Unit descriptors (B, dim, H/4, W/4), float32.

        ``backbone_dtype=torch.bfloat16``: the 3x3 convolutions run in bfloat16
        (autocast), the 1x1 head and the normalization in float32. A bfloat16 head would
        round the descriptors themselves to 8 significant bits before normalization;
        kept in float32 it costs ~1% of the network and the descriptors stay as precise
        as the backbone's features allow. (The first convolution in float32 as well
        lowers the p99 deviation from the float32 descriptors, 0.85 -> 0.32 deg on fox,
        but costs ~12 ms at 640x480 and measured no more accurate over 4 RANSAC seeds on
        three maps: NOTES.md.) Without autograd on the CPU each convolution and its ReLU
        run as one oneDNN call (:func:`~neural_reloc.methods.common.cnn_inference.run_trunk`:
        the same outputs, ~30% faster).
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"FeatureExtractor expects RGB (B, 3, H, W), got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(
                f"FeatureExtractor input {w}x{h} (WxH): width and height must be divisible by {STRIDE} "
                f"so that the output is exactly {STRIDE}x smaller; resize the camera (Camera.resized) first"
            )
        x = (image - self.mean) / self.std
        x = run_trunk(self.backbone, x, backbone_dtype or torch.float32).float()
        return F.normalize(self.head(x), dim=1)


def descriptor_grid_pixels(h4: int, w4: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Input-image pixel coordinates (u, v) of the centres of an (h4, w4) descriptor map.

    Returns (h4, w4, 2) with ``[i, j] = (4j + 2, 4i + 2)`` in the project's pixel
    convention (pixel k's centre at k + 0.5): cell (i, j) covers input pixels
    [4j, 4j + 4) x [4i, 4i + 4). Same values, same order as
    ``Camera.pixel_centers(stride=4)`` for the CNN input camera.
    """
    us = torch.arange(w4, device=device, dtype=dtype) * STRIDE + STRIDE / 2.0
    vs = torch.arange(h4, device=device, dtype=dtype) * STRIDE + STRIDE / 2.0
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def flatten_descriptor_map(fmap: torch.Tensor) -> torch.Tensor:
    """(1, D, h, w) or (D, h, w) descriptor map -> (h * w, D) rows in row-major order,
    the order of ``descriptor_grid_pixels(h, w).reshape(-1, 2)`` and of rays rendered
    from ``Camera.pixel_centers(stride=4)``."""
    if fmap.dim() == 4:
        if fmap.shape[0] != 1:
            raise ValueError(f"flatten_descriptor_map takes one map, got batch {fmap.shape[0]}")
        fmap = fmap[0]
    if fmap.dim() != 3:
        raise ValueError(f"expected (D, h, w), got {tuple(fmap.shape)}")
    return fmap.flatten(1).transpose(0, 1)
