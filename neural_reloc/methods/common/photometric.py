"""Photometric pose refinement through the frozen map (iNeRF-style).

iNeRF inverts a NeRF: it renders a batch of rays at the current pose estimate, compares
their colours with the query's pixels and back-propagates the photometric error
through the volume rendering into the pose (never into the field). NeRFMatch uses it
as an optional refinement (then re-matches from its pose): it corrects far starts
more than re-matching does, at about three times the cost per refinement step. Here it follows the flow refinement
(:mod:`.refinement`) or stands alone:

* **Update**: a tangent vector xi = (rho, phi) of se(3), zero at the start, applied on
  the *right* of the start's OpenCV camera-to-world, in a *pivot frame*: the start
  camera's axes moved to the point of its optical axis at the median rendered depth d
  of the start (``camera_from_pivot``, a translation by d along z)::

      c2w_opencv = c2w0_opencv @ camera_from_pivot @ Exp(xi) @ inv(camera_from_pivot)

  (equivalently, a left update of the world-to-camera). rho and phi are in the start
  camera's own axes; phi turns the camera about the pivot. Why the pivot: a sideways
  move of the camera and a turn about its own centre that keeps the scene at depth d
  in place change the image in almost the same way, a long narrow valley of the loss
  that Adam's per-coordinate steps cross slowly; about the pivot that combination is
  one coordinate (phi alone). On the test scene (test_photometric.py, 512 rays) it
  lowers the condition number of the loss's Gauss-Newton matrix from ~660 to ~150,
  and 100 Adam steps from 3-5 cm / 1 deg off end at <= 0.3% of the start's error
  instead of <= 49% (7 starts).
  Adam runs on xi with rho divided by d, so that one unit of either half moves the
  image by about as many pixels (a turn by phi moves a pixel by ~f phi, a sideways
  translation rho by ~f rho / d) and its per-coordinate step (~ the learning rate,
  decaying exponentially to ``photometric_lr_final_ratio`` of it) means the same for
  both: radians and fractions of the scene's depth.
* **Rays**: ``photometric_rays`` query pixels at the refinement resolution
  (``flow_refinement_long_side``), drawn once per frame among those with a grey-level
  gradient of ``photometric_min_gradient`` or more, with probability proportional to
  the gradient magnitude (iNeRF's interest-region sampling: a flat pixel has no
  photometric gradient to give). The same rays every step, so the losses of two poses
  are comparable; the rays that are opaque at the start pose are the ones scored.
* **Loss**: Huber (or L1, L2) of the colour residuals after a gain and an offset
  match the render's brightness to the query's (exposure differs per frame): fitted by
  least squares over the scored rays at every step, without gradient. At a
  least-squares fit the loss's derivative in the gain and offset is zero, so leaving
  them out of the gradient costs nothing for the squared part of the loss.
* **Renders**: the map's mean appearance (no image index) and the localization renders'
  sample counts (``render_samples``, ``render_coarse_samples``, ``render_head_samples``
  as the colour samples). Gradients need :meth:`~neural_reloc.nerf.neural_map.NeuralMap.render_rays`
  with autograd on, i.e. its training path: intervals in cells the density grid calls
  empty are evaluated (as probes of at most one cell) rather than skipped; on a
  trained map those carry little density.

The pose with the lowest loss over the steps is returned (the last step's unless a step
made it worse); :func:`photometric_refinement` keeps it only if that loss is below the
start's.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opencv_c2w_from_opencv_w2c, opencv_w2c_from_opencv_c2w
from ...geometry.se3 import pose_error
from .refinement import refinement_camera
from .texture import gradient_magnitude

#: Grey levels of 8-bit images.
GREY_MAX = 255.0
#: Below this rotation angle (radians) the se(3) exponential uses its Taylor series.
SMALL_ANGLE = 1e-4
#: Guards the gain fit of a flat render.
VAR_EPS = 1e-8
#: Bounds of the fitted gain: a render (nearly) uncorrelated with the query would
#: otherwise be flattened to its mean (gain -> 0) or inverted.
GAIN_RANGE = (0.25, 4.0)
#: The translation unit (median rendered depth) is kept within these fractions of the
#: scene extent.
DEPTH_UNIT_RANGE_REL = (1e-3, 1.0)
#: Adam's (beta1, beta2): less momentum than torch's 0.9, which overshoots along the
#: weakly constrained direction of the loss. On the test scene of test_photometric.py
#: from 3-5 cm / 1 deg off (7 starts), the worst final error as a fraction of the
#: start's: 30 steps 5.5% with 0.5, 79% with 0.9; 60 steps 0.3% and 21%.
ADAM_BETAS = (0.5, 0.999)


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """4x4 rigid transform Exp(xi) of a tangent vector xi = (rho, phi) (translation part,
    rotation vector), differentiable, also at xi = 0: R = exp([phi]x), t = V(phi) rho."""
    rho, phi = xi[:3], xi[3:]
    theta2 = (phi * phi).sum()
    small = theta2 < SMALL_ANGLE**2
    # Evaluate the closed forms at a safe angle where the series is used, so that
    # neither branch of the where() produces NaN gradients.
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)  # sin t / t
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)  # (1 - cos t) / t^2
    c = torch.where(small, 1.0 / 6.0 - theta2 / 120.0, (theta - torch.sin(theta)) / (theta2_safe * theta))
    zero = torch.zeros_like(phi[0])
    k = torch.stack([
        torch.stack([zero, -phi[2], phi[1]]),
        torch.stack([phi[2], zero, -phi[0]]),
        torch.stack([-phi[1], phi[0], zero]),
    ])
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device)
    kk = k @ k
    rotation = eye + a * k + b * kk
    v = eye + b * k + c * kk
    top = torch.cat([rotation, (v @ rho)[:, None]], 1)
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=xi.dtype, device=xi.device)
    return torch.cat([top, bottom], 0)


def texture_pixels(query_rgb: np.ndarray, count: int, min_gradient: float, seed: int) -> np.ndarray:
    """Up to ``count`` pixel centres (K, 2) of a uint8 RGB image, drawn without
    replacement among the pixels (off the one-pixel border) whose grey-level gradient
    (Sobel / 8, levels per pixel) is at least ``min_gradient``, with probability
    proportional to that gradient; all of them when there are fewer."""
    grey = cv2.cvtColor(np.ascontiguousarray(query_rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = gradient_magnitude(grey)
    magnitude[[0, -1], :] = 0.0
    magnitude[:, [0, -1]] = 0.0
    rows, cols = np.nonzero((magnitude >= min_gradient) & (magnitude > 0))
    if len(rows) > count:
        p = magnitude[rows, cols].astype(np.float64)
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), count, replace=False, p=p / p.sum()))
        rows, cols = rows[pick], cols[pick]
    return np.stack([cols + 0.5, rows + 0.5], -1).astype(np.float64)


def _robust(residual: torch.Tensor, loss: str, delta: float) -> torch.Tensor:
    """Per-element robust loss of colour residuals."""
    if loss == "huber":
        return torch.nn.functional.huber_loss(residual, torch.zeros_like(residual), reduction="none", delta=delta)
    if loss == "l1":
        return residual.abs()
    if loss == "l2":
        return 0.5 * residual * residual
    raise ValueError(f"unknown photometric_loss {loss!r}: huber, l1 or l2")


@torch.no_grad()
def _gain_offset(render: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares gain and offset (over all channels) taking ``render`` colours to
    ``query``'s, the gain clamped to :data:`GAIN_RANGE` (1 for a flat render)."""
    r, q = render.reshape(-1), query.reshape(-1)
    rc = r - r.mean()
    var = (rc * rc).mean()
    gain = torch.where(var > VAR_EPS, (rc * (q - q.mean())).mean() / var.clamp_min(VAR_EPS), torch.ones_like(var))
    gain = gain.clamp(*GAIN_RANGE)
    return gain, q.mean() - gain * r.mean()


