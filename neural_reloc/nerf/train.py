"""Training of the neural map from posed images (photometric NeRF training, plus
depth supervision when the data has metric depth).

:class:`NeuralMapTrainer` owns the optimizer, schedule, density-grid updates,
checkpoints (resume after a kill) and evaluation. Methods that train extra parts with
the map (CROSSFIRE's descriptor head and CNN) subclass it and add loss terms in
:meth:`NeuralMapTrainer.extra_losses`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config_io import to_dict
from ..data.posed_images import PosedImages
from ..sfm.flow_stereo import PixelDistances
from .config import NeuralMapConfig
from .neural_map import NeuralMap, RayBatch
from .rays import c2w_opencv_tensor, camera_params, pixel_dirs_opencv
from .scene import SceneNormalization

CHECKPOINT_NAME = "checkpoint.pt"
#: Virtual views for the depth-smoothness prior sit between an image and one of its
#: this-many nearest training cameras.
VIRTUAL_VIEW_NEIGHBOURS = 4
#: Adam settings of Instant-NGP: tiny epsilon (grid features get tiny gradients) and a
#: short second-moment memory.
ADAM_EPS = 1e-15
ADAM_BETAS = (0.9, 0.99)


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0
    history: list[dict] = field(default_factory=list)


class TrainingImages:
    """Training pixels flattened: colours, image index, pixel coordinates and (when the
    data has depth and ``load_depth``, or ``keypoint_depth`` is given) the measured
    distance along each pixel's ray; with ``free_space``, the pixels that are free space
    up to a distance along their ray (:mod:`neural_reloc.sfm.plain_regions`).

    Pixels a mask marks invalid (:meth:`PosedImages.mask`) are left out, so random rays
    never see them.
    """

    def __init__(
        self,
        data: PosedImages,
        device: torch.device,
        progress: Callable | None = None,
        load_depth: bool = True,
        keypoint_depth: PixelDistances | None = None,
        free_space: PixelDistances | None = None,
    ):
        self.data = data
        self.cameras = [data.camera(i) for i in range(len(data))]
        self.params = camera_params(self.cameras, device)
        with_depth = load_depth and data.depth_paths is not None
        if with_depth and keypoint_depth is not None:
            raise ValueError("TrainingImages: depth images and keypoint depth are exclusive")
        cols, idx, uvs, dists, frees, self.images = [], [], [], [], [], []
        it = range(len(data)) if progress is None else progress(range(len(data)), desc="loading images")
        for i in it:
            img = data.image(i)
            self.images.append(img)
            h, w = img.shape[:2]
            vv, uu = np.mgrid[0:h, 0:w]
            uv = np.stack([uu.ravel(), vv.ravel()], -1).astype(np.int16)
            valid = data.mask(i)
            keep = slice(None) if valid is None else valid.ravel()
            cols.append(img.reshape(-1, 3)[keep])
            uvs.append(uv[keep])
            idx.append(np.full(len(uvs[-1]), i, dtype=np.int32))
            if with_depth:
                dists.append(self._ray_distance(i, data.depth(i), uv)[keep])
            elif keypoint_depth is not None:
                dists.append(_sparse_distance_image(keypoint_depth.uv[i], keypoint_depth.distance[i], w, h)[keep])
            if free_space is not None:
                frees.append(_sparse_distance_image(free_space.uv[i], free_space.distance[i], w, h)[keep])
        if not sum(len(c) for c in cols):
            raise ValueError(f"{data.source}: the masks leave no valid pixel to train on")
        self.colors = torch.from_numpy(np.concatenate(cols)).to(device)
        self.image_index = torch.from_numpy(np.concatenate(idx)).to(device)
        self.pixel = torch.from_numpy(np.concatenate(uvs)).to(device)
        #: Measured distance along each pixel's ray in metres (0 = no measurement), or
        #: None when the data has no depth (or it is not used).
        self.distance = torch.from_numpy(np.concatenate(dists)).to(device) if dists else None
        #: The flattened pixels with a measurement, when they are few (keypoint depth):
        #: the depth terms then get rays of their own (random_depth_rays).
        self.depth_pixels = (
            None if keypoint_depth is None else (self.distance > 0).nonzero().squeeze(-1)
        )
        #: The flattened pixels that are free space up to ``free_distance`` along their
        #: ray (plain regions), or None.
        self.free_pixels = self.free_distance = None
        if frees:
            flat = np.concatenate(frees)
            nonzero = np.flatnonzero(flat)
            self.free_pixels = torch.from_numpy(nonzero).to(device)
            self.free_distance = torch.from_numpy(flat[nonzero]).to(device)
        self.c2w_opencv = c2w_opencv_tensor(data.c2w_opengl, device)
        self.num_pixels = self.colors.shape[0]
        centers = data.c2w_opengl[:, :3, 3]
        dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        #: Nearest other training camera of each image (for virtual views).
        self.neighbours = torch.from_numpy(np.argsort(dist, axis=1)[:, :VIRTUAL_VIEW_NEIGHBOURS].copy())

    def _ray_distance(self, i: int, depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Per-pixel distance along the ray (flattened, float32) from z-depth along the
        optical axis: depth / z of the unit ray direction. Invalid (0, NaN, inf or
        negative) depth gives 0."""
        dirs_cam = pixel_dirs_opencv(self.params[i : i + 1].cpu(), torch.from_numpy(uv).float() + 0.5)
        d = depth.reshape(-1).astype(np.float32)
        ok = np.isfinite(d) & (d > 0)
        return np.where(ok, d / dirs_cam[:, 2].numpy(), 0.0).astype(np.float32)

    @property
    def has_depth(self) -> bool:
        return self.distance is not None

    def random_depth_rays(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[RayBatch, torch.Tensor, torch.Tensor] | None:
        """``n`` random rays among the pixels with a sparse (keypoint) measurement, as
        :meth:`random_rays`; None when the depth is dense or absent."""
        if self.depth_pixels is None or self.depth_pixels.numel() == 0:
            return None
        dev = self.colors.device
        pick = torch.randint(0, self.depth_pixels.numel(), (n,), device=dev, generator=generator)
        return self.rays(self.depth_pixels[pick])

    def random_free_space_rays(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[RayBatch, torch.Tensor] | None:
        """``n`` random rays among the free-space pixels and the distance along each up to
        which it is free; None when there are none."""
        if self.free_pixels is None or self.free_pixels.numel() == 0:
            return None
        pick = torch.randint(0, self.free_pixels.numel(), (n,), device=self.colors.device, generator=generator)
        rays, _, _ = self.rays(self.free_pixels[pick])
        return rays, self.free_distance[pick]

    def random_rays(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[RayBatch, torch.Tensor, torch.Tensor | None]:
        """``n`` random rays of valid training pixels: rays, colours (n, 3) in [0, 1] and
        measured distances (n,) along the rays (0 = none), or None without depth."""
        dev = self.colors.device
        sel = torch.randint(0, self.num_pixels, (n,), device=dev, generator=generator)
        return self.rays(sel)

    def virtual_patches(
        self, n: int, size: int, generator: torch.Generator | None = None
    ) -> RayBatch:
        """Rays of ``n`` size x size patches seen from virtual cameras placed between a
        training camera and one of its neighbours (slerp/lerp at a random fraction):
        unobserved viewpoints, where floaters show (RegNeRF)."""
        from ..geometry.se3 import interpolate_pose

        g = generator
        gdev = g.device if g is not None else torch.device("cpu")
        img = torch.randint(0, len(self.cameras), (n,), device=gdev, generator=g).cpu()
        nb = self.neighbours[img, torch.randint(0, self.neighbours.shape[1], (n,), device=gdev, generator=g).cpu()]
        alpha = torch.rand(n, device=gdev, generator=g).cpu().numpy()
        c2w = self.c2w_opencv.cpu().numpy()
        poses = np.stack(
            [interpolate_pose(c2w[i].astype(np.float64), c2w[j].astype(np.float64), a) for i, j, a in zip(img.tolist(), nb.tolist(), alpha)]
        )
        dev = self.colors.device
        c2w_v = torch.tensor(poses, dtype=torch.float32, device=dev)
        params = self.params[img.to(dev)]
        w = params[:, 2] * 2  # cx ~ W/2: a patch anywhere inside the image
        h = params[:, 3] * 2
        u0 = torch.rand(n, device=gdev, generator=g).to(dev) * (w - size).clamp_min(1)
        v0 = torch.rand(n, device=gdev, generator=g).to(dev) * (h - size).clamp_min(1)
        gy, gx = torch.meshgrid(torch.arange(size, device=dev), torch.arange(size, device=dev), indexing="ij")
        uv = torch.stack([u0[:, None, None] + gx + 0.5, v0[:, None, None] + gy + 0.5], -1).reshape(-1, 2)
        pidx = torch.arange(n, device=dev).repeat_interleave(size * size)
        dirs_cam = pixel_dirs_opencv(params[pidx], uv)
        d = torch.einsum("nij,nj->ni", c2w_v[pidx, :3, :3], dirs_cam)
        o = c2w_v[pidx, :3, 3]
        return RayBatch(o, d, dirs_cam[:, 2], None)

    def rays(self, sel: torch.Tensor) -> tuple[RayBatch, torch.Tensor, torch.Tensor | None]:
        """Rays, colours and measured distances (or None) of flattened pixels ``sel``."""
        img = self.image_index[sel].long()
        uv = self.pixel[sel].float() + 0.5
        dirs_cam = pixel_dirs_opencv(self.params[img], uv)
        c2w = self.c2w_opencv[img]
        d = torch.einsum("nij,nj->ni", c2w[:, :3, :3], dirs_cam)
        o = c2w[:, :3, 3]
        rgb = self.colors[sel].float() / 255.0
        dist = None if self.distance is None else self.distance[sel]
        return RayBatch(o, d, dirs_cam[:, 2], img), rgb, dist


def _sparse_distance_image(uv: np.ndarray, distance: np.ndarray, width: int, height: int) -> np.ndarray:
    """Flattened (h * w,) distances: the sparse measurements' (keypoints', free-space
    bounds') in their pixels, 0 elsewhere."""
    out = np.zeros(height * width, dtype=np.float32)
    col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (distance > 0)
    out[row[ok] * width + col[ok]] = distance[ok]
    return out


def depth_tv(depth_patches: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring depths in (N, P, P) patches."""
    dx = depth_patches[:, :, 1:] - depth_patches[:, :, :-1]
    dy = depth_patches[:, 1:, :] - depth_patches[:, :-1, :]
    return dx.square().mean() + dy.square().mean()


def distortion_loss(weights: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360 distortion loss in O(S) (intervals sorted along each ray)."""
    mid = 0.5 * (s0 + s1)
    width = s1 - s0
    w_cum = torch.cumsum(weights, -1)
    wm_cum = torch.cumsum(weights * mid, -1)
    w_before = w_cum - weights
    wm_before = wm_cum - weights * mid
    inter = 2.0 * (weights * (mid * w_before - wm_before)).sum(-1)
    intra = (weights.square() * width).sum(-1) / 3.0
    return (inter + intra).mean()


def expected_depth_loss(
    distance: torch.Tensor, target: torch.Tensor, far: torch.Tensor, extent: float, huber_delta: float
) -> torch.Tensor:
    """Huber distance between rendered and measured distances along the rays, in units
    of the scene extent, averaged over rays with a measurement (target > 0) that lies
    within the sampled range (target <= far: a surface beyond it cannot be rendered)."""
    use = (target > 0) & (target <= far)
    err = nn.functional.smooth_l1_loss(distance / extent, target / extent, reduction="none", beta=huber_delta)
    return (err * use).sum() / use.sum().clamp_min(1)


def free_space_loss(weights: torch.Tensor, t1: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Line-of-sight loss: rendering weight (opacity) of the samples that end more than
    ``margin`` x the measured distance in front of the measured surface, averaged over
    rays with a measurement (target > 0). Zero when all the weight sits at or behind
    the surface."""
    valid = target > 0
    front = t1 < (target * (1.0 - margin))[:, None]
    return (weights * front).sum(-1).mul(valid).sum() / valid.sum().clamp_min(1)


def psnr(mse: float) -> float:
    return float(-10.0 * math.log10(max(mse, 1e-12)))


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class NeuralMapTrainer:
    """Photometric training of a :class:`NeuralMap`; subclass for method extras."""

    def __init__(
        self,
        data: PosedImages,
        cfg: NeuralMapConfig,
        device: torch.device,
        work_dir: Path,
        progress: Callable | None = None,
        log: Callable[[str], None] = print,
    ):
        self.cfg = cfg
        #: The whole method config (a method's trainer may wrap the map config); it
        #: identifies checkpoints.
        self.method_config = getattr(self, "method_config", cfg)
        self.device = device
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.log = log
        torch.manual_seed(cfg.train.seed)
        self.data = data.with_max_size(cfg.train.max_image_size)
        self.scene = SceneNormalization.from_dataset(self.data, cfg.scene, cfg.sampler.far_contracted)
        self.model = NeuralMap(cfg, self.scene, len(self.data)).to(device)
        self.extra_modules: dict[str, nn.Module] = {}
        self.setup_extras()
        t = cfg.train
        depth_terms = t.depth_weight > 0 or t.free_space_weight > 0
        load_depth = t.use_depth and depth_terms
        #: RGB-only data's keypoint depth (DS-NeRF) is triangulated when the field is first
        #: trained (:meth:`fit`): a field adopted from a map (``add-method``) never needs it.
        self.keypoint_depth_pending = bool(
            depth_terms and t.keypoint_depth and not (load_depth and data.depth_paths is not None))
        self.images = TrainingImages(self.data, device, progress, load_depth=load_depth)
        self._log_depth_share()
        self.optimizer = self.make_optimizer()
        self.state = TrainState()
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.train.seed)

    def _log_depth_share(self) -> None:
        if self.images.has_depth:
            frac = float((self.images.distance > 0).float().mean())
            self.log(f"depth supervision: {100 * frac:.2f}% of the training pixels have a depth measurement"
                     + (" (triangulated keypoints)" if self.images.depth_pixels is not None else ""))

    def prepare_keypoint_depth(self) -> None:
        """Triangulate the training images' keypoints (SIFT tracks, the known poses) and
        supervise their rays' depth, when the config asks for it on data without depth
        images; once, before the field's first step."""
        if not self.keypoint_depth_pending:
            return
        self.keypoint_depth_pending = False
        kp_depth = self._keypoint_depth(self.data)
        if kp_depth is not None:
            free = self._plain_free_space(kp_depth)
            self.images = None  # free the photometric-only copy before loading the images again
            self.images = TrainingImages(self.data, self.device, self.progress, load_depth=False,
                                         keypoint_depth=kp_depth, free_space=free)
            self._log_depth_share()

    def _keypoint_depth(self, data: PosedImages) -> PixelDistances | None:
        """Triangulated keypoint depth of the training images (None, logged, when
        nothing can be triangulated: training is then photometric only)."""
        from .sparse_depth import keypoint_depth

        try:
            t = self.cfg.train
            kd = keypoint_depth(data, self.progress, t.flow_stereo if t.flow_stereo_depth else None)
        except ValueError as e:
            self.log(f"no keypoint depth ({e}); training photometrically only")
            return None
        self.log(f"keypoint depth: {kd.stats['sift_points']} triangulated keypoints in {len(data)} training images "
                 f"(mean reprojection error {kd.stats.get('mean_reprojection_error_px', float('nan')):.2f} px)"
                 + (f"; with flow stereo's {kd.stats['flow_stereo_kept']} pixels, {kd.count} in all"
                    if "flow_stereo_kept" in kd.stats else ""))
        return kd

    def _plain_free_space(self, measured: PixelDistances) -> PixelDistances | None:
        """Free space in front of the training images' plain regions, bounded by the
        ``measured`` depth on their borders (None when the config leaves it out)."""
        from ..sfm.plain_regions import plain_free_space

        t = self.cfg.train
        if not (t.plain_free_space and t.plain_free_space_rays > 0 and t.free_space_weight > 0):
            return None
        free = plain_free_space(self.data, measured, t.plain_regions, self.progress)
        self.log(f"plain free space: {free.stats['bounded_pixels']} plain pixels "
                 f"({100 * free.stats['bounded_pixels'] / max(self.images.num_pixels, 1):.1f}% of the training "
                 "pixels) bounded by "
                 f"their regions' measured border; {free.count} kept")
        return free

    # ------------------------------------------------------------ hooks
    def modules_to_save(self) -> dict[str, nn.Module]:
        """Prefix -> module of everything that goes into the map bundle."""
        return {"map": self.model, **self.extra_modules}

    def setup_extras(self) -> None:
        """Add method-specific modules/heads (override)."""

    def extra_param_groups(self) -> list[dict]:
        return []

    def extra_losses(self, step: int) -> dict[str, torch.Tensor]:
        """Additional loss terms for this step (override)."""
        return {}

    # ------------------------------------------------------------ setup
    def make_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        f = self.model.field
        grid_params = list(f.encoding.parameters())
        app_params = list(f.appearance.parameters()) if f.appearance is not None else []
        head_params = list(f.heads.parameters())
        skip = {id(p) for p in grid_params + app_params + head_params}
        mlp_params = [p for p in f.parameters() if id(p) not in skip]
        groups = [
            {"params": grid_params, "lr": t.lr_grid, "weight_decay": 0.0, "name": "grid"},
            {"params": mlp_params, "lr": t.lr_mlp, "weight_decay": t.weight_decay_mlp, "name": "mlp"},
        ]
        if app_params:
            groups.append({"params": app_params, "lr": t.appearance_lr, "weight_decay": 0.0, "name": "appearance"})
        groups += self.extra_param_groups()
        for g in groups:
            g["initial_lr"] = g["lr"]
        return torch.optim.Adam(groups, eps=ADAM_EPS, betas=ADAM_BETAS)

    def group_lr_factor(self, group: dict, step: int) -> float:
        """Learning-rate factor of one parameter group (override for method groups)."""
        return self.lr_factor(step)

    def lr_factor(self, step: int) -> float:
        """Exponential decay to ``lr_final_factor`` over the run: over its steps, or over
        its time budget when that ends it first (so a budgeted run still ends annealed)."""
        t = self.cfg.train
        progress = min(step, t.steps) / max(1, t.steps)
        if t.time_budget_s > 0:
            progress = max(progress, min(1.0, self.state.elapsed_s / t.time_budget_s))
        return t.lr_final_factor ** progress

    # ------------------------------------------------------------ checkpoints
    def run_identity(self) -> dict:
        """What a checkpoint (or a finished training stage) must match to be reused:
        the whole method config and the training data's fingerprint."""
        return {
            "config": to_dict(self.method_config),
            "fingerprint": self.data.fingerprint("train" if "train" in self.data.split else None),
        }

    def checkpoint_path(self) -> Path:
        return self.work_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        payload = {
            "step": self.state.step,
            "elapsed_s": self.state.elapsed_s,
            "model": self.model.state_dict(),
            "extras": {k: m.state_dict() for k, m in self.extra_modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            **self.run_identity(),
        }
        if self.device.type == "cuda":  # the sampler's jitter draws from the device's default generator
            payload["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_torch_save(payload, self.checkpoint_path())

    def adopt_field(self, bundle) -> None:
        """Start from a map's trained field (``neural-reloc add-method``): its weights and
        scene normalization; :meth:`fit` then trains no field steps, only what a
        subclass adds on top. The map must come from data with as many images."""
        from ..map_bundle import MapError, field_tensors

        state = {k[len("map."):]: v.to(self.device) for k, v in field_tensors(bundle).items()}
        try:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: its field does not fit these training images and config "
                           f"({len(self.data)} images): {e}") from e
        missing = [k for k in missing if not k.startswith("field.heads.")]
        if missing or unexpected:
            raise MapError(f"{bundle.path}: field weights missing {missing[:3]} / unexpected {unexpected[:3]}")
        self.scene = SceneNormalization.from_dict(bundle.manifest["scene"])
        self.model.scene = self.scene
        self.state.step = self.cfg.train.steps
        self.field_adopted = True

    def try_resume(self) -> bool:
        if getattr(self, "field_adopted", False):
            return False
        p = self.checkpoint_path()
        if not p.is_file():
            return False
        try:
            ck = torch.load(p, map_location=self.device, weights_only=True)
        except Exception as e:  # a corrupt checkpoint is not fatal: start over
            self.log(f"ignoring unreadable checkpoint {p}: {e}")
            return False
        ident = self.run_identity()
        if any(ck.get(k) != v for k, v in ident.items()):
            self.log(f"checkpoint {p} is for another config or dataset; starting over")
            return False
        self.model.load_state_dict(ck["model"])
        for k, m in self.extra_modules.items():
            m.load_state_dict(ck["extras"][k])
        self.optimizer.load_state_dict(ck["optimizer"])
        try:
            self.generator.set_state(ck["generator"].cpu() if hasattr(ck["generator"], "cpu") else ck["generator"])
        except RuntimeError:  # CPU and CUDA generator states differ: a checkpoint from the other device
            self.log(f"checkpoint {p} was written on another device type; its random state is not restored")
        torch.set_rng_state(ck["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in ck:
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), self.device)
        self.state.step = int(ck["step"])
        self.state.elapsed_s = float(ck["elapsed_s"])
        self.log(f"resumed from {p} at step {self.state.step}")
        return True

    # ------------------------------------------------------------ training
    def photometric_losses(self) -> dict[str, torch.Tensor]:
        t = self.cfg.train
        rays, rgb_gt, dist_gt = self.images.random_rays(t.rays_per_batch, self.generator)
        # Dense depth (images) on the photometric rays; sparse (keypoint) depth on rays
        # of its own below.
        with_depth = dist_gt is not None and self.images.depth_pixels is None
        outputs = ("rgb", "accumulation") + (("distance",) if with_depth else ())
        out = self.model.render_rays(rays, outputs, randomized=True)
        losses = {"mse": (self.composite_background(out) - rgb_gt).square().mean()}
        if with_depth and t.depth_weight > 0:
            losses["depth"] = t.depth_weight * expected_depth_loss(
                out["distance"], dist_gt, out["t1"][:, -1], self.scene.extent, t.depth_huber_delta
            )
        if with_depth and t.free_space_weight > 0:
            losses["free_space"] = t.free_space_weight * free_space_loss(
                out["weights"], out["t1"], dist_gt, t.free_space_margin
            )
        sparse = self.images.random_depth_rays(t.keypoint_depth_rays, self.generator) if t.keypoint_depth_rays else None
        if sparse is not None:  # keypoint depth: rays of its own, it is ~1% of the pixels
            kr, _, kd = sparse
            kout = self.model.render_rays(kr, ("distance",), randomized=True)
            if t.depth_weight > 0:
                losses["keypoint_depth"] = t.depth_weight * expected_depth_loss(
                    kout["distance"], kd, kout["t1"][:, -1], self.scene.extent, t.depth_huber_delta
                )
            if t.free_space_weight > 0:
                losses["keypoint_free_space"] = t.free_space_weight * free_space_loss(
                    kout["weights"], kout["t1"], kd, t.free_space_margin
                )
        # (free-space pixels exist only where the config asks for them: _plain_free_space)
        free = self.images.random_free_space_rays(t.plain_free_space_rays, self.generator) \
            if t.plain_free_space_rays else None
        if free is not None:  # plain regions: free space only, up to their border's bound
            fr, free_distance = free
            fout = self.model.render_rays(fr, ("distance",), randomized=True)
            # margin 0: plain_regions.margin is in the bound already
            losses["plain_free_space"] = t.free_space_weight * free_space_loss(
                fout["weights"], fout["t1"], free_distance, 0.0
            )
        if t.distortion_weight > 0:
            # The sample intervals' own ends: t_mid is the midpoint in s-space, so
            # t_mid +- delta/2 is not an interval (and can be < 0) in contracted scenes.
            s0 = self.scene.s_from_t(out["t0"])
            s1 = self.scene.s_from_t(out["t1"])
            scale = 1.0 / self.scene.extent if self.scene.mode == "bounded" else 1.0
            losses["distortion"] = t.distortion_weight * distortion_loss(out["weights"], s0 * scale, s1 * scale)
        if t.plane_tv_weight > 0:
            losses["plane_tv"] = t.plane_tv_weight * self.model.field.encoding.plane_tv()
        if t.virtual_depth_tv_weight > 0:
            n, p = t.virtual_patches, t.virtual_patch_size
            vr = self.images.virtual_patches(n, p, self.generator)
            vout = self.model.render_rays(vr, ("depth",), randomized=True)
            depth = vout["depth"].view(n, p, p) / self.scene.extent
            losses["virtual_depth_tv"] = t.virtual_depth_tv_weight * depth_tv(depth)
        if t.empty_space_weight > 0 and bool(self.model.grid.initialized):
            # Pruned cells get no photometric gradient, while shared grid levels let
            # their density drift up ("fog creep" re-admitted by each grid refresh):
            # keep known-empty space empty by penalizing its optical depth per cell.
            x = self.model.grid.random_empty_points(t.empty_space_samples, self.generator)
            if x.shape[0]:
                sigma = self.model.field.density(x)
                losses["empty_space"] = t.empty_space_weight * (sigma * self.model.grid_cell_size_m()).mean()
        return losses

    def composite_background(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rendered colour over the training background (config ``train.background``).

        "random" (default): a random colour per ray where the ray is not opaque. Real
        images are opaque everywhere, so transparency cannot fake a darker colour and
        "fog" is penalized; without it the colour MLP can saturate early and the field
        encodes brightness as opacity.
        """
        bg = self.cfg.train.background
        rgb, acc = out["rgb"], out["accumulation"][:, None]
        if bg == "random":
            return rgb + (1.0 - acc) * torch.rand(rgb.shape, device=rgb.device, generator=self.generator)
        if bg == "white":
            return rgb + (1.0 - acc)
        if bg == "black":
            return rgb
        raise ValueError(f"train.background must be random, white or black, got {bg!r}")

    def train_step(self, step: int) -> dict[str, float]:
        s = self.cfg.sampler
        if step >= s.grid_warmup_steps and step % s.grid_update_every == 0:
            self.model.update_grid(all_cells=not bool(self.model.grid.initialized))
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * self.group_lr_factor(g, step)
        self.model.train()
        for m in self.extra_modules.values():
            m.train()
        losses = self.photometric_losses()
        losses.update(self.extra_losses(step))
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def fit(self) -> TrainState:
        t = self.cfg.train
        self.try_resume()
        start = self.state.step
        if start < t.steps:  # an adopted field (add-method) starts at t.steps: it trains no step
            self.prepare_keypoint_depth()
        t_start = time.perf_counter() - self.state.elapsed_s
        steps = range(start, t.steps)
        bar = self.progress(steps, desc="training", initial=start, total=t.steps) if self.progress else steps
        for step in bar:
            losses = self.train_step(step)
            self.state.step = step + 1
            self.state.elapsed_s = time.perf_counter() - t_start
            if hasattr(bar, "set_postfix") and step % 10 == 0:
                bar.set_postfix(psnr=f"{psnr(losses.get('mse', losses.get('view_mse', float('nan')))):.1f}", refresh=False)
            if step % 50 == 0:
                self.state.history.append({"step": step, **losses, "elapsed_s": self.state.elapsed_s})
            if t.checkpoint_every and self.state.step % t.checkpoint_every == 0 and self.state.step < t.steps:
                self.save_checkpoint()
            if t.time_budget_s and self.state.elapsed_s > t.time_budget_s:
                self.log(f"time budget {t.time_budget_s:.0f}s reached at step {self.state.step}")
                break
        if bool(self.model.grid.initialized):
            self.model.update_grid(all_cells=True)
        return self.state


@torch.no_grad()
def evaluate_views(
    model: NeuralMap, data: PosedImages, indices: list[int], progress: Callable | None = None
) -> dict:
    """PSNR (mean appearance) and, where GT depth exists, depth error of views.

    Where the data has masks, both are over the valid (unmasked) pixels only; a view
    without any valid pixel gets no PSNR (NaN, left out of the mean).
    """
    model.eval()
    psnrs, depth_abs_err, depth_gt_all, per_view = [], [], [], []
    it = indices if progress is None else progress(indices, desc="evaluating")
    for i in it:
        cam = data.camera(i)
        out = model.render_view(cam, data.c2w_opengl[i], ("rgb", "depth"))
        gt = data.image(i).astype(np.float32) / 255.0
        mask = data.mask(i)
        valid_rgb = np.ones(gt.shape[:2], dtype=bool) if mask is None else mask
        rec = {"name": data.names[i], "psnr": float("nan")}
        if valid_rgb.any():
            rec["psnr"] = psnr(float(np.mean((out["rgb"][valid_rgb] - gt[valid_rgb]) ** 2)))
            psnrs.append(rec["psnr"])
        d_gt = data.depth(i)
        if d_gt is not None:
            valid = np.isfinite(d_gt) & (d_gt > 0) & valid_rgb
            if valid.any():
                err = np.abs(out["depth"][valid] - d_gt[valid])
                depth_abs_err.append(err)
                depth_gt_all.append(d_gt[valid])
                rec["depth_median_abs_err_m"] = float(np.median(err))
        per_view.append(rec)
    res = {
        "psnr_mean": float(np.mean(psnrs)) if psnrs else float("nan"),
        "psnr_min": float(np.min(psnrs)) if psnrs else float("nan"),
        "views": per_view,
    }
    if depth_abs_err:
        err = np.concatenate(depth_abs_err)
        gt = np.concatenate(depth_gt_all)
        res["depth_median_abs_err_m"] = float(np.median(err))
        res["depth_median_gt_m"] = float(np.median(gt))
        res["depth_median_rel_err"] = float(np.median(err) / np.median(gt))
    return res
