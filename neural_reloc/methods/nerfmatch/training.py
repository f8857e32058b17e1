"""Training NeRFMatch-Mini on the map's own training views (its field frozen).

1. **Cache** (once): every training view's image at the encoder's size and, rendered
   from the field at the view's pose and at ``jitter_renders`` jittered poses, the NeRF
   features and 3D points at the patch centres (:func:`render_nerf_features`).
2. **Pairs**: a query is a training image; its reference is one of the cached renders of
   its ``reference_neighbors`` nearest training views (itself included), so the matcher
   learns the gap between a retrieved reference and the query.
3. **Ground truth** (paper Sec. 4.3): the reference's points projected into the query with
   its true pose; a point is associated with the query cell it falls in when it is in
   front, inside the image, opaque, and agrees with the query's own rendered depth there
   (visibility). **Loss**: L_c (eq. 3) on the dual-softmax scores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch

from ...geometry.frames import opencv_w2c_from_opengl_c2w
from ...geometry.se3 import invert_pose, perturb_pose
from .config import NerfMatchConfig
from .encoder import STRIDE, ImageEncoder, NerfFeatureProjection
from .matcher import coarse_loss, dual_softmax, mutual_matches
from .nerf_features import RenderedPoints, encoder_camera, render_nerf_features


@dataclass
class CachedView:
    image: torch.Tensor  # (3, H, W) float in [0, 1] at the encoder's size
    camera: object  # its encoder camera
    w2c_opencv: np.ndarray
    depth: np.ndarray  # (N_m,) rendered depth at its own patch centres (z in its camera)
    opaque: np.ndarray  # (N_m,) bool
    renders: list[RenderedPoints]  # at its pose, then jittered


def cache_views(model, data, cfg: NerfMatchConfig, extent: float, progress: Callable | None = None) -> list[CachedView]:
    t, lc = cfg.train, cfg.localization
    rng = np.random.default_rng(t.seed)
    views = []
    it = range(len(data)) if progress is None else progress(range(len(data)), desc="nerfmatch: rendering references")
    for i in it:
        cam = encoder_camera(data.camera(i), t.image_long_side)
        img = cv2.resize(data.image(i), (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        w2c = opencv_w2c_from_opengl_c2w(data.c2w_opengl[i])
        poses = [w2c] + [
            invert_pose(perturb_pose(invert_pose(w2c), t.jitter_translation_rel * extent, t.jitter_rotation_deg, rng))
            for _ in range(t.jitter_renders)
        ]
        renders = [render_nerf_features(model, cam, p, cfg.features.layer, num_fine=lc.render_samples,
                                        num_coarse=lc.render_coarse_samples or None) for p in poses]
        own = renders[0]
        pts_cam = own.points.double().numpy() @ w2c[:3, :3].T + w2c[:3, 3]
        views.append(CachedView(
            torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, cam, w2c, pts_cam[:, 2],
            own.accumulation.numpy() > lc.min_accumulation, renders,
        ))
    return views


def ground_truth(query: CachedView, ref: RenderedPoints, min_accumulation: float, depth_rel: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(query cell, reference point) index pairs: the reference's visible points and the
    query patch each falls in (Sec. 4.3)."""
    cam = query.camera
    pts = ref.points.double().numpy()
    p_cam = pts @ query.w2c_opencv[:3, :3].T + query.w2c_opencv[:3, 3]
    uv, in_front = cam.project(p_cam)
    gw, gh = cam.width // STRIDE, cam.height // STRIDE
    col, row = np.floor(uv[:, 0] / STRIDE).astype(int), np.floor(uv[:, 1] / STRIDE).astype(int)
    ok = in_front & (ref.accumulation.numpy() > min_accumulation) & (col >= 0) & (col < gw) & (row >= 0) & (row < gh)
    cell = np.where(ok, row * gw + col, 0)
    z_q = query.depth[cell]
    ok &= query.opaque[cell] & (np.abs(p_cam[:, 2] - z_q) <= depth_rel * np.maximum(z_q, 1e-6))
    j = np.nonzero(ok)[0]
    return cell[j], j


