"""CROSSFIRE localization (paper Sec. 3.4): render, match, lift, PnP, iterate.

From the prior pose, render descriptors and 3D points of the neural map at the matching
resolution; extract the query's dense CNN descriptors once; match (mutual NN, cosine >
threshold, coarse-to-fine, see :mod:`~neural_reloc.methods.common.matching`); the
rendered points of the matched pixels are the 3D side of 2D-3D correspondences. The
loop around it (PnP + RANSAC, iterations, convergence, confidence, plausibility) is the
shared :class:`~neural_reloc.methods.common.iterative.IterativeRelocalizer`; after it,
the estimate is refined by optical flow against a colour render (:mod:`.refinement`).

Poses: ``w2c_opencv`` (OpenCV world-to-camera) throughout; the renderer takes the
OpenGL camera-to-world (converted in :mod:`neural_reloc.geometry.frames`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ...device import inference_dtype
from ...geometry.camera import Camera
from ...geometry.frames import opencv_w2c_from_opengl_c2w, opengl_c2w_from_opencv_w2c
from ...map_bundle import MapBundle, MapError
from ..base import PosePrior
from ..common.iterative import Correspondences, IterativeRelocalizer, StageClock
from ..common.matching import match_coarse_to_fine, subpixel_offsets
from ..common.refinement import FlowRefinement, check_flow_settings
from ..common.retrieval import KeyframeQuery, RetrievalIndex, hypotheses_from_retrieval, query_blocks, verifies_by_keyframes
from ..common.texture import textured_cells
from ...map_loading import map_method_config
from .config import CrossfireConfig
from .feature_extractor import STRIDE, FeatureExtractor
from .retrieval import global_descriptor, retrieval_input
from .trainer import DESCRIPTOR_HEAD, descriptor_map_camera

STAGES = ("retrieval", "extract", "render", "match", "pnp", "refine")


@dataclass
class Query:
    """A frame's per-frame work: its CNN descriptor map (D, h, w) in the descriptor-map
    camera ``cam_desc``, and which of its cells see texture (h, w) bool
    (``match_min_gradient``)."""

    descriptor_map: torch.Tensor
    cam_desc: Camera
    textured: torch.Tensor


class CrossfireRelocalizer(FlowRefinement, IterativeRelocalizer):
    method = "crossfire"
    STAGES = STAGES

    def __init__(self, model, cnn: FeatureExtractor, cfg: CrossfireConfig, reference_c2w_opengl: np.ndarray,
                 reference_names: list[str], retrieval: RetrievalIndex | None = None):
        self.model = model.eval()
        self.cnn = cnn.eval()
        self.cfg = cfg
        self.device = model.device
        self.reference_names = list(reference_names)
        self._ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in reference_c2w_opengl])
        self.retrieval = retrieval
        self.extent = float(model.scene.extent)
        self.loc = cfg.localization
        check_flow_settings(cfg.localization)
        if cfg.localization.match_long_side <= 0 or cfg.localization.match_short_side <= 0:
            raise ValueError("localization.match_long_side/match_short_side must be positive")
        try:
            self.cnn_dtype = inference_dtype(cfg.localization.cnn_precision, self.device)
        except ValueError as e:
            raise ValueError(f"localization.cnn_precision: {e}") from None

    # ------------------------------------------------------------ construction
    @classmethod
    def from_bundle(cls, bundle: MapBundle, device, overrides: dict | None = None) -> CrossfireRelocalizer:
        from ...map_loading import load_neural_map

        cfg = map_method_config(bundle.manifest, overrides, method=cls.method)
        model = load_neural_map(bundle, device)
        cnn = FeatureExtractor.from_config(cfg.descriptor)
        try:
            cnn.load_state_dict(bundle.module_state("cnn"))
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: CNN weights do not match the map's config: {e}") from e
        cnn = cnn.float().to(device)
        if device.type == "cpu":
            cnn = cnn.to(memory_format=torch.channels_last)
        state = bundle.module_state("retrieval")
        refs = bundle.references
        retrieval = None
        if "descriptors" in state:
            ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in refs.c2w_opengl])
            try:
                retrieval = RetrievalIndex.from_state(state, ref_w2c).to(device)
            except (ValueError, RuntimeError) as e:
                raise MapError(f"{bundle.path}: retrieval index: {e}") from e
        return cls(model, cnn, cfg, refs.c2w_opengl, refs.names, retrieval)

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return self._ref_w2c

    # ------------------------------------------------------------ stages
    def _cnn_input(self, img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(img).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """The CNN's unit descriptor maps (B, D, H/4, W/4), float32, of images x (B, 3,
        H, W), its backbone computed in ``localization.cnn_precision``."""
        return self.cnn(x, backbone_dtype=self.cnn_dtype)

    @torch.no_grad()
    def retrieval_descriptor(self, image_rgb: np.ndarray) -> torch.Tensor:
        """The retrieval descriptor of an image (the index's rows were made the same way
        from rendered views)."""
        if self.retrieval is None:
            raise ValueError("this map has no retrieval index (built by an older version?)")
        x = retrieval_input(image_rgb, self.cfg.localization.retrieval_long_side, self.device)
        return global_descriptor(self.extract(x))

    def retrieve(self, image_rgb: np.ndarray, top_k: int = 1) -> list[tuple[int, float]]:
        """Top-k rows (index into the retrieval index, cosine) for an image."""
        idx, sims = self.retrieval.query(self.retrieval_descriptor(image_rgb), top_k)
        return [(int(i), float(s)) for i, s in zip(idx, sims)]

    def retrieval_priors(
        self, image_rgb: np.ndarray, query_map: torch.Tensor | None = None, cam_desc: Camera | None = None,
        widened: bool = False, exclude_w2c_opencv: Sequence[np.ndarray] = (),
    ) -> list[PosePrior]:
        """The retrieval hypotheses of an image, best first
        (:func:`~neural_reloc.methods.common.retrieval.hypotheses_from_retrieval`): with
        the query's descriptor map (``query_map`` in ``cam_desc``) and a map with
        keyframes, the shortlist ranked by keyframe PnP inliers, else by global
        descriptor; ``widened``: the wider search after every hypothesis was refused."""
        lc = self.cfg.localization
        g = self.retrieval_descriptor(image_rgb)
        keyframes = None
        if query_map is not None and verifies_by_keyframes(self.retrieval, lc):  # the query's keyframe-sized blocks
            keyframes = KeyframeQuery(query_blocks(query_map, lc.keyframe_stride), cam_desc, lc.keyframe_stride,
                                      lc.min_similarity, lc.keyframe_pnp)
        return hypotheses_from_retrieval(self.retrieval, g, lc, self.extent, self.reference_names, keyframes,
                                         widened, exclude_w2c_opencv)

    @torch.no_grad()
    def render_at(
        self, cam_desc: Camera, w2c_opencv: np.ndarray, stride: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit descriptors (N, D), world points (N, 3) and accumulation (N,) rendered at
        the matching block centres of ``cam_desc`` seen from ``w2c_opencv``."""
        lc = self.cfg.localization
        uv = cam_desc.pixel_centers(stride=stride or lc.render_stride).reshape(-1, 2)
        out = self.model.render_view(
            cam_desc, opengl_c2w_from_opencv_w2c(w2c_opencv), (DESCRIPTOR_HEAD, "points", "accumulation"),
            pixels_uv=uv, num_fine=lc.render_samples, head_samples=lc.render_head_samples or None,
            num_coarse=lc.render_coarse_samples or None,
        )
        desc = torch.nn.functional.normalize(torch.from_numpy(out[DESCRIPTOR_HEAD]).to(self.device), dim=-1)
        return desc, torch.from_numpy(out["points"]).to(self.device), torch.from_numpy(out["accumulation"]).to(self.device)

    # ------------------------------------------------------------ loop hooks
    def prepare_query(self, image_rgb: np.ndarray, camera: Camera, clock: StageClock) -> Query:
        lc = self.cfg.localization
        with clock.stage("extract"):
            cam_desc, cam_cnn = descriptor_map_camera(camera, lc.match_long_side, lc.match_short_side)
            img = cv2.resize(image_rgb, (cam_cnn.width, cam_cnn.height), interpolation=cv2.INTER_AREA)
            query_map = self.extract(self._cnn_input(img))[0].contiguous()
            textured = textured_cells(img, STRIDE, self.cnn.receptive_field // 2, lc.match_min_gradient)
        return Query(query_map, cam_desc, torch.from_numpy(textured).to(self.device))

    def hypotheses_ranked_by_verification(self) -> bool:
        return verifies_by_keyframes(self.retrieval, self.loc)

    def retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Query) -> list[PosePrior]:
        return self.retrieval_priors(image_rgb, query.descriptor_map, query.cam_desc)

    def widened_retrieval_hypotheses(self, image_rgb: np.ndarray, camera: Camera, query: Query,
                                     exclude_w2c_opencv: list[np.ndarray]) -> list[PosePrior]:
        return self.retrieval_priors(image_rgb, query.descriptor_map, query.cam_desc, True, exclude_w2c_opencv)

    def _stride(self, round_index: int) -> int:
        """Coarser blocks before the last round: the basin is wide and the cost a quarter;
        the last one at render_stride sets the precision."""
        lc = self.cfg.localization
        last = round_index >= lc.max_iterations - 1  # the extra unverified rounds too
        return lc.render_stride if last or lc.early_render_stride <= 0 else lc.early_render_stride

    def correspondences(self, query: Query, w2c_opencv: np.ndarray, round_index: int, clock: StageClock) -> Correspondences:
        lc = self.cfg.localization
        stride = self._stride(round_index)
        window = None
        # The last round (and any unverified one after it) starts from this frame's own estimate: guided matching.
        if round_index > 0 and round_index >= lc.max_iterations - 1 and lc.guided_radius_cells > 0:
            window = -(-lc.guided_radius_cells // stride)  # cells -> blocks, rounded up
        with clock.stage("render"):
            desc_r, points_r, acc_r = self.render_at(query.cam_desc, w2c_opencv, stride)
        with clock.stage("match"):
            valid = acc_r > lc.min_accumulation
            vidx = valid.nonzero().squeeze(-1)
            desc_v = torch.zeros_like(desc_r)
            desc_v[vidx] = desc_r[vidx]  # transparent rays cannot match (zero similarity)
            ir, cell, _ = match_coarse_to_fine(desc_v, query.descriptor_map, stride, lc.min_similarity,
                                               lc.refine_margin, window=window)
            cell_f = cell.float()
            if lc.subpixel_refinement:
                cell_f = cell_f + subpixel_offsets(query.descriptor_map, cell, desc_v[ir])
            on_texture = query.textured[cell[:, 0], cell[:, 1]]
            uv_desc = cell_f.flip(-1) + 0.5  # (col, row) of the cell centre in cam_desc pixels
            pts = points_r[ir][on_texture].double().cpu().numpy()
            uv = uv_desc[on_texture].double().cpu().numpy()
        return Correspondences(uv, pts, query.cam_desc, untextured=int((~on_texture).sum()))


def make_relocalizer(bundle: MapBundle, device, overrides: dict | None = None, method: str = "crossfire") -> CrossfireRelocalizer:
    return CrossfireRelocalizer.from_bundle(bundle, torch.device(device), overrides)


__all__ = ["STAGES", "CrossfireRelocalizer", "make_relocalizer"]
