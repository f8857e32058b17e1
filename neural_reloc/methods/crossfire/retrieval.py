"""Retrieval prior from the map alone: global descriptors of rendered reference views.

No downloaded weights: the global descriptor of an image is a spatial pyramid of mean-
pooled descriptors of our own CROSSFIRE CNN (levels 1x1 and 2x2, each cell mean
re-normalized, concatenated, L2-normalized), computed on reference views *rendered*
from the neural map at build time — so the map bundle alone suffices to localize
without a prior, as NeRFMatch's "NeRF-only" mode. The top-1 reference pose is the prior
(as the paper uses DenseVLAD's top 1).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import LocalizationConfig

#: Spatial pyramid levels (cells per side) of the global descriptor.
PYRAMID_LEVELS = (1, 2)


def global_descriptor(fmap: torch.Tensor) -> torch.Tensor:
    """(1, D, h, w) unit descriptor map -> (D * sum(l^2),) unit global descriptor."""
    parts = []
    for level in PYRAMID_LEVELS:
        pooled = F.adaptive_avg_pool2d(fmap, level)  # (1, D, l, l)
        parts.append(F.normalize(pooled, dim=1).flatten())
    return F.normalize(torch.cat(parts), dim=0)


def retrieval_input(image_rgb: np.ndarray, long_side: int, device) -> torch.Tensor:
    """The CNN input for retrieval: the image resized to ``4 * long_side`` on its long
    side (both sides multiples of 4), as (1, 3, H, W) in [0, 1]."""
    h, w = image_rgb.shape[:2]
    s = 4 * long_side / max(h, w)
    W, H = max(4, int(round(w * s / 4)) * 4), max(4, int(round(h * s / 4)) * 4)
    img = cv2.resize(image_rgb, (W, H), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).to(device).permute(2, 0, 1)[None].float() / 255.0


class RetrievalIndex(nn.Module):
    """Global descriptors (N, K) of the map's reference views, stored in the bundle."""

    def __init__(self, num_views: int = 0, dim: int = 0):
        super().__init__()
        self.register_buffer("descriptors", torch.zeros(num_views, dim))

    @torch.no_grad()
    def query(self, g: torch.Tensor, top_k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosine scores of the ``top_k`` most similar reference views."""
        if self.descriptors.shape[0] == 0:
            raise ValueError("the map's retrieval index is empty")
        sims = self.descriptors.to(g.dtype) @ g
        k = min(top_k, sims.numel())
        s, i = torch.topk(sims, k)
        return i.cpu().numpy(), s.cpu().numpy()


@torch.no_grad()
def build_retrieval_index(
    model, cnn, data, cfg: LocalizationConfig, progress: Callable | None = None
) -> RetrievalIndex:
    """Render every reference view of ``data`` (mean appearance) and index it."""
    was_cnn, was_model = cnn.training, model.training
    cnn.eval()
    model.eval()
    rows = []
    it = range(len(data)) if progress is None else progress(range(len(data)), desc="retrieval index")
    for i in it:
        cam = data.camera(i)
        x = retrieval_input(np.zeros((cam.height, cam.width, 3), np.uint8), cfg.retrieval_long_side, model.device)
        cam_r = cam.resized(x.shape[-1], x.shape[-2])
        rgb = model.render_view(cam_r, data.c2w_opengl[i], ("rgb",), num_fine=cfg.render_samples)["rgb"]
        x = torch.from_numpy(np.clip(rgb, 0, 1)).to(model.device).permute(2, 0, 1)[None].float()
        rows.append(global_descriptor(cnn(x)))
    cnn.train(was_cnn)
    model.train(was_model)
    index = RetrievalIndex(len(rows), rows[0].numel())
    index.descriptors.copy_(torch.stack(rows))
    return index
