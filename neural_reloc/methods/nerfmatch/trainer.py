"""Building NeRFMatch: the field (``build-map --method nerfmatch``, as any map) or an
existing map's frozen field (``add-method nerfmatch``), then the matcher on cached
renders (:mod:`.training`, skipped on a rerun when finished), then the retrieval index
over rendered reference views (the map alone localizes, the paper's "NeRF-only" mode).
The full variant's coarse and fine matchers are two more tensor-name prefixes of the
component; a mini component has neither."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from ...geometry.frames import opencv_w2c_from_opengl_c2w
from ...nerf.train import NeuralMapTrainer, atomic_torch_save
from ..common.retrieval import RetrievalIndex, global_descriptor, index_poses, stale_index
from .coarse_matcher import CoarseMatcher
from .config import NerfMatchConfig
from .encoder import STRIDE, ImageEncoder, NerfFeatureProjection
from .fine_matcher import FineMatcher
from .nerf_features import encoder_camera, render_nerf_features
from .training import cache_views, train_matcher

#: Tensor-name prefixes of the component (unique across a map's components).
ENCODER, PROJECTION, RETRIEVAL = "nerfmatch_encoder", "nerfmatch_projection", "nerfmatch_retrieval"
#: The full variant's (absent from a mini component).
COARSE, FINE = "nerfmatch_coarse", "nerfmatch_fine"
#: The trained matcher in the work directory: a rerun with the same config and data skips training.
MATCHER_CHECKPOINT = "nerfmatch_matcher.pt"


def layer_dim(model, layer: str) -> int:
    """Width of one of the field's FEATURE_LAYERS."""
    f, cfg = model.field, model.field.cfg
    dims = {"encoding": f.encoding.out_dim, "density_hidden": cfg.hidden_dim, "geo_feat": cfg.geo_feat_dim,
            "color_hidden": cfg.color_hidden_dim if cfg.color_layers else 0}
    if not dims.get(layer):
        raise ValueError(f"features.layer={layer!r}: the field has no such layer (or it is empty)")
    return dims[layer]


def build_matcher(cfg: NerfMatchConfig, nerf_dim: int) -> dict[str, torch.nn.Module]:
    """The component's learned modules for ``cfg``'s variant, by tensor-name prefix."""
    full = cfg.matcher.variant == "full"
    mods = {ENCODER: ImageEncoder(cfg.encoder, fine=full), PROJECTION: NerfFeatureProjection(nerf_dim, cfg.encoder)}
    if full:
        mods[COARSE] = CoarseMatcher(cfg.encoder.dim, cfg.matcher)
        mods[FINE] = FineMatcher(cfg.encoder.dim, cfg.encoder.fine_dim, cfg.matcher)
    return mods


def retrieval_image(image_rgb: np.ndarray, long_side: int) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1], long side ``long_side``, sides multiples of the stride."""
    h, w = image_rgb.shape[:2]
    s = long_side / max(h, w)
    W, H = max(STRIDE, int(round(w * s / STRIDE)) * STRIDE), max(STRIDE, int(round(h * s / STRIDE)) * STRIDE)
    img = cv2.resize(image_rgb, (W, H), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


@torch.no_grad()
def render_keyframe(model, projection: NerfFeatureProjection, camera, w2c_opencv: np.ndarray,
                    cfg: NerfMatchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A retrieval keyframe: the NeRF features projected into the matching space (B, D_c),
    unit, and the 3D points (B, 3) at the centres of the blocks of
    ``localization.keyframe_stride`` x ``keyframe_stride`` patches of ``camera``'s encoder
    camera (zero features where the render is transparent)."""
    lc = cfg.localization
    cam = encoder_camera(camera, cfg.train.image_long_side)
    rp = render_nerf_features(model, cam, w2c_opencv, cfg.features.layer, num_fine=lc.render_samples,
                              num_coarse=lc.render_coarse_samples or None, blocks=lc.keyframe_stride)
    feats = projection(rp.features.to(model.device)).cpu()
    feats[rp.accumulation <= lc.min_accumulation] = 0.0
    return feats, rp.points


@torch.no_grad()
def build_retrieval_index(model, encoder: ImageEncoder, data, cfg: NerfMatchConfig, progress=None,
                          projection: NerfFeatureProjection | None = None) -> RetrievalIndex:
    """Global descriptors (pooled encoder maps) of the index's views rendered by the map
    (:func:`~..common.retrieval.index_poses`: the mapping views, poses between sparse ones,
    each panned by ``localization.retrieval_extra_yaw_deg``); with ``projection``
    (and ``localization.keyframe_stride`` > 0) each with its keyframe
    (:func:`render_keyframe`), which verifies a retrieved view without rendering. The
    full variant's index has none: its matching space lies after its attention layers,
    and the raw features it would compare are not aligned (room 1: 92.5 -> 85% of the
    queries localized when we tried)."""
    lc = cfg.localization
    views = index_poses(data.c2w_opengl, lc, float(model.scene.extent))
    rows, poses, refs, kf_feats, kf_points = [], [], [], [], []
    keyframes = projection is not None and lc.keyframe_stride > 0 and cfg.matcher.variant == "mini"
    it = views if progress is None else progress(views, desc="nerfmatch: retrieval index")
    for c2w_opengl, i in it:
        cam = data.camera(i)
        x = retrieval_image(np.zeros((cam.height, cam.width, 3), np.uint8), lc.retrieval_long_side)
        cam_r = cam.resized(x.shape[-1], x.shape[-2])
        rgb = model.render_view(cam_r, c2w_opengl, ("rgb",), num_fine=lc.render_samples)["rgb"]
        x = torch.from_numpy(np.clip(rgb, 0, 1)).permute(2, 0, 1)[None].float().to(model.device)
        rows.append(global_descriptor(encoder(x)))
        poses.append(opencv_w2c_from_opengl_c2w(c2w_opengl))
        refs.append(i)
        if keyframes:
            f, p = render_keyframe(model, projection, cam, poses[-1], cfg)
            kf_feats.append(f)
            kf_points.append(p)
    return RetrievalIndex.from_views(rows, poses, refs, kf_feats, kf_points)


