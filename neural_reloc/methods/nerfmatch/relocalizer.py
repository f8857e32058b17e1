"""NeRFMatch-Mini localization: retrieval over the map's rendered views (or a given
prior) -> NeRF features and points rendered at the reference pose -> dual-softmax mutual
matches with the query's encoder map -> PnP, iterated from the estimate (the paper's
iterative refinement), then the shared flow refinement by the map's colours (in place of
the paper's iNeRF-style photometric optimization). The loop is
:class:`~neural_reloc.methods.common.iterative.IterativeRelocalizer`."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opencv_w2c_from_opengl_c2w
from ...map_bundle import MapBundle, MapError
from ...map_loading import load_neural_map, map_method_config
from ..base import PosePrior
from ..common.iterative import Correspondences, IterativeRelocalizer, StageClock
from ..common.refinement import FlowRefinement
from ..common.retrieval import Candidate, RetrievalIndex, distinct_hypotheses, global_descriptor
from .config import NerfMatchConfig
from .encoder import STRIDE, ImageEncoder, NerfFeatureProjection
from .matcher import dual_softmax, mutual_matches
from .nerf_features import encoder_camera, render_nerf_features
from .trainer import ENCODER, PROJECTION, RETRIEVAL, layer_dim, retrieval_image

STAGES = ("retrieval", "extract", "render", "match", "pnp", "refine")
#: Retrieval candidates looked at per hypothesis kept (near-duplicates are skipped).
RETRIEVAL_CANDIDATES_PER_HYPOTHESIS = 4


@dataclass
class Query:
    features: torch.Tensor  # (N_m, D) unit, row-major over the (H/8, W/8) grid
    camera: Camera  # the encoder camera


class NerfMatchRelocalizer(FlowRefinement, IterativeRelocalizer):
    method = "nerfmatch"
    STAGES = STAGES

    def __init__(self, model, encoder: ImageEncoder, projection: NerfFeatureProjection, cfg: NerfMatchConfig,
                 reference_names: list[str], reference_c2w_opengl: np.ndarray, retrieval: RetrievalIndex | None):
        self.model, self.encoder, self.projection = model.eval(), encoder.eval(), projection.eval()
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
        model = load_neural_map(bundle, device)
        encoder = ImageEncoder(cfg.encoder)
        projection = NerfFeatureProjection(layer_dim(model, cfg.features.layer), cfg.encoder)
        try:
            encoder.load_state_dict(bundle.module_state(ENCODER))
            projection.load_state_dict(bundle.module_state(PROJECTION))
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: NeRFMatch weights do not match its config: {e}") from e
        retrieval = None
        state = bundle.module_state(RETRIEVAL)
        if "descriptors" in state:
            refs = bundle.references
            ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in refs.c2w_opengl])
            retrieval = RetrievalIndex.from_state(state, ref_w2c).to(device)
        refs = bundle.references
        return cls(model, encoder.to(device), projection.to(device), cfg, refs.names, refs.c2w_opengl, retrieval)

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return self._ref_w2c

    # ------------------------------------------------------------ loop hooks
    @torch.no_grad()
    def prepare_query(self, image_rgb: np.ndarray, camera: Camera, clock: StageClock) -> Query:
        with clock.stage("extract"):
            cam = encoder_camera(camera, self.cfg.train.image_long_side)
            img = cv2.resize(image_rgb, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            x = torch.from_numpy(img).to(self.device).permute(2, 0, 1)[None].float() / 255.0
            fmap = self.encoder(x)[0]
        return Query(fmap.flatten(1).T.contiguous(), cam)

    @torch.no_grad()
    def retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Query) -> list[PosePrior]:
        if self.retrieval is None:
            raise ValueError("this map's NeRFMatch component has no retrieval index")
        lc = self.loc
        k = max(1, lc.retrieval_top_k)
        g = global_descriptor(self.encoder(retrieval_image(image_rgb, lc.retrieval_long_side).to(self.device)))
        rows, scores = self.retrieval.query(g, k * RETRIEVAL_CANDIDATES_PER_HYPOTHESIS)
        poses = self.retrieval.w2c_opencv.cpu().numpy()
        refs = self.retrieval.reference.cpu().numpy()
        cands = [Candidate(int(r), float(s), 0, poses[r]) for r, s in zip(rows, scores)]
        kept = distinct_hypotheses(cands, k, lc.retrieval_distinct_rel * self.extent, lc.retrieval_distinct_deg)
        return [PosePrior(c.w2c_opencv, source="retrieval", detail={
            "reference": self.reference_names[refs[c.row]], "index_row": c.row, "score": c.score, "rank": r})
            for r, c in enumerate(kept)]

    @torch.no_grad()
    def correspondences(self, query: Query, w2c_opencv: np.ndarray, round_index: int, clock: StageClock) -> Correspondences:
        lc = self.loc
        with clock.stage("render"):
            rp = render_nerf_features(self.model, query.camera, w2c_opencv, self.cfg.features.layer,
                                      num_fine=lc.render_samples, num_coarse=lc.render_coarse_samples or None)
        with clock.stage("match"):
            opaque = (rp.accumulation > lc.min_accumulation).nonzero().squeeze(-1)
            nerf = self.projection(rp.features[opaque].to(self.device))
            scores = dual_softmax(query.features, nerf, self.cfg.matcher.temperature)
            cells, pts, _ = mutual_matches(scores, lc.min_score)
            centers = query.camera.pixel_centers(stride=STRIDE).reshape(-1, 2)
            uv = centers[cells.cpu().numpy()]
            points = rp.points[opaque][pts.cpu()].double().numpy()
        return Correspondences(uv, points, query.camera)


def make_relocalizer(bundle: MapBundle, device, overrides: dict | None = None, method: str = "nerfmatch"):
    return NerfMatchRelocalizer.from_bundle(bundle, torch.device(device), overrides)


__all__ = ["STAGES", "NerfMatchRelocalizer", "make_relocalizer"]
