"""Staged descriptor training of CROSSFIRE on a trained neural map (our default schedule).

Why staged (measured on the procedural scene, NOTES.md "CROSSFIRE descriptors"): the
paper trains the CNN and the descriptor field jointly for 100k GPU steps. With one
view (or crop) per step on a CPU budget neither side learns: each surface point is
seen too rarely for the field to memorize a descriptor, so the CNN gets no consistent
target (0-1% correct matches at the true pose after 1500 steps, with the paper's loss
or an InfoNCE loss alike). Splitting the problem makes both halves well posed:

1. :func:`cache_surface_samples` renders every training view once at the
   descriptor-map resolution and keeps each ray's ``k`` heaviest samples (position and
   weight, re-normalized to the ray's opacity) and its surface point. The field is
   frozen from here on (descriptor gradients never reshape it by default anyway), so a
   descriptor is then a cheap weighted sum of the head over k cached points.
2. :func:`train_cnn_on_correspondences`: the CNN learns view-invariant, discriminative
   descriptors from pairs of nearby training views whose pixel correspondences come
   from the map's own depth (self-supervised, no labels), with an InfoNCE loss over the
   correspondences of a crop; points closer than the L_neg zero-similarity distance are
   not negatives (the same tolerance t_lambda encodes).
3. :func:`distill_descriptor_field`: the descriptor head learns the frozen CNN's
   descriptors with the paper's own L_pos + L_neg (eqs. 1-2) over random pixels of all
   training views per step, so negatives span the whole scene.

``CrossfireTrainConfig.schedule = "joint"`` keeps the paper's joint training instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...geometry.camera import Camera
from ...nerf.neural_map import heaviest_samples
from .config import CrossfireConfig, CrossfireTrainConfig
from .feature_extractor import STRIDE, FeatureExtractor, flatten_descriptor_map
from .losses import l_neg, l_pos, neg_lambda, random_permutations

#: Rays per chunk when caching surface samples.
CACHE_CHUNK = 8192


def descriptor_lr_factor(
    t: CrossfireTrainConfig, step: int, total_steps: int, elapsed_s: float = 0.0, budget_s: float = 0.0
) -> float:
    """The paper's schedule scaled to the stage: 1, then ``lr_decay`` from
    ``decay_at_fraction`` of its steps (or of its time budget) on."""
    decayed = step >= t.decay_at_fraction * total_steps or (budget_s > 0 and elapsed_s >= t.decay_at_fraction * budget_s)
    return t.lr_decay if decayed else 1.0


def _tail_means(hist: list[tuple[float, float]], n: int = 50) -> tuple[float, float]:
    """Mean of the last ``n`` logged (a, b) pairs (NaN when nothing was logged)."""
    if not hist:
        return float("nan"), float("nan")
    a, b = np.asarray(hist[-n:]).mean(0)
    return float(a), float(b)


@dataclass
class SurfaceSamples:
    """Per training view, at the descriptor-map resolution (H, W):"""

    camera: Camera  # descriptor-map camera
    w2c_opencv: np.ndarray  # (4, 4) world -> camera, OpenCV axes
    image: torch.Tensor  # (3, 4H, 4W) CNN-scale RGB in [0, 1]
    x01: torch.Tensor  # (H, W, k, 3) the k heaviest samples, unit-cube coordinates
    weights: torch.Tensor  # (H, W, k) their weights, summing to the ray's opacity
    points: torch.Tensor  # (H, W, 3) expected surface point, world
    opacity: torch.Tensor  # (H, W) accumulated opacity


@torch.no_grad()
def cache_surface_samples(model, views, k: int, progress: Callable | None = None) -> list[SurfaceSamples]:
    """Render each view of ``views`` (an iterable of (descriptor camera, c2w_opengl,
    w2c_opencv, CNN-scale image)) once and keep its surface samples."""
    model.eval()
    out_views = []
    items = list(views)
    it = progress(items, desc="caching surface samples") if progress else items
    for cam, c2w_opengl, w2c_opencv, image in it:
        uv = cam.pixel_centers().reshape(-1, 2)
        xs, ws, ps, accs = [], [], [], []
        for s in range(0, uv.shape[0], CACHE_CHUNK):
            rays = model.rays_for_view(cam, c2w_opengl, pixels_uv=uv[s : s + CACHE_CHUNK])
            out = model.render_rays(rays, ("points", "accumulation"))
            acc = out["accumulation"]
            idx, w = heaviest_samples(out["weights"], acc, min(k, out["weights"].shape[1]))
            t = out["t_mid"].gather(1, idx)
            x = rays.origins[:, None] + rays.dirs[:, None] * t[..., None]
            xs.append(model.scene.to_unit(x.reshape(-1, 3)).reshape(-1, idx.shape[1], 3))
            ws.append(w)
            ps.append(out["points"])
            accs.append(acc)
        h, wd = cam.height, cam.width
        out_views.append(
            SurfaceSamples(
                camera=cam,
                w2c_opencv=np.asarray(w2c_opencv, dtype=np.float64),
                image=image.to(model.device),
                x01=torch.cat(xs).view(h, wd, -1, 3),
                weights=torch.cat(ws).view(h, wd, -1),
                points=torch.cat(ps).view(h, wd, 3),
                opacity=torch.cat(accs).view(h, wd),
            )
        )
    return out_views


def render_head_from_samples(model, head_name: str, x01: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Volume-rendered head output (N, D) from cached samples x01 (N, k, 3), weights
    (N, k): sum_i w_i head(features(x_i)), the field's features computed frozen."""
    n, k, _ = x01.shape
    with torch.no_grad():
        geo = model.field.geometry(x01.reshape(-1, 3))
    values = model.field.head_outputs(geo, [head_name])[head_name]
    return (values.view(n, k, -1) * weights[..., None]).sum(1)


