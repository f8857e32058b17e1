"""PoseMap's training stages on a frozen field (the paper's multi-stage schedule):

1. :func:`train_pose_branch`: NeRF-P's head + decoder on PoseMaps rendered at (perturbed)
   mapping poses, decoded back to those poses; the field is frozen.
2. :func:`render_views`: once, the training images at APR-Net's size, the map's renders
   at their true poses (L_image), at ``rvs_per_view`` random perturbations (L_rvs) and at
   ``validation_per_view`` more (validation only); cached in the work dir.
3. :func:`train_apr`: APR-Net with L_pose + L_image + L_posemap + L_rvs.
4. :func:`validate`: the validation renders' per-axis errors (the covariance).

Self-supervised alignment with unlabeled images is :mod:`.alignment`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opencv_c2w_from_opengl_c2w
from ...geometry.se3 import perturb_pose, rotvec_from_rotation
from .apr_net import AprNet, apr_camera, apr_input, to_tensor
from .config import PoseMapConfig
from .losses import pose_loss, posemap_distance, triplet_loss
from .pose_branch import PoseMapDecoder, grid_size, render_posemap


def _perturbed(c2w_opencv: np.ndarray, max_t: float, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    return perturb_pose(c2w_opencv, rng.uniform(0, max_t), rng.uniform(0, max_deg), rng)


def _bar(progress, it, desc):
    return it if progress is None else progress(it, desc=desc)


def train_pose_branch(model, head, decoder: PoseMapDecoder, data, cfg: PoseMapConfig, device, progress=None,
                      log=print) -> dict:
    """Stage 1: head + decoder on PoseMaps at mapping poses moved by up to
    ``posemap.perturb_*`` (the field's weights are detached: frozen)."""
    pc = cfg.posemap
    rng = np.random.default_rng(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    c2w_opencv = np.stack([opencv_c2w_from_opengl_c2w(T) for T in data.c2w_opengl])
    decoder.pose.set_normalization(c2w_opencv[:, :3, 3])
    decoder.to(device)
    cams = [data.camera(i) for i in range(len(data))]
    size = grid_size(cams[0], pc.grid_long_side)
    params = list(head.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=pc.lr)
    max_t = pc.perturb_translation_rel * model.scene.extent
    history, t0 = [], time.perf_counter()
    head.train(), decoder.train()
    for step in _bar(progress, range(pc.steps), "posemap: NeRF-P pose branch"):
        idx = rng.integers(0, len(data), pc.batch)
        poses = np.stack([_perturbed(c2w_opencv[i], max_t, pc.perturb_rotation_deg, rng) for i in idx])
        gt = torch.as_tensor(poses, dtype=torch.float32, device=device)
        pm = render_posemap(model, [cams[i] for i in idx], gt, size, pc.render_samples, train_field=False)
        loss = pose_loss(decoder(pm), gt, decoder.pose.center_scale, cfg.train.rotation_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == pc.steps - 1:
            history.append({"step": step, "loss": float(loss.detach())})
    head.eval(), decoder.eval()
    summary = {"steps": pc.steps, "final_loss": history[-1]["loss"] if history else None,
               "seconds": round(time.perf_counter() - t0, 1), "history": history}
    log(f"posemap: NeRF-P pose branch {pc.steps} steps, decoder loss {summary['final_loss']}")
    return summary


@dataclass
class ViewCache:
    """Stage 2's renders (all at APR-Net's input size, uint8 (N, H, W, 3))."""

    real: torch.Tensor  # the training images
    render: torch.Tensor  # the map at their true poses
    c2w_opencv: torch.Tensor  # (N, 4, 4) their poses
    rvs: torch.Tensor  # the map at random perturbations (M, H, W, 3)
    rvs_c2w_opencv: torch.Tensor  # (M, 4, 4)
    rvs_view: torch.Tensor  # (M,) which training view each perturbs
    val: torch.Tensor  # validation renders (V, H, W, 3)
    val_c2w_opencv: torch.Tensor  # (V, 4, 4)
    val_view: torch.Tensor  # (V,)

    def state(self) -> dict:
        return dict(self.__dict__)


def cache_identity(cfg: PoseMapConfig, data) -> dict:
    from ...config_io import to_dict

    t = cfg.train
    return {"map": to_dict(cfg.map), "long_side": cfg.apr.image_long_side, "blocks": len(cfg.apr.channels),
            "rvs": [t.rvs_per_view, t.validation_per_view, t.rvs_translation_rel, t.rvs_rotation_deg, t.seed],
            "samples": t.render_samples, "data": data.fingerprint()}


@torch.no_grad()
def render_rgb(model, camera: Camera, c2w_opencv: np.ndarray, samples: int) -> np.ndarray:
    from ...geometry.frames import opengl_c2w_from_opencv_c2w

    rgb = model.render_view(camera, opengl_c2w_from_opencv_c2w(c2w_opencv), ("rgb",), num_fine=samples)["rgb"]
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def real_views(data, cfg: PoseMapConfig) -> tuple[np.ndarray, np.ndarray]:
    """The mapping images at APR-Net's size (N, H, W, 3) uint8 and their c2w_opencv poses
    (N, 4, 4): what APR-Net's L_pose trains on."""
    cam0 = apr_camera(data.camera(0), cfg.apr.image_long_side, len(cfg.apr.channels))
    images = [apr_input(data.image(i), data.camera(i).resized(cam0.width, cam0.height)) for i in range(len(data))]
    c2w_opencv = [opencv_c2w_from_opengl_c2w(data.c2w_opengl[i]) for i in range(len(data))]
    return np.stack(images), np.stack(c2w_opencv)


def render_views(model, data, cfg: PoseMapConfig, progress=None, validation_only: bool = False) -> ViewCache:
    """The renders APR-Net trains and is validated on: each mapping view's render at its
    own pose (L_image), ``rvs_per_view`` at random perturbed poses (L_rvs) and
    ``validation_per_view`` more (never trained on). ``validation_only``: the validation
    renders alone (the same poses: every perturbation is still drawn), for re-validating
    a trained APR-Net; the other fields are empty."""
    t = cfg.train
    rng = np.random.default_rng(t.seed + 1)
    max_t = t.rvs_translation_rel * model.scene.extent
    cam0 = apr_camera(data.camera(0), cfg.apr.image_long_side, len(cfg.apr.channels))
    real, poses = real_views(data, cfg) if not validation_only else ([], [])
    render, rvs, rvs_poses, rvs_view, val, val_poses, val_view = ([] for _ in range(7))
    desc = "posemap: validation renders" if validation_only else "posemap: renders for L_image / L_rvs"
    for i in _bar(progress, range(len(data)), desc):
        cam = data.camera(i).resized(cam0.width, cam0.height)
        c2w_opencv = opencv_c2w_from_opengl_c2w(data.c2w_opengl[i])
        if not validation_only:
            render.append(render_rgb(model, cam, c2w_opencv, t.render_samples))
        for k in range(t.rvs_per_view + t.validation_per_view):
            p = _perturbed(c2w_opencv, max_t, t.rvs_rotation_deg, rng)
            if validation_only and k < t.rvs_per_view:
                continue
            img = render_rgb(model, cam, p, t.render_samples)
            (rvs if k < t.rvs_per_view else val).append(img)
            (rvs_poses if k < t.rvs_per_view else val_poses).append(p)
            (rvs_view if k < t.rvs_per_view else val_view).append(i)

    def stack(x, shape):
        return torch.as_tensor(np.stack(x)) if len(x) else torch.zeros(shape, dtype=torch.uint8)

    def f32(x):
        return torch.as_tensor(np.stack(x), dtype=torch.float32) if len(x) else torch.zeros(0, 4, 4)

    hw3 = (0, cam0.height, cam0.width, 3)
    return ViewCache(stack(real, hw3), stack(render, hw3), f32(poses), stack(rvs, hw3), f32(rvs_poses),
                     torch.as_tensor(rvs_view, dtype=torch.long), stack(val, hw3), f32(val_poses),
                     torch.as_tensor(val_view, dtype=torch.long))


@torch.no_grad()
def posemaps(model, cams: list[Camera], c2w_opencv: torch.Tensor, cfg: PoseMapConfig, device, chunk: int = 64) -> torch.Tensor:
    """PoseMaps (N, k, h, w) at many poses, without gradients (targets)."""
    size = grid_size(cams[0], cfg.posemap.grid_long_side)
    out = [render_posemap(model, cams[s:s + chunk], c2w_opencv[s:s + chunk].to(device), size, cfg.posemap.render_samples)
           for s in range(0, len(cams), chunk)]
    return torch.cat(out) if out else torch.zeros(0)


def _jitter(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    if amount <= 0:
        return x
    b = x.shape[0]
    gain = 1.0 + amount * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1).to(x.device)
    offset = amount * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1).to(x.device) * 0.5
    return (x * gain + offset).clamp(0.0, 1.0)


def train_apr(apr: AprNet, model, cache: ViewCache, cams: list[Camera], cfg: PoseMapConfig, device,
              progress=None, log=print) -> dict:
    """Stage 3: APR-Net with w_pose L_pose + w_image L_image + w_posemap L_posemap +
    w_rvs L_rvs (a weight 0 skips its term and its renders)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    rng = np.random.default_rng(t.seed + 2)
    apr.pose.set_normalization(cache.c2w_opencv[:, :3, 3].numpy())
    apr.to(device).train()
    opt = torch.optim.Adam(apr.parameters(), lr=t.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: t.lr_final_factor ** (s / max(1, t.steps)))
    n, m = cache.real.shape[0], cache.rvs.shape[0]
    use_rvs = t.rvs_weight > 0 and m > 0
    size = grid_size(cams[0], cfg.posemap.grid_long_side)
    pm_real = posemaps(model, cams, cache.c2w_opencv, cfg, device) if t.posemap_weight > 0 else None
    pm_rvs = (posemaps(model, [cams[i] for i in cache.rvs_view.tolist()], cache.rvs_c2w_opencv, cfg, device)
              if use_rvs and t.posemap_weight > 0 else None)
    scale = apr.pose.center_scale
    history, t0, step = [], time.perf_counter(), 0
    for step in _bar(progress, range(t.steps), "posemap: APR-Net"):
        idx = torch.as_tensor(rng.integers(0, n, min(t.batch, n)))
        gt = cache.c2w_opencv[idx].to(device)
        x = _jitter(to_tensor(cache.real[idx], device), t.photometric_jitter, gen)
        terms: dict[str, torch.Tensor] = {}
        if t.image_weight > 0:
            pred, f_real = apr(x, features=True)
            _, f_ren = apr(to_tensor(cache.render[idx], device), features=True)
            terms["image"] = triplet_loss(f_real, f_ren, f_ren.roll(1, 0), t.triplet_margin)
        else:
            pred = apr(x)
        terms["pose"] = pose_loss(pred, gt, scale, t.rotation_weight)
        if t.posemap_weight > 0:
            pm = render_posemap(model, [cams[i] for i in idx.tolist()], pred, size, cfg.posemap.render_samples)
            terms["posemap"] = posemap_distance(pm, pm_real[idx])
        if use_rvs:
            j = torch.as_tensor(rng.integers(0, m, min(t.batch, m)))
            gt_r = cache.rvs_c2w_opencv[j].to(device)
            pred_r = apr(to_tensor(cache.rvs[j], device))
            rvs = pose_loss(pred_r, gt_r, scale, t.rotation_weight)
            if t.posemap_weight > 0:
                pm_r = render_posemap(model, [cams[i] for i in cache.rvs_view[j].tolist()], pred_r, size,
                                      cfg.posemap.render_samples)
                rvs = rvs + posemap_distance(pm_r, pm_rvs[j])
            terms["rvs"] = rvs
        w = {"pose": t.pose_weight, "image": t.image_weight, "posemap": t.posemap_weight, "rvs": t.rvs_weight}
        loss = sum(w[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == t.steps - 1:
            history.append({"step": step, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})
        if t.time_budget_s and time.perf_counter() - t0 > t.time_budget_s:
            log(f"posemap: APR time budget {t.time_budget_s:.0f}s reached at step {step + 1}")
            break
    apr.eval()
    summary = {"steps": step + 1 if t.steps else 0, "seconds": round(time.perf_counter() - t0, 1), "history": history}
    log(f"posemap: APR-Net {summary['steps']} steps in {summary['seconds']} s, last {history[-1] if history else {}}")
    return summary


def rotation_errors_world(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> np.ndarray:
    """(N, 3) rotation errors as world-axis rotation vectors (rad): R_est R_gt^T."""
    return np.stack([rotvec_from_rotation(p[:3, :3] @ g[:3, :3].T) for p, g in zip(pred_c2w, gt_c2w)])


@torch.no_grad()
def predict(apr: AprNet, images_uint8: torch.Tensor, device, chunk: int = 64) -> np.ndarray:
    was = apr.training
    apr.eval()
    out = [apr(to_tensor(images_uint8[s:s + chunk], device)).cpu().double().numpy()
           for s in range(0, images_uint8.shape[0], chunk)]
    apr.train(was)
    return np.concatenate(out) if out else np.zeros((0, 4, 4))


def validation_error(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-axis mean square errors (centre m^2 x3, world rotation rad^2 x3) of predicted
    against reference c2w poses, and their summary figures."""
    dc = pred_c2w[:, :3, 3] - gt_c2w[:, :3, 3]
    dr = rotation_errors_world(pred_c2w, gt_c2w)
    var = np.concatenate([np.mean(dc**2, 0), np.mean(dr**2, 0)])
    return var, {"validation_views": len(gt_c2w), "validation_median_m": float(np.median(np.linalg.norm(dc, axis=1))),
                 "validation_median_deg": float(np.degrees(np.median(np.linalg.norm(dr, axis=1)))),
                 "validation_rms_m": float(np.sqrt(np.mean(np.sum(dc**2, 1))))}


def validate(apr: AprNet, cache: ViewCache, device) -> dict:
    """Stage 4: per-axis mean square errors on the validation renders, stored in
    ``apr.validation_var`` (centre m^2 x3, world rotation rad^2 x3)."""
    if cache.val.shape[0] == 0:
        apr.validation_var.fill_(float("nan"))  # none measured (not an earlier run's, which a join would keep)
        return {"validation_views": 0}
    var, summary = validation_error(predict(apr, cache.val, device), cache.val_c2w_opencv.double().numpy())
    apr.validation_var.copy_(torch.as_tensor(var, dtype=torch.float32))
    return summary


def validate_on_real(apr: AprNet, images_uint8: np.ndarray, c2w_opencv: np.ndarray, device) -> dict:
    """The validation error on real images against given poses (a teacher's), joined to
    ``apr.validation_var`` per axis by the larger of the two."""
    if len(images_uint8) == 0:
        return {"validation_views": 0}
    var, summary = validation_error(predict(apr, torch.as_tensor(images_uint8), device), np.asarray(c2w_opencv, float))
    joined = np.fmax(apr.validation_var.detach().cpu().double().numpy(), var)  # NaN: none from renders
    apr.validation_var.copy_(torch.as_tensor(joined, dtype=torch.float32))
    return summary


__all__ = ["ViewCache", "cache_identity", "posemaps", "predict", "render_rgb", "render_views", "train_apr",
           "real_views", "train_pose_branch", "validate", "validate_on_real", "validation_error"]
