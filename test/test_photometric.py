"""The iNeRF-style photometric refinement (methods/common/photometric.py) on an analytic
scene rendered differentiably in torch: the inside corner of a room (a back wall, a
floor and a side wall, each with a smooth texture), so that the rays' colours depend on
the pose through the ray-plane intersections. From a few centimetres and about a degree
off it converges; it never trains the map; when it cannot lower the loss (a textureless
map) it keeps the start; off, the hook returns its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import (
    opencv_c2w_from_opengl_c2w,
    opencv_w2c_from_opencv_c2w,
    opengl_c2w_from_opencv_w2c,
)
from neural_reloc.geometry.pnp import PnPResult
from neural_reloc.geometry.se3 import invert_pose, make_pose, perturb_pose, pose_error, rotation_from_rotvec
from neural_reloc.methods.base import LocalizationResult
from neural_reloc.methods.common.config import RenderingLocalizationConfig
from neural_reloc.methods.common.photometric import refine_photometric, se3_exp
from neural_reloc.methods.common.refinement import FlowRefinement
from neural_reloc.nerf.neural_map import RayBatch
from neural_reloc.nerf.rays import camera_params, pixel_dirs_opencv

CAM = Camera(160, 120, 140.0, 140.0, 80.0, 60.0)
EXTENT = 8.0
#: The room's planes in world coordinates (OpenCV-like: y down, the camera looks along +z):
#: (axis, coordinate) of the back wall, the floor and the left wall.
PLANES = ((2, 4.0), (1, 1.2), (0, -1.6))
#: Rays that miss a plane (behind the camera) get this far distance: finite, so that no
#: NaN reaches the gradient of the unselected planes.
FAR = 1e3
TRUE_C2W_OPENCV = make_pose(rotation_from_rotvec(np.array([0.05, -0.1, 0.02])), np.array([0.1, -0.2, 0.3]))
TRUE_W2C_OPENCV = opencv_w2c_from_opencv_c2w(TRUE_C2W_OPENCV)


def _texture(p: torch.Tensor, plane: int) -> torch.Tensor:
    """Smooth colour (R, 3) in [0, 1] of points on plane ``plane``, from its two in-plane
    coordinates."""
    axis = PLANES[plane][0]
    u, v = [p[:, k] for k in range(3) if k != axis]
    g = (0.5 + 0.15 * torch.sin(5.0 * u + plane) * torch.cos(4.0 * v) + 0.12 * torch.sin(9.0 * u - 7.0 * v + 2 * plane)
         + 0.12 * torch.sin(6.0 * u + 10.0 * v - plane))
    return torch.stack([g, 0.8 * g + 0.1, 0.6 * g + 0.2], -1)


class RoomMap(nn.Module):
    """What the photometric refinement asks of a neural map (``device``, a differentiable
    ``render_rays``) and what the flow refinement asks (``render_view``), ray-cast
    exactly: a ray's colour is the texture where it first meets one of :data:`PLANES`.
    ``amplitude`` is a parameter of this "field" (scaling the texture's contrast around
    its mean); ``flat``: a textureless map of uniform grey. Records the render calls'
    sample counts."""

    def __init__(self, flat: bool = False):
        super().__init__()
        self.amplitude = nn.Parameter(torch.tensor(1.0))
        self.flat = flat
        self.calls: list[dict] = []

    @property
    def device(self) -> torch.device:
        return self.amplitude.device

    def render_rays(self, rays: RayBatch, outputs=("rgb", "depth"), randomized=False, **kw):
        self.calls.append(kw)
        o, d = rays.origins, rays.dirs
        ts = []
        for axis, c in PLANES:
            t = (c - o[:, axis]) / d[:, axis]
            ts.append(torch.where(t > 1e-4, t, torch.full_like(t, FAR)))
        ts = torch.stack(ts, -1)  # (R, planes)
        t_hit, first = ts.min(-1)
        p = o + d * t_hit[:, None]
        rgb = torch.zeros_like(p)
        for k in range(len(PLANES)):
            rgb = rgb + (first == k)[:, None].float() * _texture(p, k)
        rgb = 0.5 + self.amplitude * (rgb - 0.5)
        if self.flat:
            rgb = torch.full_like(rgb, 0.5) + 0.0 * p
        out = {"rgb": rgb, "accumulation": torch.ones_like(t_hit), "depth": t_hit * rays.dirs_cam_z,
               "points": p, "distance": t_hit}
        return {k: out[k] for k in outputs}

    @torch.no_grad()
    def render_view(self, camera, c2w_opengl, outputs, stride=1, **kw):
        c2w_opencv = torch.as_tensor(opencv_c2w_from_opengl_c2w(c2w_opengl), dtype=torch.float32)
        uv = torch.as_tensor(camera.pixel_centers(stride).reshape(-1, 2), dtype=torch.float32)
        dirs_cam = pixel_dirs_opencv(camera_params([camera]), uv)
        dirs = dirs_cam @ c2w_opencv[:3, :3].T
        rays = RayBatch(c2w_opencv[:3, 3].expand_as(dirs), dirs, dirs_cam[:, 2])
        out = self.render_rays(rays, tuple(outputs), num_fine=kw.get("num_fine"))
        h, w = camera.height // stride, camera.width // stride
        return {k: v.reshape(h, w, *v.shape[1:]).numpy() for k, v in out.items()}


def query_image(w2c_opencv: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """The query: the textured room seen from ``w2c_opencv``, uint8, its brightness
    changed by ``gain`` and ``offset`` (exposure)."""
    rgb = RoomMap().render_view(CAM, opengl_c2w_from_opencv_w2c(w2c_opencv), ("rgb",))["rgb"]
    return np.clip((gain * rgb + offset) * 255.0, 0, 255).round().astype(np.uint8)


QUERY = query_image(TRUE_W2C_OPENCV)


def start_pose(seed: int, translation_m: float = 0.04, rotation_deg: float = 1.0) -> np.ndarray:
    c2w = perturb_pose(TRUE_C2W_OPENCV, translation_m, rotation_deg, np.random.default_rng(seed))
    return opencv_w2c_from_opencv_c2w(c2w)


def error(w2c_opencv: np.ndarray) -> tuple[float, float]:
    return pose_error(invert_pose(w2c_opencv), TRUE_C2W_OPENCV)


def config(**kw) -> RenderingLocalizationConfig:
    kw.setdefault("photometric_steps", 100)
    kw.setdefault("photometric_rays", 512)
    kw.setdefault("flow_refinement_iterations", 0)
    return RenderingLocalizationConfig(**kw)


def test_se3_exp_matches_rodrigues_and_has_a_gradient_at_zero():
    xi = torch.tensor([0.1, -0.2, 0.3, 0.2, -0.1, 0.4], dtype=torch.float64)
    T = se3_exp(xi).numpy()
    assert np.allclose(T[:3, :3], rotation_from_rotvec(xi[3:].numpy()), atol=1e-12)
    # Exp(xi) is the end of the screw motion: half of it twice gives the same.
    half = se3_exp(xi / 2).numpy()
    assert np.allclose(half @ half, T, atol=1e-12)
    zero = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    (se3_exp(zero) * torch.arange(16.0, dtype=torch.float64).view(4, 4)).sum().backward()
    assert torch.isfinite(zero.grad).all() and zero.grad.abs().sum() > 0


@pytest.mark.parametrize("seed, translation_m, rotation_deg, loss", [
    (0, 0.04, 1.0, "huber"), (1, 0.05, 0.8, "huber"), (2, 0.03, 1.2, "l1"),
])
def test_refinement_reduces_the_pose_error_threefold(seed, translation_m, rotation_deg, loss):
    start = start_pose(seed, translation_m, rotation_deg)
    dt0, dr0 = error(start)
    assert dt0 == pytest.approx(translation_m, rel=0.3) and dr0 == pytest.approx(rotation_deg, rel=0.3)
    lc = config(photometric_loss=loss)
    model = RoomMap()
    w2c, info = refine_photometric(model, QUERY, CAM, start, lc, extent=EXTENT)
    dt, dr = error(w2c)
    assert dt <= dt0 / 3 and dr <= dr0 / 3, (dt0, dr0, dt, dr, info)
    assert info["final_loss"] < info["initial_loss"] / 3
    assert info["steps"] == 100 and info["rays"] == 512 and 0 < info["inliers"] <= 512
    assert info["depth_unit_m"] == pytest.approx(3.5, abs=1.0)
    # The localization renders' sample counts, the field untouched.
    assert all(c == {"num_fine": lc.render_samples, "num_coarse": lc.render_coarse_samples,
                     "color_samples": lc.render_head_samples} for c in model.calls)
    assert model.amplitude.grad is None


def test_the_brightness_of_the_render_is_matched_to_the_query():
    start = start_pose(0)
    dt0, dr0 = error(start)
    w2c, info = refine_photometric(RoomMap(), query_image(TRUE_W2C_OPENCV, 0.7, 0.12), CAM, start, config(),
                                   extent=EXTENT)
    dt, dr = error(w2c)
    assert dt <= dt0 / 3 and dr <= dr0 / 3, (dt0, dr0, dt, dr, info)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_autograd_is_switched_on_under_a_callers_no_grad(context):
    start, model = start_pose(0), RoomMap()
    with context():
        w2c, info = refine_photometric(model, QUERY, CAM, start, config(photometric_steps=5), extent=EXTENT)
    assert info["final_loss"] < info["initial_loss"]


def test_a_textureless_map_keeps_the_start_pose():
    start = start_pose(0)
    w2c, info = refine_photometric(RoomMap(flat=True), QUERY, CAM, start, config(), extent=EXTENT)
    assert np.array_equal(w2c, start)
    assert info["final_loss"] == info["initial_loss"] and info["best_step"] == 0


def test_a_textureless_query_is_not_optimized():
    start = start_pose(0)
    flat = np.full_like(QUERY, 128)
    model = RoomMap()
    w2c, info = refine_photometric(model, flat, CAM, start, config(), extent=EXTENT)
    assert np.array_equal(w2c, start) and "textureless" in info["reason"] and not model.calls


class Refiner(FlowRefinement):
    """The refine hook on the room map."""

    def __init__(self, model, lc):
        self.model, self.loc, self.extent = model, lc, EXTENT


def estimate(w2c_opencv) -> tuple[PnPResult, int]:
    cov = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
    return PnPResult(True, w2c_opencv, np.ones(100, bool), 90, 0.5, covariance=cov), 100


def new_result() -> LocalizationResult:
    return LocalizationResult(success=False, method="test", prior=None)


def test_the_hook_returns_its_input_when_both_refinements_are_off():
    best = estimate(start_pose(0))
    model, result = RoomMap(), new_result()
    assert Refiner(model, config(photometric_steps=0)).refine(QUERY, CAM, None, best, result, None) is best
    assert not model.calls and not result.history


def test_the_hook_keeps_the_estimate_when_the_loss_does_not_drop():
    best = estimate(start_pose(0))
    result = new_result()
    assert Refiner(RoomMap(flat=True), config()).refine(QUERY, CAM, None, best, result, None) is best
    assert not result.history


def test_the_hook_refines_alone_and_records_the_step():
    best = estimate(start_pose(1, 0.05, 1.0))
    dt0, dr0 = error(best[0].w2c_opencv)
    result = new_result()
    lc = config()
    pnp, matches = Refiner(RoomMap(), lc).refine(QUERY, CAM, None, best, result, None)
    dt, dr = error(pnp.w2c_opencv)
    assert dt <= dt0 / 3 and dr <= dr0 / 3
    # A copy of the PnP result with the new pose; the last PnP's covariance and support.
    assert pnp is not best[0] and matches == 100 and pnp.num_inliers == 90
    assert np.array_equal(pnp.covariance, best[0].covariance)
    assert np.array_equal(best[0].w2c_opencv, start_pose(1, 0.05, 1.0))  # the input is not modified
    (rec,) = result.history
    assert np.array_equal(rec.w2c_opencv, pnp.w2c_opencv)
    assert rec.num_matches == lc.photometric_rays and 0 < rec.num_inliers <= rec.num_matches
    upd_t, upd_r = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(best[0].w2c_opencv))
    assert rec.pose_update_m == pytest.approx(upd_t) and rec.pose_update_deg == pytest.approx(upd_r)


def test_the_hook_runs_the_photometric_step_after_the_flow_rounds():
    best = estimate(start_pose(0, 0.04, 0.5))
    result = new_result()
    lc = config(flow_refinement_iterations=2, flow_warp_max_translation_rel=0.0)
    model = RoomMap()
    pnp, _ = Refiner(model, lc).refine(QUERY, CAM, None, best, result, None)
    flow_renders = sum(1 for c in model.calls if "color_samples" not in c)
    assert flow_renders >= 1  # the flow rounds ran first ...
    assert all("color_samples" in c for c in model.calls[flow_renders:])  # ... then the photometric steps
    dt, dr = error(pnp.w2c_opencv)
    assert dt < 0.01 and dr < 0.2, (dt, dr, result.history)
