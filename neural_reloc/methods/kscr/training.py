"""Training D2S on keypoint views (real, and synthetic from descriptor synthesis).

Each step takes ``batch_images`` views (seeded draws), up to ``max_keypoints`` random
keypoints of each (padded), and minimizes the coordinate and reliability losses, plus
the reprojection loss from ``reprojection_after_fraction`` of the steps on. Adam; the
learning rate is multiplied by ``lr_decay`` at each of ``decay_at_fractions``. Views
are drawn uniformly over the real views and, separately, over the synthetic ones, so
``synthetic_fraction`` of the images of a step are synthetic whatever the counts
(the paper trains on the union; with 40 renders per camera pair, uniform draws would
leave the real views a few percent of the steps).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import KscrTrainConfig
from .losses import Batch, coordinate_loss, reliability_loss, reprojection_loss
from .model import D2S


def make_batch(views: Sequence, picks: Sequence[int], max_keypoints: int, rng: np.random.Generator) -> Batch:
    """The padded :class:`Batch` of ``views[i]`` for ``i`` in ``picks``."""
    rows = []
    for i in picks:
        v = views[i]
        n = len(v.keypoints_px)
        sel = np.sort(rng.choice(n, max_keypoints, replace=False)) if n > max_keypoints else np.arange(n)
        rows.append((v, sel))
    n_max = max(1, max(len(s) for _, s in rows))
    B, D = len(rows), rows[0][0].descriptors.shape[1]
    desc = torch.zeros(B, n_max, D)
    kp = torch.zeros(B, n_max, 2)
    xyz = torch.zeros(B, n_max, 3)
    rel = torch.zeros(B, n_max, dtype=torch.bool)
    pad = torch.ones(B, n_max, dtype=torch.bool)
    for b, (v, sel) in enumerate(rows):
        k = len(sel)
        desc[b, :k] = torch.from_numpy(np.asarray(v.descriptors[sel], np.float32))
        kp[b, :k] = torch.from_numpy(np.asarray(v.keypoints_px[sel], np.float32))
        xyz[b, :k] = torch.from_numpy(np.asarray(v.xyz_world[sel], np.float32))
        rel[b, :k] = torch.from_numpy(np.asarray(v.reliable[sel], bool))
        pad[b, :k] = False
    w2c_opencv = torch.from_numpy(np.stack([v.w2c_opencv for v, _ in rows])).float()
    K = torch.from_numpy(np.stack([v.K for v, _ in rows])).float()
    return Batch(desc, kp, xyz, rel, pad, w2c_opencv, K)


def _draw(rng: np.random.Generator, real: list[int], synthetic: list[int], count: int, synthetic_fraction: float) -> list[int]:
    picks = []
    for _ in range(count):
        pool = synthetic if synthetic and (not real or rng.random() < synthetic_fraction) else real
        picks.append(int(pool[rng.integers(len(pool))]))
    return picks


def train_d2s(model: D2S, views: Sequence, cfg: KscrTrainConfig, device: torch.device,
              progress: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """Train ``model`` in place on ``views`` (:class:`~neural_reloc.synthesis.views.KeypointView`);
    returns a summary (steps, seconds, final losses, counts)."""
    real = [i for i, v in enumerate(views) if not v.synthetic and len(v.keypoints_px)]
    synthetic = [i for i, v in enumerate(views) if v.synthetic and len(v.keypoints_px)] if cfg.use_synthetic else []
    if not real and not synthetic:
        raise ValueError("kscr: no training view has keypoints with 3D coordinates")
    used = real + synthetic
    points = np.concatenate([views[i].xyz_world[views[i].reliable] for i in used] + [np.zeros((0, 3))])
    if not len(points):
        raise ValueError("kscr: no training keypoint is reliable (no 3D point agreed between views)")
    model.set_frame(torch.from_numpy(points).float())
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    decay_steps = sorted({int(round(f * cfg.steps)) for f in cfg.decay_at_fractions})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, decay_steps, gamma=cfg.lr_decay)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    reproj_from = int(round(cfg.reprojection_after_fraction * cfg.steps))
    t0 = time.perf_counter()
    steps = range(cfg.steps) if progress is None else progress(range(cfg.steps), desc="kscr: D2S")
    last: dict[str, float] = {}
    done = 0
    for step in steps:
        picks = _draw(rng, real, synthetic, cfg.batch_images, cfg.synthetic_fraction)
        batch = make_batch(views, picks, cfg.max_keypoints, rng).to(device)
        if cfg.descriptor_noise > 0:  # the same point seen from elsewhere has a nearby, not equal, descriptor
            unit = F.normalize(batch.descriptors, dim=-1)  # D2S renormalizes what it is given
            batch.descriptors = unit + torch.randn_like(unit) * (cfg.descriptor_noise / unit.shape[-1] ** 0.5)
        xyz, logits = model(batch.descriptors, batch.pad)
        l_coord = coordinate_loss(xyz, batch, model.scale)
        l_rel = reliability_loss(logits, batch)
        loss = cfg.weight_coordinates * l_coord + cfg.weight_reliability * l_rel
        l_rep = torch.zeros(())
        if step >= reproj_from and cfg.weight_reprojection > 0:
            l_rep = reprojection_loss(xyz, batch, model.scale, cfg.max_reprojection)
            loss = loss + cfg.weight_reprojection * l_rep
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        last = {"coordinates": l_coord.item(), "reliability": l_rel.item(), "reprojection": l_rep.item()}
        if cfg.time_budget_s and time.perf_counter() - t0 > cfg.time_budget_s:
            log(f"kscr: time budget of {cfg.time_budget_s:.0f} s reached after {done} of {cfg.steps} steps")
            break
    model.eval()
    return {"steps": done, "d2s_train_s": round(time.perf_counter() - t0, 2), "real_views": len(real),
            "synthetic_views": len(synthetic), "final_losses": last}


__all__ = ["make_batch", "train_d2s"]
