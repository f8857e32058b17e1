"""NeRFMatch localization: retrieval over the map's rendered views (or a given prior) ->
NeRF features and points rendered at the reference pose -> dual-softmax mutual matches
with the query's encoder map -> PnP, iterated from the estimate (the paper's iterative
refinement), then the shared flow refinement by the map's colours (in place of the
paper's iNeRF-style photometric optimization). The loop is
:class:`~neural_reloc.methods.common.iterative.IterativeRelocalizer`.

The full variant matches the attention-transformed features (``coarse_matcher.py``) and
gives PnP each match's fine position inside its cell (``fine_matcher.py``) instead of
the cell's centre; the stages keep their names (``match`` is both)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opencv_w2c_from_opengl_c2w
from ...map_bundle import MapBundle, MapError
from ...map_loading import component_entry, load_neural_map, map_method_config
from ..base import PosePrior
from ..common.iterative import Correspondences, IterativeRelocalizer, StageClock
from ..common.refinement import FlowRefinement, check_flow_settings
from ..common.retrieval import (
    KeyframeQuery,
    RetrievalIndex,
    global_descriptor,
    query_blocks,
    hypotheses_from_retrieval,
    verifies_by_keyframes,
)
from ..common.texture import textured_cells
from .coarse_matcher import CoarseMatcher
from .config import MatcherConfig, NerfMatchConfig
from .encoder import STRIDE, ImageEncoder, NerfFeatureProjection
from .fine_matcher import FineMatcher, cell_centres
from .matcher import dual_softmax, mutual_matches
from .nerf_features import encoder_camera, render_nerf_features
from .trainer import COARSE, ENCODER, FINE, PROJECTION, RETRIEVAL, build_matcher, layer_dim, retrieval_image

STAGES = ("retrieval", "extract", "render", "match", "pnp", "refine")


@dataclass
class Query:
    features: torch.Tensor  # (N_m, D) unit, row-major over the (H/8, W/8) grid
    camera: Camera  # the encoder camera
    textured: torch.Tensor  # (N_m,) bool: the cell sees texture (match_min_gradient)
    coarse_map: torch.Tensor | None = None  # full variant: (D_c, H/8, W/8), unit
    fine_map: torch.Tensor | None = None  # full variant: (D_f, H/2, W/2)


def trained_variant(manifest: dict, method: str = "nerfmatch") -> str:
    """The matcher variant a map's component was trained as (maps from before the full
    variant: mini)."""
    return component_entry(manifest, method)["config"].get("matcher", {}).get("variant", MatcherConfig().variant)


class NerfMatchRelocalizer(FlowRefinement, IterativeRelocalizer):
    method = "nerfmatch"
    STAGES = STAGES

    def __init__(self, model, encoder: ImageEncoder, projection: NerfFeatureProjection, cfg: NerfMatchConfig,
                 reference_names: list[str], reference_c2w_opengl: np.ndarray, retrieval: RetrievalIndex | None,
                 coarse: CoarseMatcher | None = None, fine: FineMatcher | None = None):
        self.model, self.encoder, self.projection = model.eval(), encoder.eval(), projection.eval()
        self.full = cfg.matcher.variant == "full"
        if self.full and (coarse is None or fine is None or not encoder.fine):
            raise ValueError("matcher.variant=full needs a fine encoder, a coarse and a fine matcher")
        self.coarse = coarse.eval() if self.full else None
        self.fine = fine.eval() if self.full else None
        check_flow_settings(cfg.localization)
        self.cfg = cfg
        self.loc = cfg.localization
        self.device = model.device
        self.extent = float(model.scene.extent)
        self.reference_names = list(reference_names)
        self._ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in reference_c2w_opengl])
        self.retrieval = retrieval

    @classmethod
    def from_bundle(cls, bundle: MapBundle, device, overrides: dict | None = None) -> NerfMatchRelocalizer:
        cfg = map_method_config(bundle.manifest, overrides, method=cls.method)
        trained = trained_variant(bundle.manifest, cls.method)
        if cfg.matcher.variant != trained:  # (weights missing for the stored variant: the load below fails)
            raise MapError(
                f"{bundle.path}: its NeRFMatch component was trained as matcher.variant={trained!r} and loads only "
                f"as that variant, not as {cfg.matcher.variant!r}; train the other with `neural-reloc add-method "
                f"nerfmatch --map MAP --data DATA --set matcher.variant={cfg.matcher.variant}`")
        model = load_neural_map(bundle, device)
        mods = build_matcher(cfg, layer_dim(model, cfg.features.layer))
        try:
            for name, module in mods.items():
                module.load_state_dict(bundle.module_state(name))
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: NeRFMatch weights do not match its config: {e}") from e
        mods = {k: m.to(device) for k, m in mods.items()}
        retrieval = None
        state = bundle.module_state(RETRIEVAL)
        if "descriptors" in state:
            refs = bundle.references
            ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in refs.c2w_opengl])
            retrieval = RetrievalIndex.from_state(state, ref_w2c).to(device)
        refs = bundle.references
        return cls(model, mods[ENCODER], mods[PROJECTION], cfg, refs.names, refs.c2w_opengl, retrieval,
                   mods.get(COARSE), mods.get(FINE))

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return self._ref_w2c

    def hypotheses_ranked_by_verification(self) -> bool:
        return verifies_by_keyframes(self.retrieval, self.loc)

    # ------------------------------------------------------------ loop hooks
    @torch.no_grad()
    def prepare_query(self, image_rgb: np.ndarray, camera: Camera, clock: StageClock) -> Query:
        with clock.stage("extract"):
            cam = encoder_camera(camera, self.cfg.train.image_long_side)
            img = cv2.resize(image_rgb, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            x = torch.from_numpy(img).to(self.device).permute(2, 0, 1)[None].float() / 255.0
            textured = textured_cells(img, STRIDE, self.encoder.receptive_field // 2, self.loc.match_min_gradient)
            textured = torch.from_numpy(textured.reshape(-1)).to(self.device)
            if self.full:
                coarse_map, fine_map = self.encoder.pyramid(x)
                return Query(coarse_map[0].flatten(1).T.contiguous(), cam, textured, coarse_map[0], fine_map[0])
            fmap = self.encoder(x)[0]
        return Query(fmap.flatten(1).T.contiguous(), cam, textured)

    @torch.no_grad()
    def retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Query, widened: bool = False,
                             exclude_w2c_opencv: Sequence[np.ndarray] = ()) -> list[PosePrior]:
        if self.retrieval is None:
            raise ValueError("this map's NeRFMatch component has no retrieval index")
        lc = self.loc
        g = global_descriptor(self.encoder(retrieval_image(image_rgb, lc.retrieval_long_side).to(self.device)))
        keyframes = None
        if verifies_by_keyframes(self.retrieval, lc):  # the query's features pooled to the keyframe's blocks
            h, w = query.camera.height // STRIDE, query.camera.width // STRIDE
            blocks = query_blocks(query.features.T.reshape(-1, h, w), lc.keyframe_stride)
            keyframes = KeyframeQuery(blocks, query.camera, STRIDE * lc.keyframe_stride, lc.keyframe_min_similarity,
                                      lc.keyframe_pnp)
        return hypotheses_from_retrieval(self.retrieval, g, lc, self.extent, self.reference_names, keyframes,
                                         widened, exclude_w2c_opencv)

    def widened_retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Query,
                                     exclude_w2c_opencv: list[np.ndarray]) -> list[PosePrior]:
        return self.retrieval_hypotheses(image_rgb, camera, query, True, exclude_w2c_opencv)

    @torch.no_grad()
    def correspondences(self, query: Query, w2c_opencv: np.ndarray, round_index: int, clock: StageClock) -> Correspondences:
        lc = self.loc
        with clock.stage("render"):
            rp = render_nerf_features(self.model, query.camera, w2c_opencv, self.cfg.features.layer,
                                      num_fine=lc.render_samples, num_coarse=lc.render_coarse_samples or None)
        with clock.stage("match"):
            opaque = (rp.accumulation > lc.min_accumulation).nonzero().squeeze(-1)
            nerf = self.projection(rp.features[opaque].to(self.device))
            if self.full:
                image_feats, nerf = self.coarse(query.coarse_map, nerf, rp.unit_points[opaque].to(self.device))
            else:
                image_feats = query.features
            scores = dual_softmax(image_feats, nerf, self.cfg.matcher.temperature)
            cells, pts, _ = mutual_matches(scores, lc.min_score)
            on_texture = query.textured[cells]
            untextured = int((~on_texture).sum())
            cells, pts = cells[on_texture], pts[on_texture]
            if self.full:  # the fine stage's position inside each matched cell
                centres = cell_centres(cells, query.camera.width // STRIDE)
                uv = self.fine(query.fine_map, centres, nerf[pts]).uv.double().cpu().numpy()
            else:
                centers = query.camera.pixel_centers(stride=STRIDE).reshape(-1, 2)
                uv = centers[cells.cpu().numpy()]
            points = rp.points[opaque][pts.cpu()].double().numpy()
        return Correspondences(uv, points, query.camera, untextured=untextured)


def make_relocalizer(bundle: MapBundle, device, overrides: dict | None = None, method: str = "nerfmatch"):
    return NerfMatchRelocalizer.from_bundle(bundle, torch.device(device), overrides)


__all__ = ["STAGES", "NerfMatchRelocalizer", "make_relocalizer", "trained_variant"]
