"""Self-supervised alignment with unlabeled images (Sec. 3.3, Fig. 3, eq. 5):
L_align = L_image + L_posemap on images without poses.

Each round APR-Net predicts every unlabeled image's pose p^, and the map renders there
the image I' and the PoseMap F(p^) (cached for the round; the paper renders online).
A step then: L_image, the triplet between APR-Net's features of the real image I and of
I' (another image's I' as negative), and L_posemap, the cosine distance between the
PoseMap at APR-Net's prediction for I' and F(p^): I' is a view whose pose is known (it
was rendered at p^), near the unlabeled images' own poses. Batch-norm statistics stay
as trained (small batches of one scene).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ...geometry.camera import Camera
from .apr_net import AprNet, to_tensor
from .config import PoseMapConfig
from .losses import posemap_distance, triplet_loss
from .pose_branch import grid_size, render_posemap
from .training import posemaps, predict, render_rgb


def _freeze_batchnorm(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def align(apr: AprNet, model, images: np.ndarray, cams: list[Camera], cfg: PoseMapConfig, device,
          progress=None, log=print) -> dict:
    a, t = cfg.align, cfg.train
    rng = np.random.default_rng(t.seed + 3)
    opt = torch.optim.Adam(apr.parameters(), lr=a.lr)
    real = torch.as_tensor(images)
    n = real.shape[0]
    size = grid_size(cams[0], cfg.posemap.grid_long_side)
    per_round = [a.steps // a.rounds + (1 if r < a.steps % a.rounds else 0) for r in range(a.rounds)]
    history, t0 = [], time.perf_counter()
    for r, steps in enumerate(per_round):
        if not steps:
            continue
        p_hat = predict(apr, real, device)
        it = range(n) if progress is None else progress(range(n), desc=f"posemap: alignment round {r + 1} renders")
        rendered = torch.as_tensor(np.stack([render_rgb(model, cams[i], p_hat[i], t.render_samples) for i in it]))
        target = posemaps(model, cams, torch.as_tensor(p_hat, dtype=torch.float32), cfg, device)
        apr.train()
        _freeze_batchnorm(apr)
        for step in range(steps):
            idx = torch.as_tensor(rng.integers(0, n, min(a.batch, n)))
            _, f_real = apr(to_tensor(real[idx], device), features=True)
            pred_r, f_ren = apr(to_tensor(rendered[idx], device), features=True)
            terms = {}
            if a.image_weight > 0:
                terms["image"] = triplet_loss(f_real, f_ren, f_ren.roll(1, 0), t.triplet_margin)
            if a.posemap_weight > 0:
                pm = render_posemap(model, [cams[i] for i in idx.tolist()], pred_r, size, cfg.posemap.render_samples)
                terms["posemap"] = posemap_distance(pm, target[idx])
            if not terms:
                raise ValueError("alignment needs align.image_weight or align.posemap_weight > 0")
            w = {"image": a.image_weight, "posemap": a.posemap_weight}
            loss = sum(w[k] * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 25 == 0 or step == steps - 1:
                history.append({"round": r, "step": step, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})
    apr.eval()
    summary = {"images": int(n), "steps": int(sum(per_round)), "seconds": round(time.perf_counter() - t0, 1),
               "history": history}
    log(f"posemap: aligned on {n} unlabeled images, {summary['steps']} steps in {summary['seconds']} s")
    return summary


__all__ = ["align"]