def neighbours(data, k: int) -> list[np.ndarray]:
    """Each training view's k nearest training views by camera centre (itself first)."""
    centers = np.stack([T[:3, 3] for T in data.c2w_opengl])
    d = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    return [np.argsort(row, kind="stable")[: max(1, k)] for row in d]


def train_matcher(encoder: ImageEncoder, projection: NerfFeatureProjection, views: list[CachedView], data,
                  cfg: NerfMatchConfig, device, progress: Callable | None = None, log: Callable[[str], None] = print
                  ) -> dict:
    """Adam on L_c over random (query, reference) pairs; returns a summary (loss, the
    fraction of correct mutual matches on the last 50 pairs, steps, seconds)."""
    t, lc = cfg.train, cfg.localization
    gen = torch.Generator().manual_seed(t.seed)
    rng = np.random.default_rng(t.seed + 1)
    nbrs = neighbours(data, t.reference_neighbors)
    params = list(encoder.parameters()) + list(projection.parameters())
    opt = torch.optim.Adam(params, lr=t.lr)
    encoder.train()
    projection.train()
    t0 = time.perf_counter()
    losses, precision = [], []
    steps = range(t.steps) if progress is None else progress(range(t.steps), desc="nerfmatch: training the matcher")
    done = 0
    for step in steps:
        for g in opt.param_groups:
            g["lr"] = t.lr * (t.lr_decay if step >= t.decay_at_fraction * t.steps else 1.0)
        q = int(rng.integers(len(views)))
        r_view = views[int(rng.choice(nbrs[q]))]
        ref = r_view.renders[int(rng.integers(len(r_view.renders)))]
        cells, pts = ground_truth(views[q], ref, lc.min_accumulation, t.visibility_depth_rel)
        if len(cells) < 8:
            continue
        img = views[q].image
        if t.photometric_jitter > 0:
            gain = 1.0 + (torch.rand(1, generator=gen).item() * 2 - 1) * t.photometric_jitter
            bias = (torch.rand(1, generator=gen).item() * 2 - 1) * t.photometric_jitter * 0.5
            img = (img * gain + bias).clamp(0, 1)
        fmap = encoder(img[None].to(device))[0]
        image_feats = fmap.flatten(1).T
        nerf_feats = projection(ref.features.to(device))
        scores = dual_softmax(image_feats, nerf_feats, cfg.matcher.temperature)
        gc, gp = torch.from_numpy(cells).to(device), torch.from_numpy(pts).to(device)
        loss = coarse_loss(scores, gc, gp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        with torch.no_grad():
            ic, ip, _ = mutual_matches(scores.detach(), lc.min_score)
            truth = dict(zip(pts.tolist(), cells.tolist()))
            hits = sum(truth.get(p) == c for c, p in zip(ic.tolist(), ip.tolist()))
            precision.append(hits / max(1, len(ic)))
        done = step + 1
        if hasattr(steps, "set_postfix") and step % 10 == 0:
            steps.set_postfix(loss=f"{np.mean(losses[-20:]):.2f}", prec=f"{np.mean(precision[-20:]):.2f}", refresh=False)
        if t.time_budget_s and time.perf_counter() - t0 > t.time_budget_s:
            log(f"nerfmatch: time budget {t.time_budget_s:.0f} s reached at step {done}")
            break
    encoder.eval()
    projection.eval()
    summary = {"steps": done, "train_s": round(time.perf_counter() - t0, 1),
               "final_loss": float(np.mean(losses[-50:])) if losses else math.nan,
               "final_match_precision": float(np.mean(precision[-50:])) if precision else math.nan}
    log(f"nerfmatch: matcher trained ({summary})")
    return summary


__all__ = ["CachedView", "cache_views", "ground_truth", "neighbours", "train_matcher"]
