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
   (visibility). **Loss**: L_c (eq. 3) on the dual-softmax scores; the full variant
   (``matcher.variant: full``) adds ``fine_weight`` * L_f (eq. 4) of its fine stage on
   the coarse matches whose point's true projection falls in their window
   (:func:`full_pair_loss`).
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
from .coarse_matcher import CoarseMatcher
from .config import NerfMatchConfig
from .encoder import FINE_STRIDE, STRIDE, ImageEncoder, NerfFeatureProjection
from .fine_matcher import FineMatcher, cell_centres, fine_loss
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


def visible_projections(query: CachedView, ref: RenderedPoints, min_accumulation: float, depth_rel: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's points visible in the query (Sec. 4.3): (query cell, reference
    point) index pairs and each point's projection (K, 2) in the query's pixels, with its
    true pose."""
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
    return cell[j], j, uv[j]


def ground_truth(query: CachedView, ref: RenderedPoints, min_accumulation: float, depth_rel: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(query cell, reference point) index pairs: the reference's visible points and the
    query patch each falls in (Sec. 4.3)."""
    cells, j, _ = visible_projections(query, ref, min_accumulation, depth_rel)
    return cells, j


@dataclass
class PairLoss:
    """The full variant's loss on one (query, reference) pair, its parts, the detached
    dual-softmax scores, and per fine-supervised match the fine stage's error and the
    cell centre's (pixels)."""

    loss: torch.Tensor
    coarse: float
    fine: float
    scores: torch.Tensor
    fine_error_px: np.ndarray
    centre_error_px: np.ndarray