def refine_photometric(model, image_rgb: np.ndarray, camera: Camera, w2c_opencv: np.ndarray, lc,
                       extent: float | None = None) -> tuple[np.ndarray, dict]:
    """Refine the OpenCV world-to-camera pose ``w2c_opencv`` of the query ``image_rgb``
    (uint8 RGB of ``camera``'s size) by ``lc.photometric_steps`` Adam steps on the
    photometric loss against the map's rendered colours (see the module docstring).

    ``model`` needs ``device`` and a differentiable ``render_rays(rays, outputs,
    num_fine=, num_coarse=, color_samples=)`` (a :class:`~neural_reloc.nerf.neural_map.NeuralMap`);
    its parameters get no gradient (only the pose is differentiated). ``lc``: a
    :class:`~.config.RenderingLocalizationConfig`; ``extent``: the scene extent in metres
    (default ``model.scene.extent``), which bounds the translation unit. Autograd is
    switched on here, also under a caller's ``no_grad`` or ``inference_mode``.

    Returns the pose with the lowest loss seen (``w2c_opencv`` itself when no step
    lowered it) and ``info``: ``steps`` (gradient steps taken), ``rays`` (scored rays),
    ``inliers`` (scored rays whose colour residuals are all within
    ``photometric_huber_delta`` at the returned pose), ``initial_loss``,
    ``final_loss`` (at the returned pose), ``best_step``, ``update_m`` / ``update_deg``
    (the returned pose's camera-centre move and rotation from the start),
    ``depth_unit_m``, ``ms_per_step`` (the optimization's wall clock per loss
    evaluation: render, gradient, Adam step; the start's geometry render included), and
    ``reason`` when nothing was optimized.
    """
    w2c0_opencv = np.asarray(w2c_opencv, dtype=np.float64)
    info: dict = {"steps": 0, "rays": 0, "inliers": 0, "initial_loss": float("nan"), "final_loss": float("nan"),
                  "best_step": 0, "update_m": 0.0, "update_deg": 0.0, "depth_unit_m": float("nan"),
                  "ms_per_step": float("nan"), "reason": ""}
    if lc.photometric_steps <= 0:
        info["reason"] = "off (photometric_steps=0)"
        return w2c0_opencv, info
    with torch.inference_mode(False), torch.enable_grad():
        return _refine_photometric(model, image_rgb, camera, w2c0_opencv, lc, extent, info)


