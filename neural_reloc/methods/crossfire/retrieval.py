"""Retrieval prior from the map alone: global descriptors of rendered reference views.

No downloaded weights: the global descriptor of an image is a spatial pyramid of mean-
pooled descriptors of our own CROSSFIRE CNN (levels 1x1 and 2x2, each cell mean
re-normalized, concatenated, L2-normalized), computed on reference views *rendered*
from the neural map at build time — so the map bundle alone suffices to localize
without a prior, as NeRFMatch's "NeRF-only" mode. The paper takes DenseVLAD's top 1 as
the prior; the relocalizer tries the top k (``localization.retrieval_top_k``).

Besides the mapping poses, the index holds views rendered where no mapping camera
looked: each mapping pose panned left and right about the camera's own vertical axis
(``localization.retrieval_extra_yaw_deg``), so that a query looking elsewhere than the
mapping walk did still finds a view that looks like it. Each row of the index keeps its
pose (OpenCV world-to-camera) and the mapping view it came from.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..common.retrieval import RetrievalIndex, global_descriptor, index_poses
from .config import LocalizationConfig

def retrieval_input(image_rgb: np.ndarray, long_side: int, device) -> torch.Tensor:
    """The CNN input for retrieval: the image resized to ``4 * long_side`` on its long
    side (both sides multiples of 4), as (1, 3, H, W) in [0, 1]."""
    h, w = image_rgb.shape[:2]
    s = 4 * long_side / max(h, w)
    W, H = max(4, int(round(w * s / 4)) * 4), max(4, int(round(h * s / 4)) * 4)
    img = cv2.resize(image_rgb, (W, H), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).to(device).permute(2, 0, 1)[None].float() / 255.0


@torch.no_grad()
def render_keyframe(model, head: str, camera, c2w_opengl: np.ndarray, cfg: LocalizationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit descriptors (B, D) and world points (B, 3) rendered at the centres of the
    ``keyframe_stride`` blocks of ``camera``'s descriptor-map camera (zero descriptors
    where the render is transparent)."""
    cam_desc = camera.fit_within(cfg.match_long_side, cfg.match_short_side)
    uv = cam_desc.pixel_centers(stride=cfg.keyframe_stride).reshape(-1, 2)
    out = model.render_view(
        cam_desc, c2w_opengl, (head, "points", "accumulation"), pixels_uv=uv, num_fine=cfg.render_samples,
        head_samples=cfg.render_head_samples or None, num_coarse=cfg.render_coarse_samples or None,
    )
    desc = F.normalize(torch.from_numpy(out[head]), dim=-1)
    desc[torch.from_numpy(out["accumulation"]) <= cfg.min_accumulation] = 0.0
    return desc, torch.from_numpy(out["points"])


@torch.no_grad()
def build_retrieval_index(
    model, cnn, data, cfg: LocalizationConfig, progress: Callable | None = None, descriptor_head: str | None = None
) -> RetrievalIndex:
    """Render the index's views (:func:`~..common.retrieval.index_poses`: every reference
    view of ``data``, poses between sparse ones, each panned by ``cfg.retrieval_extra_yaw_deg``;
    mean appearance) and index them; with ``descriptor_head`` (and
    ``cfg.keyframe_stride`` > 0) each with its keyframe (:func:`render_keyframe`)."""
    from ...geometry.frames import opencv_w2c_from_opengl_c2w

    was_cnn, was_model = cnn.training, model.training
    cnn.eval()
    model.eval()
    views = index_poses(data.c2w_opengl, cfg, float(model.scene.extent))
    rows, poses, refs, kf_desc, kf_points = [], [], [], [], []
    keyframes = descriptor_head is not None and cfg.keyframe_stride > 0
    it = views if progress is None else progress(views, desc="retrieval index")
    for c2w_opengl, i in it:
        cam = data.camera(i)
        x = retrieval_input(np.zeros((cam.height, cam.width, 3), np.uint8), cfg.retrieval_long_side, model.device)
        cam_r = cam.resized(x.shape[-1], x.shape[-2])
        rgb = model.render_view(cam_r, c2w_opengl, ("rgb",), num_fine=cfg.render_samples)["rgb"]
        x = torch.from_numpy(np.clip(rgb, 0, 1)).to(model.device).permute(2, 0, 1)[None].float()
        rows.append(global_descriptor(cnn(x)))
        poses.append(opencv_w2c_from_opengl_c2w(c2w_opengl))
        refs.append(i)
        if keyframes:
            d, p = render_keyframe(model, descriptor_head, cam, c2w_opengl, cfg)
            kf_desc.append(d)
            kf_points.append(p)
    cnn.train(was_cnn)
    model.train(was_model)
    return RetrievalIndex.from_views(rows, poses, refs, kf_desc, kf_points)
