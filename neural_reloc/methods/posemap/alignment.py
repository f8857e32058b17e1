"""Self-supervised alignment with unlabeled images (Sec. 3.3, Fig. 3, eq. 5):
L_align = L_image + L_posemap on images without poses.

Each round APR-Net predicts every unlabeled image's pose p^, and the map renders there
the image I' and the PoseMap F(p^) (cached for the round; the paper renders online).
A step then: L_image, the triplet between APR-Net's features of the real image I and of
I' (another image's I' as negative), and L_posemap, the cosine distance between the
PoseMap at APR-Net's prediction for I' and F(p^): I' is a view whose pose is known (it
was rendered at p^), near the unlabeled images' own poses. Batch-norm statistics stay
as trained (small batches of one scene).

With a teacher (``align.teacher``: another method of the map localized the images
first, :func:`.unlabeled.load_unlabeled`), its fixes take p^'s place: I' and F(p^) are
rendered once at them, L_pose pulls APR-Net's prediction for I towards them, and the
images it did not localize are left out. The paper's p^ is APR-Net's own guess, so its
L_image pulls a real image's features towards a render of wherever APR-Net thinks it
is: a ~1 m wrong guess gets confirmed (NOTES.md, PoseMap). Every
``teacher_holdout_every``-th localized image is held out (returned) for validation.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ...geometry.camera import Camera
from .apr_net import AprNet, to_tensor
from .config import PoseMapConfig
from .losses import pose_loss, posemap_distance, triplet_loss
from .pose_branch import grid_size, render_posemap
from .training import posemaps, predict, render_rgb


def _freeze_batchnorm(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def teacher_split(teacher_c2w_opencv: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices to align on, indices held out) of the images the teacher localized (its
    poses finite): every ``every``-th of them held out (0: none)."""
    localized = np.flatnonzero(np.isfinite(teacher_c2w_opencv).all(axis=(1, 2)))
    held = localized[every - 1::every] if every > 0 else localized[:0]
    return np.setdiff1d(localized, held), held


def align(apr: AprNet, model, images: np.ndarray, cams: list[Camera], cfg: PoseMapConfig, device,
          progress=None, log=print, teacher_c2w_opencv: np.ndarray | None = None,
          labelled: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Alignment on unlabeled ``images`` (N, H, W, 3) uint8 at APR-Net's size, seen by
    ``cams``; ``teacher_c2w_opencv`` (N, 4, 4), NaN where the teacher gave no pose.
    ``labelled``: the mapping images at APR-Net's size and their c2w_opencv poses; with a
    teacher, ``teacher_labelled_batch`` of them join each step's L_pose (what APR-Net
    learned stays while it takes in the new images). The summary's ``held_out`` lists the
    images held out for validation."""
    a, t = cfg.align, cfg.train
    rng = np.random.default_rng(t.seed + 3)
    opt = torch.optim.Adam(apr.parameters(), lr=a.lr if teacher_c2w_opencv is None else a.teacher_lr)
    summary: dict = {}
    use = np.arange(len(images))
    if teacher_c2w_opencv is not None:
        use, held = teacher_split(teacher_c2w_opencv, a.teacher_holdout_every)
        summary["teacher"] = {"method": a.teacher, "localized": int(len(use) + len(held)), "of": int(len(images)),
                              "aligned_on": int(len(use)), "held_out": held.tolist()}
        log(f"posemap: the teacher ({a.teacher}) localized {len(use) + len(held)} of {len(images)} unlabeled images; "
            f"aligning on {len(use)}, {len(held)} held out for validation")
        if len(use) == 0:
            found = len(held)
            raise ValueError(f"align.teacher={a.teacher!r} localized {'none' if not found else f'only {found}'} of the "
                             f"{len(images)} unlabeled images: nothing left to align on"
                             + (f" (teacher_holdout_every={a.teacher_holdout_every} holds them out)" if found else ""))
    real = torch.as_tensor(images[use])
    cams = [cams[i] for i in use]
    n = real.shape[0]
    size = grid_size(cams[0], cfg.posemap.grid_long_side)
    # the teacher's poses do not change between rounds
    rounds, total = (a.rounds, a.steps) if teacher_c2w_opencv is None else (1, a.teacher_steps)
    per_round = [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]
    history, t0 = [], time.perf_counter()
    for r, steps in enumerate(per_round):
        if not steps:
            continue
        p_hat = predict(apr, real, device) if teacher_c2w_opencv is None else teacher_c2w_opencv[use]
        it = range(n) if progress is None else progress(range(n), desc=f"posemap: alignment round {r + 1} renders")
        rendered = torch.as_tensor(np.stack([render_rgb(model, cams[i], p_hat[i], t.render_samples) for i in it]))
        target = (posemaps(model, cams, torch.as_tensor(p_hat, dtype=torch.float32), cfg, device)
                  if a.posemap_weight > 0 else None)
        pose_target = torch.as_tensor(p_hat, dtype=torch.float32, device=device)
        apr.train()
        _freeze_batchnorm(apr)
        for step in range(steps):
            idx = torch.as_tensor(rng.integers(0, n, min(a.batch, n)))
            pred, f_real = apr(to_tensor(real[idx], device), features=True)
            pred_r, f_ren = apr(to_tensor(rendered[idx], device), features=True)
            terms = {}
            if a.image_weight > 0:
                terms["image"] = triplet_loss(f_real, f_ren, f_ren.roll(1, 0), t.triplet_margin)
            if a.posemap_weight > 0:
                pm = render_posemap(model, [cams[i] for i in idx.tolist()], pred_r, size, cfg.posemap.render_samples)
                terms["posemap"] = posemap_distance(pm, target[idx])
            if teacher_c2w_opencv is not None and a.teacher_pose_weight > 0:
                terms["pose"] = pose_loss(pred, pose_target[idx], apr.pose.center_scale, t.rotation_weight)
                if labelled is not None and a.teacher_labelled_batch > 0:
                    j = rng.integers(0, len(labelled[0]), a.teacher_labelled_batch)
                    pred_l = apr(to_tensor(torch.as_tensor(labelled[0][j]), device))
                    gt_l = torch.as_tensor(labelled[1][j], dtype=torch.float32, device=device)
                    terms["pose"] = terms["pose"] + pose_loss(pred_l, gt_l, apr.pose.center_scale, t.rotation_weight)
            if not terms:
                raise ValueError("alignment needs align.image_weight, align.posemap_weight or (with a teacher) "
                                 "align.teacher_pose_weight > 0")
            w = {"image": a.image_weight, "posemap": a.posemap_weight, "pose": a.teacher_pose_weight}
            loss = sum(w[k] * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 25 == 0 or step == steps - 1:
                history.append({"round": r, "step": step, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})
    apr.eval()
    summary.update({"images": int(n), "steps": int(sum(per_round)), "seconds": round(time.perf_counter() - t0, 1),
                    "history": history})
    log(f"posemap: aligned on {n} unlabeled images, {summary['steps']} steps in {summary['seconds']} s")
    return summary


__all__ = ["align", "teacher_split"]