def full_pair_loss(coarse_map: torch.Tensor, fine_map: torch.Tensor, nerf_features: torch.Tensor,
                   unit_points: torch.Tensor, gt_cells: torch.Tensor, gt_points: torch.Tensor, gt_uv: torch.Tensor,
                   coarse: CoarseMatcher, fine: FineMatcher, cfg: NerfMatchConfig,
                   generator: torch.Generator | None = None) -> PairLoss:
    """L_c + fine_weight * L_f of the full variant on one pair: the query's coarse map
    (D_c, h, w) and fine map (D_f, 4h, 4w), the reference's projected NeRF features (N,
    D_c) and points in the field's domain (N, 3), and the ground truth (cells, points,
    the points' projections (K, 2) in pixels). L_f is over the ground-truth associations
    and the predicted mutual matches whose point's projection falls in their window (at
    most ``train.fine_matches``, a random subset)."""
    m, t = cfg.matcher, cfg.train
    img_t, nerf_t = coarse(coarse_map, nerf_features, unit_points)
    scores = dual_softmax(img_t, nerf_t, m.temperature)
    l_c = coarse_loss(scores, gt_cells, gt_points)
    pred_cells, pred_points, _ = mutual_matches(scores.detach(), cfg.localization.min_score)
    uv_of_point = torch.full((len(nerf_features), 2), float("nan"), device=gt_uv.device)
    uv_of_point[gt_points] = gt_uv
    cells, points = torch.cat([gt_cells, pred_cells]), torch.cat([gt_points, pred_points])
    centres = cell_centres(cells, coarse_map.shape[-1])
    uv = uv_of_point[points]
    offset_gt = (uv - centres) / FINE_STRIDE
    inside = torch.isfinite(offset_gt).all(-1) & (offset_gt.abs() <= m.window // 2).all(-1)
    keep = inside.nonzero().squeeze(-1)
    if len(keep) > t.fine_matches:
        keep = keep[torch.randperm(len(keep), generator=generator)[: t.fine_matches].to(keep.device)]
    out = fine(fine_map, centres[keep], nerf_t[points[keep]])
    l_f = fine_loss(out.offset, out.variance, offset_gt[keep], m.window)
    with torch.no_grad():
        err = (out.uv - uv[keep]).norm(dim=-1).cpu().numpy()
        centre_err = (centres[keep] - uv[keep]).norm(dim=-1).cpu().numpy()
    return PairLoss(l_c + t.fine_weight * l_f, float(l_c.detach()), float(l_f.detach()), scores.detach(), err,
                    centre_err)


def neighbours(data, k: int) -> list[np.ndarray]:
    """Each training view's k nearest training views by camera centre (itself first)."""
    centers = np.stack([T[:3, 3] for T in data.c2w_opengl])
    d = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    return [np.argsort(row, kind="stable")[: max(1, k)] for row in d]


def train_matcher(encoder: ImageEncoder, projection: NerfFeatureProjection, views: list[CachedView], data,
                  cfg: NerfMatchConfig, device, progress: Callable | None = None, log: Callable[[str], None] = print,
                  coarse: CoarseMatcher | None = None, fine: FineMatcher | None = None) -> dict:
    """Adam on L_c (the full variant: L_c + fine_weight * L_f, with its ``coarse`` and
    ``fine`` matchers) over random (query, reference) pairs; returns a summary: the loss,
    the fraction of correct mutual matches, for the full variant L_c, L_f and the mean
    error (pixels of the encoder camera) of the fine positions and of the cell centres
    at the fine-supervised matches (each over the last 50 pairs), steps, seconds."""
    t, lc = cfg.train, cfg.localization
    full = cfg.matcher.variant == "full"
    if full and (coarse is None or fine is None or not encoder.fine):
        raise ValueError("matcher.variant=full trains a fine encoder, a coarse and a fine matcher")
    gen = torch.Generator().manual_seed(t.seed)
    rng = np.random.default_rng(t.seed + 1)
    nbrs = neighbours(data, t.reference_neighbors)
    modules = [encoder, projection] + ([coarse, fine] if full else [])
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=t.lr)
    for m in modules:
        m.train()
    t0 = time.perf_counter()
    losses, precision, parts, fine_err, centre_err = [], [], [], [], []
    steps = range(t.steps) if progress is None else progress(range(t.steps), desc="nerfmatch: training the matcher")
    done = 0
    for step in steps:
        for g in opt.param_groups:
            g["lr"] = t.lr * (t.lr_decay if step >= t.decay_at_fraction * t.steps else 1.0)
        q = int(rng.integers(len(views)))
        r_view = views[int(rng.choice(nbrs[q]))]
        ref = r_view.renders[int(rng.integers(len(r_view.renders)))]
        cells, pts, uv = visible_projections(views[q], ref, lc.min_accumulation, t.visibility_depth_rel)
        if len(cells) < 8:
            continue
        img = views[q].image
        if t.photometric_jitter > 0:
            gain = 1.0 + (torch.rand(1, generator=gen).item() * 2 - 1) * t.photometric_jitter
            bias = (torch.rand(1, generator=gen).item() * 2 - 1) * t.photometric_jitter * 0.5
            img = (img * gain + bias).clamp(0, 1)
        nerf_feats = projection(ref.features.to(device))
        gc, gp = torch.from_numpy(cells).to(device), torch.from_numpy(pts).to(device)
        if full:
            coarse_map, fine_map = encoder.pyramid(img[None].to(device))
            out = full_pair_loss(coarse_map[0], fine_map[0], nerf_feats, ref.unit_points.to(device), gc, gp,
                                 torch.from_numpy(uv).float().to(device), coarse, fine, cfg, gen)
            loss, scores = out.loss, out.scores
            parts.append((out.coarse, out.fine))
            fine_err.append(float(out.fine_error_px.mean()) if len(out.fine_error_px) else math.nan)
            centre_err.append(float(out.centre_error_px.mean()) if len(out.centre_error_px) else math.nan)
        else:
            fmap = encoder(img[None].to(device))[0]
            scores = dual_softmax(fmap.flatten(1).T, nerf_feats, cfg.matcher.temperature)
            loss = coarse_loss(scores, gc, gp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        with torch.no_grad():
            ic, ip, _ = mutual_matches(scores.detach(), lc.min_score)
            truth = dict(zip(pts.tolist(), cells.tolist()))
            hits = sum(truth.get(p) == c for c, p in zip(ic.tolist(), ip.tolist()))
            precision.append(hits / max(1, len(ic)))
        done = step + 1
        if hasattr(steps, "set_postfix") and step % 10 == 0:
            post = {"loss": f"{np.mean(losses[-20:]):.2f}", "prec": f"{np.mean(precision[-20:]):.2f}"}
            if full:
                post["fine_px"] = f"{np.nanmean(fine_err[-20:]):.2f}"
            steps.set_postfix(**post, refresh=False)
        if t.time_budget_s and time.perf_counter() - t0 > t.time_budget_s:
            log(f"nerfmatch: time budget {t.time_budget_s:.0f} s reached at step {done}")
            break
    for m in modules:
        m.eval()
    last = slice(-50, None)
    summary = {"steps": done, "train_s": round(time.perf_counter() - t0, 1),
               "final_loss": float(np.mean(losses[last])) if losses else math.nan,
               "final_match_precision": float(np.mean(precision[last])) if precision else math.nan}
    if full:
        summary["variant"] = "full"
        summary["final_coarse_loss"] = float(np.mean([c for c, _ in parts[last]])) if parts else math.nan
        summary["final_fine_loss"] = float(np.mean([f for _, f in parts[last]])) if parts else math.nan
        summary["final_fine_error_px"] = _nanmean(fine_err[last])
        summary["final_centre_error_px"] = _nanmean(centre_err[last])
    log(f"nerfmatch: matcher trained ({summary})")
    return summary


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


__all__ = ["CachedView", "PairLoss", "cache_views", "full_pair_loss", "ground_truth", "neighbours", "train_matcher",
           "visible_projections"]
