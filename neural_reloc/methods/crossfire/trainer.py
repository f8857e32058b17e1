"""Joint self-supervised training of the neural map, its descriptor head and the CNN.

Paper Sec. 3.3, eq. (3): each step renders one whole (downsampled) training view with
colour, depth, 3D points and descriptors, runs the CNN on the real image at 4x that
size, and minimises L_MSE + lambda1 L_DSSIM + lambda2 L_TV + L_pos + L_neg. Our
neural map's own random-ray photometric step (``NeuralMapTrainer.photometric_losses``)
runs alongside (``loss.random_ray_batches``): whole low-resolution images alone
converge slowly on CPU budgets.

After training, the map's global retrieval index is built (:mod:`.retrieval`) from
rendered reference views, so that a map alone suffices to localize without a prior.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...data.posed_images import PosedImages
from ...geometry.frames import opencv_w2c_from_opengl_c2w
from ...nerf.train import NeuralMapTrainer, atomic_torch_save
from .config import CrossfireConfig
from .descriptor_head import DescriptorHead
from .feature_extractor import STRIDE, FeatureExtractor, flatten_descriptor_map
from .losses import crossfire_loss, l_neg, l_pos, neg_lambda, random_permutations
from .descriptor_training import (
    cache_surface_samples,
    descriptor_lr_factor,
    distill_descriptor_field,
    train_cnn_on_correspondences,
)
from .retrieval import RetrievalIndex, build_retrieval_index

#: Name of the descriptor head in the field (``render_view(..., ("descriptor",))``).
DESCRIPTOR_HEAD = "descriptor"


def attach_descriptor_head(model, cfg: CrossfireConfig) -> DescriptorHead:
    head = DescriptorHead.for_field(model.field, cfg.descriptor)
    model.field.add_head(DESCRIPTOR_HEAD, head)
    return head


def descriptor_map_camera(camera, long_side: int, short_side: int):
    """The descriptor-map camera for ``camera`` fitted to long_side x short_side, and the
    CNN input camera (exactly ``STRIDE`` x larger), so that rendered pixel (j, i) and
    CNN cell (i, j) see the same image point (see feature_extractor's docstring)."""
    desc = camera.fit_within(long_side, short_side)
    return desc, desc.resized(desc.width * STRIDE, desc.height * STRIDE)


def fit_to_mapping_images(cfg: CrossfireConfig, data: PosedImages, log: Callable[[str], None] = print
                          ) -> CrossfireConfig:
    """``cfg`` for a build on ``data``'s images (``loss.fit_to_small_images``): where a
    mapping image is smaller than ``STRIDE`` x the matching grid
    (``localization.match_long_side`` x ``match_short_side``, fitted into the image as
    :meth:`Camera.fit_within` does), the grid and the training scale
    (``loss.image_long_side``) shrink by one factor until no mapping image is upsampled
    for the CNN (a 320x240 camera: grid 80x60, CNN 320x240, not 160x120 and 640x480). The
    localization's block sizes, which are in matching-grid cells (``render_stride``,
    ``early_render_stride``, ``guided_radius_cells``, ``keyframe_stride``;
    ``keyframe_pnp``'s threshold, half a block), shrink by the same factor, so that they
    cover the same part of the image and a round renders as many descriptors; thresholds of
    one cell (``pnp``, ``refine_margin``) stay. Larger images, or a grid that would have
    fewer cells than ``train.min_correspondences`` (the CNN stage could not train on it):
    ``cfg`` as it is."""
    import dataclasses
    import math

    if not cfg.loss.fit_to_small_images or len(data) == 0:
        return cfg
    lc, loss = cfg.localization, cfg.loss
    sizes = {(c.width, c.height) for c in map(data.camera, range(len(data)))}
    factor = max(min(lc.match_long_side / max(w, h), lc.match_short_side / min(w, h)) for w, h in sizes)
    s = 1.0 / (STRIDE * factor)
    if s >= 1.0:
        return cfg
    eps = 1e-9  # 160 * 0.46875 is 75, not 74.99...

    def side(v: int) -> int:
        return max(1, math.floor(v * s + eps))

    def cells(v: int) -> int:  # 0 (off) stays off; halves round up
        return max(1, math.floor(v * s + 0.5)) if v > 0 else v

    grid = (side(lc.match_long_side), side(lc.match_short_side))
    if grid[0] * grid[1] < cfg.train.min_correspondences:
        log(f"crossfire: the mapping images are too small to fit the matching grid to them ({grid[0]}x{grid[1]} "
            f"cells < train.min_correspondences={cfg.train.min_correspondences}): keeping "
            f"{lc.match_long_side}x{lc.match_short_side}")
        return cfg
    loc = dataclasses.replace(
        lc, match_long_side=grid[0], match_short_side=grid[1],
        render_stride=cells(lc.render_stride), early_render_stride=cells(lc.early_render_stride),
        guided_radius_cells=cells(lc.guided_radius_cells), keyframe_stride=cells(lc.keyframe_stride),
        keyframe_pnp=dataclasses.replace(lc.keyframe_pnp,
                                         reprojection_threshold_px=lc.keyframe_pnp.reprojection_threshold_px * s))
    train_side = side(loss.image_long_side)
    log(f"crossfire: the mapping images are as small as {min(max(w, h) for w, h in sizes)} px on their long side: "
        f"training scale {train_side}, matching grid {grid[0]}x{grid[1]}, render_stride {loc.render_stride}, "
        f"keyframe_stride {loc.keyframe_stride} (the CNN sees the images at their own size; "
        f"loss.fit_to_small_images=false keeps {loss.image_long_side} and {lc.match_long_side}x{lc.match_short_side})")
    return dataclasses.replace(cfg, loss=dataclasses.replace(loss, image_long_side=train_side), localization=loc)


class CrossfireTrainer(NeuralMapTrainer):
    def __init__(
        self,
        data: PosedImages,
        cfg: CrossfireConfig,
        device: torch.device,
        work_dir: Path,
        progress: Callable | None = None,
        log: Callable[[str], None] = print,
    ):
        self.method_config = cfg
        self.xcfg = cfg
        self._full_data = data
        super().__init__(data, cfg.map, device, work_dir, progress, log)

    # ------------------------------------------------------------ hooks
    def setup_extras(self) -> None:
        attach_descriptor_head(self.model, self.xcfg)
        self.cnn = FeatureExtractor.from_config(self.xcfg.descriptor).to(self.device)
        self.extra_modules["cnn"] = self.cnn
        self.lam = neg_lambda(self.xcfg.loss, self.scene.extent)
        self._views: dict[int, tuple] = {}
        self.retrieval: RetrievalIndex | None = None

    def extra_param_groups(self) -> list[dict]:
        if self.xcfg.train.schedule != "joint":
            return []  # staged: the head and the CNN train after the field (fit)
        head = self.model.field.heads[DESCRIPTOR_HEAD]
        t = self.xcfg.train
        groups = [
            {"params": head.grid_parameters(), "lr": t.lr_descriptor_grid, "weight_decay": 0.0, "name": "descriptor"},
            {"params": head.mlp_parameters() + list(self.cnn.parameters()), "lr": t.lr_descriptor,
             "weight_decay": 0.0, "name": "descriptor"},
        ]
        return [g for g in groups if g["params"]]

    def group_lr_factor(self, group: dict, step: int) -> float:
        if group.get("name") == "descriptor":
            return descriptor_lr_factor(self.xcfg.train, step, self.cfg.train.steps)
        return super().group_lr_factor(group, step)

    def photometric_losses(self) -> dict[str, torch.Tensor]:
        if not self.xcfg.loss.random_ray_batches:
            return {}
        return super().photometric_losses()

    def modules_to_save(self) -> dict:
        mods = super().modules_to_save()
        if self.retrieval is not None:
            mods["retrieval"] = self.retrieval
        return mods

    # ------------------------------------------------------------ training views
    def _view(self, i: int):
        """(descriptor-map camera, CNN-scale image (3, 4h, 4w) and map-scale image
        (3, h, w) as float tensors in [0, 1]) of training view ``i``, cached."""
        if i not in self._views:
            lc = self.xcfg.loss
            cam_full = self._full_data.camera(i)
            cam_desc, cam_cnn = descriptor_map_camera(cam_full, lc.image_long_side, lc.image_long_side)
            img = self._full_data.image(i)
            big = cv2.resize(img, (cam_cnn.width, cam_cnn.height), interpolation=cv2.INTER_AREA)
            small = cv2.resize(img, (cam_desc.width, cam_desc.height), interpolation=cv2.INTER_AREA)
            to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)
            self._views[i] = (cam_desc, to_t(big), to_t(small))
        return self._views[i]

    def _crop(self, cam_desc) -> tuple[int, int, int, int]:
        """A random window (x0, y0, w, h) of the descriptor map, ``crop_long_side`` long."""
        lc = self.xcfg.loss
        W, H = cam_desc.width, cam_desc.height
        if lc.crop_long_side <= 0 or lc.crop_long_side >= max(W, H):
            return 0, 0, W, H
        s = lc.crop_long_side / max(W, H)
        w, h = max(8, int(round(W * s))), max(8, int(round(H * s)))
        x0 = int(torch.randint(0, W - w + 1, (1,), device=self.generator.device, generator=self.generator).item())
        y0 = int(torch.randint(0, H - h + 1, (1,), device=self.generator.device, generator=self.generator).item())
        return x0, y0, w, h

    def extra_losses(self, step: int) -> dict[str, torch.Tensor]:
        if self.xcfg.train.schedule != "joint":
            return {}
        i = int(torch.randint(0, len(self.data), (1,), device=self.generator.device, generator=self.generator).item())
        cam_desc, big, small = self._view(i)
        x0, y0, w, h = self._crop(cam_desc)
        # Rays through the centres of the window's descriptor-map pixels, row-major: the
        # same image points as the CNN cells of the matching window of the big image.
        uv = cam_desc.pixel_centers()[y0 : y0 + h, x0 : x0 + w].reshape(-1, 2)
        rays = self.model.rays_for_view(cam_desc, self.data.c2w_opengl[i], pixels_uv=uv, image_index=i)
        with_desc = step >= self.xcfg.train.descriptor_start_fraction * self.cfg.train.steps
        lc = self.xcfg.loss
        photometric = lc.view_photometric_weight > 0
        if not photometric and not with_desc:
            return {}
        outputs = (("rgb", "accumulation", "depth") if photometric else ()) + ("points",)
        outputs += (DESCRIPTOR_HEAD,) if with_desc else ()
        out = self.model.render_rays(
            rays, outputs, randomized=True, heads_train_field=self.xcfg.train.descriptor_grad_to_field
        )
        kw = {}
        if with_desc:
            x_cnn = big[:, 4 * y0 : 4 * (y0 + h), 4 * x0 : 4 * (x0 + w)][None].to(self.device)
            f_image = flatten_descriptor_map(self.cnn(x_cnn))
            f_render = F.normalize(out[DESCRIPTOR_HEAD], dim=-1)
            kw = dict(f_image=f_image, f_render=f_render, xyz=out["points"], lam=self.lam)
        if not photometric:  # descriptor terms only (L_pos, L_neg)
            perms = random_permutations(h * w, lc.neg_permutations, self.generator, self.device)
            return {
                "view_pos": lc.weight_pos * l_pos(kw["f_image"], kw["f_render"]),
                "view_neg": lc.weight_neg * l_neg(kw["f_image"], kw["f_render"], kw["xyz"], self.lam, perms),
            }
        rgb_gt = small[:, y0 : y0 + h, x0 : x0 + w].reshape(3, -1).T.to(self.device)
        terms = crossfire_loss(
            lc,
            self.composite_background(out),
            rgb_gt,
            out["depth"] / self.scene.extent,
            (h, w),
            generator=self.generator,
            **kw,
        )
        terms.pop("total")
        for k in ("mse", "dssim", "tv"):
            terms[k] = terms[k] * lc.view_photometric_weight
        return {f"view_{k}": v for k, v in terms.items()}

    def fit(self):
        t = self.xcfg.train
        if t.schedule not in ("staged", "joint"):
            raise ValueError(f"train.schedule must be 'staged' or 'joint', got {t.schedule!r}")
        state = super().fit()
        if t.schedule == "staged":
            self.save_checkpoint()  # the finished field: a rerun resumes after it
            self._fit_descriptors_staged()
        self.log("building the retrieval index from rendered reference views")
        self.retrieval = build_retrieval_index(
            self.model, self.cnn, self.data, self.xcfg.localization, progress=self.progress,
            descriptor_head=DESCRIPTOR_HEAD,
        )
        return state

    # ------------------------------------------------------------ staged descriptors
    def _stage(self, name: str, run: Callable[[], dict], modules: dict) -> None:
        """Run one stage, or load its result when a previous run finished it with the
        same config and data (written atomically; hloc-style skip on rerun)."""
        path = self._stage_path(name)
        ident = self.run_identity()
        if path.is_file():
            try:
                ck = torch.load(path, map_location=self.device, weights_only=True)
                if ck.get("ident") == ident:
                    for k, m in modules.items():
                        m.load_state_dict(ck["modules"][k])
                    self.log(f"stage {name}: done in a previous run ({path})")
                    return
            except Exception as e:  # unreadable: redo the stage
                self.log(f"stage {name}: ignoring unreadable {path}: {e}")
        summary = run()
        atomic_torch_save({"ident": ident, "summary": summary, "modules": {k: m.state_dict() for k, m in modules.items()}}, path)

    def _stage_path(self, name: str) -> Path:
        """Where stage ``name``'s result is kept between runs."""
        return self.work_dir / f"crossfire_{name}.pt"

    def reuse_descriptors(self, bundle) -> None:
        """Take the CNN and descriptor head a map's CROSSFIRE component already holds
        (trained with this config and data) as the staged schedule's finished stages:
        :meth:`fit` then rebuilds only the retrieval index."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ident = self.run_identity()
        head = f"field.heads.{DESCRIPTOR_HEAD}."
        stages = {
            "cnn": {"cnn": bundle.module_state("cnn")},
            "descriptor_field": {"head": {k[len(head):]: v for k, v in bundle.module_state("map").items()
                                          if k.startswith(head)}},
        }
        for name, modules in stages.items():
            atomic_torch_save({"ident": ident, "summary": {"reused": True}, "modules": modules},
                              self._stage_path(name))

    def _fit_descriptors_staged(self) -> None:
        t = self.xcfg.train
        n = len(self.data)
        idx = np.unique(np.linspace(0, n - 1, min(n, t.max_cached_views)).round().astype(int))
        head = self.model.field.heads[DESCRIPTOR_HEAD]
        views = None

        def cached():
            nonlocal views
            if views is None:
                items = []
                for i in idx:
                    cam_desc, big, _ = self._view(int(i))
                    c2w = self.data.c2w_opengl[i]
                    items.append((cam_desc, c2w, opencv_w2c_from_opengl_c2w(c2w), big))
                views = cache_surface_samples(self.model, items, t.surface_samples, self.progress)
            return views

        extent = self.scene.extent
        self._stage(
            "cnn",
            lambda: train_cnn_on_correspondences(
                self.cnn, cached(), self.xcfg, extent, self.generator, self.progress, self.log
            ),
            {"cnn": self.cnn},
        )
        self._stage(
            "descriptor_field",
            lambda: distill_descriptor_field(
                self.model, DESCRIPTOR_HEAD, self.cnn, cached(), self.xcfg, extent, self.generator, self.progress,
                self.log,
            ),
            {"head": head},
        )