class NerfMatchTrainer(NeuralMapTrainer):
    def __init__(self, data, cfg: NerfMatchConfig, device: torch.device, work_dir: Path,
                 progress: Callable | None = None, log: Callable[[str], None] = print):
        self.method_config = cfg
        self.xcfg = cfg
        self.full_data = data  # the matcher sees images at their own size, not the field's
        super().__init__(data, cfg.map, device, work_dir, progress, log)

    def setup_extras(self) -> None:
        self.matcher = {k: m.to(self.device) for k, m in
                        build_matcher(self.xcfg, layer_dim(self.model, self.xcfg.features.layer)).items()}
        self.encoder, self.projection = self.matcher[ENCODER], self.matcher[PROJECTION]
        self.retrieval: RetrievalIndex | None = None

    def modules_to_save(self) -> dict:
        mods = {"map": self.model, **self.matcher}
        if self.retrieval is not None:
            mods[RETRIEVAL] = self.retrieval
        return mods

    def reuse_matcher(self, bundle) -> None:
        """Take the matcher a map's component already holds (trained with this config and
        data) as this run's: :meth:`fit` then skips its training and rebuilds only what
        follows it (the retrieval index)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        modules = {name: bundle.module_state(name) for name in self.matcher}
        atomic_torch_save({"ident": self.run_identity(), "modules": modules}, self.work_dir / MATCHER_CHECKPOINT)

    def fit(self):
        state = super().fit()  # the field (no steps when adopted from a map)
        self.model.eval()
        path = self.work_dir / MATCHER_CHECKPOINT
        ident = self.run_identity()
        done = False
        if path.is_file():
            try:
                ck = torch.load(path, map_location=self.device, weights_only=True)
                if ck.get("ident") == ident:
                    for name, module in self.matcher.items():
                        module.load_state_dict(ck["modules"][name])
                    self.log(f"nerfmatch: matcher trained in a previous run ({path})")
                    done = True
            except Exception as e:  # unreadable: train again
                self.log(f"nerfmatch: ignoring unreadable {path}: {e}")
        if not done:
            views = cache_views(self.model, self.full_data, self.xcfg, self.scene.extent, self.progress)
            self.summary = train_matcher(self.encoder, self.projection, views, self.full_data, self.xcfg, self.device,
                                         self.progress, self.log, self.matcher.get(COARSE), self.matcher.get(FINE))
            atomic_torch_save({"ident": ident, "modules": {k: m.state_dict() for k, m in self.matcher.items()}}, path)
        self.encoder.eval()
        self.retrieval = build_retrieval_index(self.model, self.encoder, self.full_data, self.xcfg, self.progress,
                                               projection=self.projection.eval())
        return state


def stale_component(bundle, cfg: NerfMatchConfig) -> str:
    """Why a map's NeRFMatch component built with ``cfg`` still needs rebuilding ("" if
    not): a Mini index without the keyframes ``cfg`` asks for (built before they existed),
    or an index without the views ``cfg`` places (:func:`~..common.retrieval.stale_index`)."""
    if cfg.matcher.variant == "mini" and cfg.localization.keyframe_stride > 0:
        kd = bundle.module_state(RETRIEVAL).get("keyframe_descriptors")
        if kd is None or kd.shape[1] == 0:
            return "its retrieval index has no keyframes"
    return stale_index(bundle, cfg.localization, RETRIEVAL)


def add_to_map(bundle, data, cfg: NerfMatchConfig, device, work_dir, progress=None, log=print,
               reuse_trained: bool = False):
    """NeRFMatch on an existing map's field, used as it is (``add-method nerfmatch``);
    ``reuse_trained``: the matcher the map's component already holds is kept (not
    trained again) and only the retrieval index is rebuilt (:func:`stale_component`)."""
    import dataclasses

    from ...config_io import from_dict
    from ...nerf.config import NeuralMapConfig

    cfg = dataclasses.replace(cfg, map=from_dict(NeuralMapConfig, bundle.manifest["field"]["config"]))
    trainer = NerfMatchTrainer(data, cfg, device, work_dir, progress=progress, log=log)
    trainer.adopt_field(bundle)
    if reuse_trained:
        trainer.reuse_matcher(bundle)
    trainer.fit()
    return trainer.modules_to_save(), getattr(trainer, "summary", {})


__all__ = ["COARSE", "ENCODER", "FINE", "PROJECTION", "RETRIEVAL", "NerfMatchTrainer", "add_to_map", "build_matcher",
           "build_retrieval_index", "layer_dim", "render_keyframe", "stale_component"]