def _randint(n: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, n, (1,), generator=gen, device=gen.device))


def _crop(h: int, w: int, long_side: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    s = min(1.0, long_side / max(h, w))
    cw, ch = min(w, max(8, int(round(w * s)))), min(h, max(8, int(round(h * s))))
    return _randint(w - cw + 1, gen), _randint(h - ch + 1, gen), cw, ch


def _pair_candidates(views: list[SurfaceSamples], n: int) -> list[np.ndarray]:
    """For each view, the ``n`` other views closest in position and viewing direction."""
    c2w_opencv = [np.linalg.inv(v.w2c_opencv) for v in views]
    centres = np.stack([c[:3, 3] for c in c2w_opencv])
    fwd = np.stack([c[:3, 2] for c in c2w_opencv])  # OpenCV +z = viewing direction
    scale = max(1e-9, float(np.median(np.linalg.norm(centres - centres.mean(0), axis=1))))
    out = []
    for i in range(len(views)):
        score = np.linalg.norm(centres - centres[i], axis=1) / scale + 2.0 * (1.0 - fwd @ fwd[i])
        score[i] = np.inf
        out.append(np.argsort(score)[: max(1, min(n, len(views) - 1))])
    return out


def info_nce(fa: torch.Tensor, fb: torch.Tensor, xyz: torch.Tensor, temperature: float, min_negative_distance: float) -> torch.Tensor:
    """Symmetric InfoNCE of unit descriptors fa[i] <-> fb[i] (N, D); pairs whose 3D
    points are closer than ``min_negative_distance`` are not used as negatives."""
    sim = fa @ fb.T / temperature
    near = torch.cdist(xyz, xyz) < min_negative_distance
    near.fill_diagonal_(False)
    sim = sim.masked_fill(near, float("-inf"))
    lab = torch.arange(fa.shape[0], device=fa.device)
    return 0.5 * (F.cross_entropy(sim, lab) + F.cross_entropy(sim.T, lab))


def train_cnn_on_correspondences(
    cnn: FeatureExtractor,
    views: list[SurfaceSamples],
    cfg: CrossfireConfig,
    scene_extent: float,
    generator: torch.Generator,
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Stage 2 (module docstring). Returns a summary {steps, seconds, final_loss,
    final_accuracy} (accuracy: top-1 correspondence within a crop)."""
    t = cfg.train
    device = views[0].x01.device
    opt = torch.optim.Adam(cnn.parameters(), lr=t.lr_descriptor)
    partners = _pair_candidates(views, t.cnn_pair_candidates)
    max_dist = t.correspondence_max_distance_rel * scene_extent
    min_neg = 1.0 / neg_lambda(cfg.loss, scene_extent)
    cnn.train()
    t0 = time.perf_counter()
    hist: list[tuple[float, float]] = []
    steps = range(t.cnn_steps)
    steps_done = t.cnn_steps
    bar = progress(steps, desc="CNN on correspondences") if progress else steps
    for step in bar:
        elapsed = time.perf_counter() - t0
        if t.cnn_time_budget_s and elapsed > t.cnn_time_budget_s:
            log(f"CNN on correspondences: time budget {t.cnn_time_budget_s:.0f}s reached at step {step}")
            steps_done = step
            break
        for g in opt.param_groups:
            g["lr"] = t.lr_descriptor * descriptor_lr_factor(t, step, t.cnn_steps, elapsed, t.cnn_time_budget_s)
        i = _randint(len(views), generator)
        cand = partners[i]
        j = int(cand[_randint(len(cand), generator)])
        vi, vj = views[i], views[j]
        h, w = vi.camera.height, vi.camera.width
        x0, y0, cw, ch = _crop(h, w, t.cnn_crop_long_side, generator)
        P = vi.points[y0 : y0 + ch, x0 : x0 + cw].reshape(-1, 3)
        ok = vi.opacity[y0 : y0 + ch, x0 : x0 + cw].reshape(-1) > cfg.localization.min_accumulation
        # Where these points appear in view j (the map's depth gives the correspondence).
        Pn = P.detach().cpu().double().numpy()
        pc = Pn @ vj.w2c_opencv[:3, :3].T + vj.w2c_opencv[:3, 3]
        uv, front = vj.camera.project(pc)
        uv_t = torch.from_numpy(uv).float().to(device)
        hj, wj = vj.camera.height, vj.camera.width
        col = (uv_t[:, 0] - 0.5).round().long()
        row = (uv_t[:, 1] - 0.5).round().long()
        ok &= torch.from_numpy(front).to(device) & (col >= 0) & (col < wj) & (row >= 0) & (row < hj)
        # Visible in j: j's own surface point at that pixel is the same 3D point.
        ok &= (vj.points[row.clamp(0, hj - 1), col.clamp(0, wj - 1)] - P).norm(dim=-1) < max_dist
        if int(ok.sum()) < t.min_correspondences:
            continue
        cu, cv_ = int(col[ok].float().median()), int(row[ok].float().median())
        cwj, chj = min(cw, wj), min(ch, hj)
        x1 = min(max(cu - cwj // 2, 0), wj - cwj)
        y1 = min(max(cv_ - chj // 2, 0), hj - chj)
        ok &= (col >= x1) & (col < x1 + cwj) & (row >= y1) & (row < y1 + chj)
        if int(ok.sum()) < t.min_correspondences:
            continue
        fi = flatten_descriptor_map(cnn(vi.image[:, STRIDE * y0 : STRIDE * (y0 + ch), STRIDE * x0 : STRIDE * (x0 + cw)][None]))
        fj = cnn(vj.image[:, STRIDE * y1 : STRIDE * (y1 + chj), STRIDE * x1 : STRIDE * (x1 + cwj)][None])
        # Sub-cell positions in j's crop: cell (r, c) centre is at pixel (c + 0.5, r + 0.5).
        grid = torch.stack([(uv_t[:, 0] - x1) / cwj * 2 - 1, (uv_t[:, 1] - y1) / chj * 2 - 1], -1)[ok]
        fjs = F.normalize(F.grid_sample(fj, grid[None, None], align_corners=False)[0, :, 0].T, dim=-1)
        fio, Po = fi[ok], P[ok]
        if fio.shape[0] > t.nce_points:
            sel = torch.randperm(fio.shape[0], generator=generator, device=generator.device)[: t.nce_points].to(device)
            fio, fjs, Po = fio[sel], fjs[sel], Po[sel]
        loss = info_nce(fio, fjs, Po, t.nce_temperature, min_neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = float(((fio @ fjs.T).argmax(1) == torch.arange(fio.shape[0], device=device)).float().mean())
        hist.append((float(loss.detach()), acc))
        if hasattr(bar, "set_postfix") and step % 10 == 0:
            bar.set_postfix(loss=f"{hist[-1][0]:.2f}", acc=f"{acc:.2f}", refresh=False)
    cnn.eval()
    loss, accuracy = _tail_means(hist)
    summary = {
        "steps": steps_done,
        "updates": len(hist),
        "seconds": time.perf_counter() - t0,
        "final_loss": loss,
        "final_accuracy": accuracy,
    }
    log(
        f"CNN on correspondences: {summary['updates']} updates in {summary['seconds']:.0f}s, "
        f"loss {summary['final_loss']:.2f}, top-1 correspondence {100 * summary['final_accuracy']:.0f}%"
    )
    return summary


def distill_descriptor_field(
    model,
    head_name: str,
    cnn: FeatureExtractor,
    views: list[SurfaceSamples],
    cfg: CrossfireConfig,
    scene_extent: float,
    generator: torch.Generator,
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Stage 3 (module docstring): the paper's L_pos + L_neg between the frozen CNN's
    descriptors and the rendered ones, random pixels of all views per step."""
    t = cfg.train
    head = model.field.heads[head_name]
    device = views[0].x01.device
    cnn.eval()
    xs, ws, ps, targets = [], [], [], []
    with torch.no_grad():
        for v in views:
            keep = v.opacity.reshape(-1) > cfg.localization.min_accumulation
            targets.append(flatten_descriptor_map(cnn(v.image[None]))[keep])
            xs.append(v.x01.reshape(-1, *v.x01.shape[2:])[keep])
            ws.append(v.weights.reshape(-1, v.weights.shape[-1])[keep])
            ps.append(v.points.reshape(-1, 3)[keep])
    X, W, P, T = torch.cat(xs), torch.cat(ws), torch.cat(ps), torch.cat(targets)
    if T.shape[0] == 0:
        raise ValueError("no training pixel has an opaque surface: is the neural map trained?")
    lam = neg_lambda(cfg.loss, scene_extent)
    groups = [{"params": head.grid_parameters(), "lr": t.lr_descriptor_grid}, {"params": head.mlp_parameters(), "lr": t.lr_descriptor}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    opt = torch.optim.Adam(groups)
    head.train()
    t0 = time.perf_counter()
    hist = []
    steps = range(t.field_steps)
    bar = progress(steps, desc="descriptor field") if progress else steps
    steps_done = t.field_steps
    for step in bar:
        elapsed = time.perf_counter() - t0
        if t.field_time_budget_s and elapsed > t.field_time_budget_s:
            log(f"descriptor field: time budget {t.field_time_budget_s:.0f}s reached at step {step}")
            steps_done = step
            break
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * descriptor_lr_factor(t, step, t.field_steps, elapsed, t.field_time_budget_s)
        sel = torch.randint(0, T.shape[0], (min(t.field_batch, T.shape[0]),), generator=generator, device=generator.device).to(device)
        fr = F.normalize(render_head_from_samples(model, head_name, X[sel], W[sel]), dim=-1)
        fi = T[sel]
        lp = cfg.loss.weight_pos * l_pos(fi, fr)
        ln = cfg.loss.weight_neg * l_neg(fi, fr, P[sel], lam, random_permutations(fi.shape[0], cfg.loss.neg_permutations, generator, device))
        loss = lp + ln
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append((float(lp.detach()), float(ln.detach())))
        if hasattr(bar, "set_postfix") and step % 10 == 0:
            bar.set_postfix(pos=f"{hist[-1][0]:.3f}", neg=f"{hist[-1][1]:.3f}", refresh=False)
    head.eval()
    final_pos, final_neg = _tail_means(hist)
    summary = {
        "steps": steps_done,
        "pixels": int(T.shape[0]),
        "seconds": time.perf_counter() - t0,
        "final_l_pos": final_pos,
        "final_l_neg": final_neg,
    }
    log(
        f"descriptor field: {summary['steps']} steps over {summary['pixels']} pixels in {summary['seconds']:.0f}s, "
        f"L_pos {summary['final_l_pos']:.3f}, L_neg {summary['final_l_neg']:.3f}"
    )
    return summary