def _refine_photometric(model, image_rgb, camera, w2c0_opencv, lc, extent, info):
    """:func:`refine_photometric` with autograd on."""
    from ...nerf.neural_map import RayBatch
    from ...nerf.rays import camera_params, pixel_dirs_opencv, world_rays

    if extent is None:
        extent = float(model.scene.extent)
    dev = torch.device(model.device)
    cam_r = refinement_camera(camera, lc.flow_refinement_long_side)
    query = cv2.resize(image_rgb, (cam_r.width, cam_r.height), interpolation=cv2.INTER_AREA)
    uv = texture_pixels(query, lc.photometric_rays, lc.photometric_min_gradient, lc.pnp.seed)
    if len(uv) < max(lc.min_matches, 1):
        info["reason"] = f"textureless query: {len(uv)} pixels with a gradient >= {lc.photometric_min_gradient}"
        return w2c0_opencv, info
    cols, rows = (uv[:, 0] - 0.5).astype(int), (uv[:, 1] - 0.5).astype(int)
    query_colour = torch.as_tensor(query[rows, cols] / GREY_MAX, dtype=torch.float32, device=dev)
    uv_t = torch.as_tensor(uv, dtype=torch.float32, device=dev)
    dirs_cam_opencv = pixel_dirs_opencv(camera_params([cam_r], dev), uv_t)  # (K, 3), constant
    c2w0_opencv = torch.as_tensor(opencv_c2w_from_opencv_w2c(w2c0_opencv), dtype=torch.float64, device=dev)

    def render(c2w_opencv: torch.Tensor, outputs: tuple[str, ...]) -> dict[str, torch.Tensor]:
        origins, dirs = world_rays(c2w_opencv.float()[None], dirs_cam_opencv)
        rays = RayBatch(origins, dirs, dirs_cam_opencv[:, 2], None)  # None: the map's mean appearance
        return model.render_rays(
            rays, outputs, randomized=False, num_fine=lc.render_samples,
            num_coarse=lc.render_coarse_samples or None, color_samples=lc.render_head_samples or None,
        )

    t0 = time.perf_counter()
    # The start's geometry (no colour, no gradient): which rays are scored (opaque), and
    # the median depth d, the pivot's depth and the translation unit.
    with torch.no_grad():
        out = render(c2w0_opencv, ("accumulation", "depth"))
    scored = out["accumulation"] > lc.min_accumulation
    n = int(scored.sum())
    if n < max(lc.min_matches, 1):
        info["reason"] = f"{n} of {len(uv)} rays are opaque at the start pose (min_matches={lc.min_matches})"
        return w2c0_opencv, info
    depth_unit = float(np.clip(float(out["depth"][scored].median()), DEPTH_UNIT_RANGE_REL[0] * extent,
                               DEPTH_UNIT_RANGE_REL[1] * extent))
    query_scored = query_colour[scored]
    camera_from_pivot = torch.eye(4, dtype=torch.float64, device=dev)
    camera_from_pivot[2, 3] = depth_unit
    pivot_from_camera = torch.linalg.inv(camera_from_pivot)

    def pose(xi: torch.Tensor) -> torch.Tensor:
        """OpenCV camera-to-world after the update xi (in the pivot frame)."""
        return c2w0_opencv @ camera_from_pivot @ se3_exp(xi) @ pivot_from_camera

    # Adam runs on param = xi / scale: the translation in units of d.
    scale = torch.tensor([depth_unit] * 3 + [1.0] * 3, dtype=torch.float64, device=dev)
    param = torch.zeros(6, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.Adam([param], lr=lc.photometric_lr, betas=ADAM_BETAS)
    gamma = lc.photometric_lr_final_ratio ** (1.0 / max(lc.photometric_steps - 1, 1))
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    best_loss, best_xi, best_step, best_inliers, initial_loss = float("inf"), None, 0, 0, float("nan")
    for step in range(lc.photometric_steps + 1):  # the last evaluation scores the last step's pose
        xi = (param.detach() * scale).requires_grad_(True)
        rgb = render(pose(xi), ("rgb",))["rgb"][scored]
        gain, offset = _gain_offset(rgb.detach(), query_scored)
        residual = gain * rgb + offset - query_scored
        loss = _robust(residual, lc.photometric_loss, lc.photometric_huber_delta).mean()
        value = float(loss.detach())
        if step == 0:
            initial_loss = value
        if value < best_loss:
            inliers = int((residual.detach().abs() <= lc.photometric_huber_delta).all(-1).sum())
            best_loss, best_xi, best_step, best_inliers = value, xi.detach().clone(), step, inliers
        if step == lc.photometric_steps:
            break
        # Only the pose is differentiated (the field's parameters get no gradient), with
        # respect to xi; the chain rule through xi = param * scale gives param's.
        (grad_xi,) = torch.autograd.grad(loss, xi, allow_unused=True)
        param.grad = torch.zeros_like(param) if grad_xi is None else grad_xi * scale
        opt.step()
        schedule.step()
    ms_per_step = (time.perf_counter() - t0) * 1e3 / (lc.photometric_steps + 1)

    with torch.no_grad():
        c2w_opencv = pose(best_xi).cpu().numpy()
    dt, dr = pose_error(c2w_opencv, opencv_c2w_from_opencv_w2c(w2c0_opencv))
    info.update(steps=lc.photometric_steps, rays=n, inliers=best_inliers, initial_loss=initial_loss,
                final_loss=best_loss, best_step=best_step, update_m=dt, update_deg=dr, depth_unit_m=depth_unit,
                ms_per_step=ms_per_step)
    return (w2c0_opencv if best_step == 0 else opencv_w2c_from_opencv_c2w(c2w_opencv)), info


def photometric_refinement(model, image_rgb: np.ndarray, camera: Camera, best: tuple, result, lc,
                           extent: float) -> tuple:
    """The photometric step of the ``refine`` hook: :func:`refine_photometric` from the
    estimate ``best`` = (PnP result, matches), kept only if its loss is below the start's.

    A kept step becomes a history record of ``result`` whose ``num_matches`` is the
    number of scored rays and ``num_inliers`` the rays whose colour residuals are within
    ``photometric_huber_delta`` (the photometric step has no correspondences), and the
    returned estimate is a copy of the PnP result with the new ``w2c_opencv``. Its
    covariance, inliers and match count are still the last PnP's: the photometric step
    does not re-estimate the pose's uncertainty (its loss is not a likelihood of
    known scale)."""
    from ...geometry.se3 import invert_pose
    from ..base import IterationRecord

    pnp, matches = best
    w2c_opencv, info = refine_photometric(model, image_rgb, camera, pnp.w2c_opencv, lc, extent)
    if not info["final_loss"] < info["initial_loss"]:
        return best
    dt, dr = pose_error(invert_pose(w2c_opencv), invert_pose(pnp.w2c_opencv))
    # No correspondences here: "matches" are the scored rays, "inliers" those within the Huber threshold.
    result.history.append(IterationRecord(w2c_opencv, info["rays"], info["inliers"], dt, dr, stage="photometric"))
    return replace(pnp, w2c_opencv=w2c_opencv), matches


__all__ = ["photometric_refinement", "refine_photometric", "se3_exp", "texture_pixels"]
