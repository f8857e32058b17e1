"""CROSSFIRE localization (paper Sec. 3.4): render, match, lift, PnP, iterate.

From the prior pose, render descriptors and 3D points of the neural map at the matching
resolution; extract the query's dense CNN descriptors once; match (mutual NN, cosine >
threshold, coarse-to-fine, see :mod:`.matching`); the rendered points of the matched
pixels are the 3D side of 2D-3D correspondences; PnP + RANSAC (poselib, explicit
settings) gives a new pose, from which the next iteration renders. Stops after
``max_iterations`` or when the pose moved less than the convergence thresholds.

Poses: ``w2c_opencv`` (OpenCV world-to-camera) throughout; the renderer takes the
OpenGL camera-to-world (converted in :mod:`neural_reloc.geometry.frames`).
"""

from __future__ import annotations

import time
from collections import defaultdict

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...device import inference_dtype, synchronize
from ...geometry.camera import Camera
from ...geometry.frames import opencv_w2c_from_opengl_c2w, opengl_c2w_from_opencv_w2c
from ...geometry.pnp import PnPResult, pnp_ransac
from ...geometry.se3 import invert_pose, pose_error
from ...map_bundle import MapBundle, MapError
from ..base import IterationRecord, LocalizationResult, PosePrior, Relocalizer
from ..registry import map_method_config
from .config import CrossfireConfig
from .feature_extractor import FeatureExtractor
from .matching import match_coarse_to_fine, mutual_nearest_neighbours, subpixel_offsets
from .refinement import flow_matches, refinement_camera
from .retrieval import RetrievalIndex, global_descriptor, retrieval_input
from .trainer import DESCRIPTOR_HEAD, descriptor_map_camera

STAGES = ("retrieval", "extract", "render", "match", "pnp", "refine")
#: Retrieval candidates looked at per hypothesis kept (near-duplicates are skipped).
RETRIEVAL_CANDIDATES_PER_HYPOTHESIS = 4


class CrossfireRelocalizer(Relocalizer):
    method = "crossfire"

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
        if cfg.localization.match_long_side <= 0 or cfg.localization.match_short_side <= 0:
            raise ValueError("localization.match_long_side/match_short_side must be positive")
        try:
            self.cnn_dtype = inference_dtype(cfg.localization.cnn_precision, self.device)
        except ValueError as e:
            raise ValueError(f"localization.cnn_precision: {e}") from None

    # ------------------------------------------------------------ construction
    @classmethod
    def from_bundle(cls, bundle: MapBundle, device, overrides: dict | None = None) -> CrossfireRelocalizer:
        from ...mapping import load_neural_map

        cfg = map_method_config(bundle.manifest, overrides)
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
    def _cnn_input(self, image_rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
        img = cv2.resize(image_rgb, (width, height), interpolation=cv2.INTER_AREA)
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
    def retrieve(self, image_rgb: np.ndarray, top_k: int = 1) -> list[tuple[int, float]]:
        """Top-k rows (index into the retrieval index, cosine) for an image."""
        if self.retrieval is None:
            raise ValueError("this map has no retrieval index (built by an older version?)")
        x = retrieval_input(image_rgb, self.cfg.localization.retrieval_long_side, self.device)
        g = global_descriptor(self.extract(x))
        idx, sims = self.retrieval.query(g, top_k)
        return [(int(i), float(s)) for i, s in zip(idx, sims)]

    def retrieval_priors(
        self, image_rgb: np.ndarray, query_map: torch.Tensor | None = None, cam_desc: Camera | None = None
    ) -> list[PosePrior]:
        """The retrieval hypotheses of an image, best first: of the
        ``localization.retrieval_shortlist`` best views by global descriptor, with the
        query's descriptor map (``query_map`` in ``cam_desc``) and a map with keyframes,
        those with the most keyframe PnP inliers (starting from that PnP pose), else the
        best by global descriptor; ``retrieval_top_k`` of them, each at least
        ``retrieval_distinct_rel`` (of the scene extent) or ``retrieval_distinct_deg``
        from every better one (a near-duplicate would give the same first round)."""
        lc = self.cfg.localization
        k = max(1, lc.retrieval_top_k)
        poses = self.retrieval.w2c_opencv.cpu().numpy()
        refs = self.retrieval.reference.cpu().numpy()
        verify = query_map is not None and self.retrieval.has_keyframes
        n = max(k * RETRIEVAL_CANDIDATES_PER_HYPOTHESIS, lc.retrieval_shortlist if verify else 0)
        candidates = []  # (row, global score, verified inliers, start pose)
        for row, score in self.retrieve(image_rgb, n):
            candidates.append((row, score, 0, poses[row]))
        if verify:
            # The query's descriptor blocks at keyframe resolution: once per frame.
            s = lc.keyframe_stride
            d, h, w = query_map.shape
            blocks = F.normalize(F.avg_pool2d(query_map[None, :, : h // s * s, : w // s * s], s)[0], dim=0)
            blocks = blocks.reshape(d, -1).T
            candidates = sorted((self._verify(c, blocks, cam_desc) for c in candidates), key=lambda c: -c[2])
        limits = (lc.retrieval_distinct_rel * self.extent, lc.retrieval_distinct_deg)
        kept: list[tuple] = []
        for cand in candidates:
            c2w = invert_pose(cand[3])
            near = (pose_error(c2w, invert_pose(other[3])) for other in kept)
            if any(dt <= limits[0] and dr <= limits[1] for dt, dr in near):
                continue
            kept.append(cand)
            if len(kept) == k:
                break
        return [
            PosePrior(w2c, source="retrieval", detail={
                "reference": self.reference_names[refs[row]], "index_row": int(row), "score": score, "rank": r,
                **({"keyframe_inliers": inliers} if verify else {}),
            })
            for r, (row, score, inliers, w2c) in enumerate(kept)
        ]

    def _verify(self, candidate: tuple, blocks: torch.Tensor, cam_desc: Camera) -> tuple:
        """A retrieval candidate scored by matching its keyframe to the query's
        descriptor ``blocks`` (keyframe_stride blocks of ``cam_desc``, row-major) and
        PnP: (row, score, inliers, PnP pose or the view's pose)."""
        lc = self.cfg.localization
        row, score, _, w2c = candidate
        s = lc.keyframe_stride
        kd = self.retrieval.keyframe_descriptors[row]
        ia, ib, _ = mutual_nearest_neighbours(kd, blocks, lc.min_similarity)
        if ia.numel() < lc.min_matches:
            return row, score, 0, w2c
        uv = cam_desc.pixel_centers(stride=s).reshape(-1, 2)[ib.cpu().numpy()]
        pts = self.retrieval.keyframe_points[row][ia].double().cpu().numpy()
        pnp = pnp_ransac(uv, pts, cam_desc, lc.keyframe_pnp)
        if not pnp.success or pnp.num_inliers < lc.min_inliers:
            return row, score, 0, w2c
        return row, score, pnp.num_inliers, pnp.w2c_opencv

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

    # ------------------------------------------------------------ localize
    def _round(self, query_map: torch.Tensor, cam_desc: Camera, w2c_opencv: np.ndarray, stride: int,
               window: int | None, clock, lat: dict) -> tuple[PnPResult | None, IterationRecord, str]:
        """One render -> match -> PnP round from ``w2c_opencv``: the PnP result (None on
        failure), its history record and why it failed ("" on success)."""
        lc = self.cfg.localization
        t0 = clock()
        desc_r, points_r, acc_r = self.render_at(cam_desc, w2c_opencv, stride)
        lat["render"] += (clock() - t0) * 1e3

        t0 = clock()
        valid = acc_r > lc.min_accumulation
        vidx = valid.nonzero().squeeze(-1)
        desc_v = torch.zeros_like(desc_r)
        desc_v[vidx] = desc_r[vidx]  # transparent rays cannot match (zero similarity)
        ir, cell, _ = match_coarse_to_fine(desc_v, query_map, stride, lc.min_similarity, lc.refine_margin, window=window)
        cell_f = cell.float()
        if lc.subpixel_refinement:
            cell_f = cell_f + subpixel_offsets(query_map, cell, desc_v[ir])
        uv_desc = cell_f.flip(-1) + 0.5  # (col, row) of the cell centre in cam_desc pixels
        pts = points_r[ir].double().cpu().numpy()
        uv = uv_desc.double().cpu().numpy()
        lat["match"] += (clock() - t0) * 1e3
        n_matches = int(ir.numel())
        if n_matches < lc.min_matches:
            return None, IterationRecord(None, n_matches, 0), f"{n_matches} matches < min_matches={lc.min_matches}"

        t0 = clock()
        pnp = pnp_ransac(uv, pts, cam_desc, lc.pnp)
        lat["pnp"] += (clock() - t0) * 1e3
        if not pnp.success or pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.start_min_inlier_ratio:
            why = pnp.reason or (
                f"{pnp.num_inliers} inliers of {n_matches} matches "
                f"(min_inliers={lc.min_inliers}, start_min_inlier_ratio={lc.start_min_inlier_ratio})"
            )
            return None, IterationRecord(None, n_matches, pnp.num_inliers), f"PnP failed: {why}"
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(w2c_opencv))
        return pnp, IterationRecord(pnp.w2c_opencv, n_matches, pnp.num_inliers, dt, dr), ""

    def _confident(self, pnp: PnPResult) -> bool:
        lc = self.cfg.localization
        return pnp.num_inliers >= lc.min_inliers and pnp.inlier_ratio >= lc.min_inlier_ratio

    def _refine_by_flow(self, image_rgb: np.ndarray, camera: Camera, best: tuple, result: LocalizationResult) -> tuple:
        """Up to ``flow_refinement_iterations`` rounds of render -> optical flow -> PnP
        from the descriptor estimate (see :mod:`.refinement`); each accepted round is a
        history record. Returns the best (PnP result, matches) so far."""
        lc = self.cfg.localization
        cam_r = refinement_camera(camera, lc.flow_refinement_long_side)
        query = cv2.resize(image_rgb, (cam_r.width, cam_r.height), interpolation=cv2.INTER_AREA)
        for _ in range(lc.flow_refinement_iterations):
            w2c = best[0].w2c_opencv
            out = self.model.render_view(
                cam_r, opengl_c2w_from_opencv_w2c(w2c), ("rgb", "points", "accumulation"),
                num_fine=lc.render_samples, num_coarse=lc.render_coarse_samples or None,
                color_samples=lc.render_head_samples or None,
            )
            fm = flow_matches(
                out["rgb"], out["points"], out["accumulation"], query, min_accumulation=lc.min_accumulation,
                min_gradient=lc.flow_min_gradient, consistency_px=lc.flow_consistency_px,
                max_points=lc.flow_max_points, seed=lc.pnp.seed,
            )
            n = len(fm.uv)
            if n < lc.min_matches:
                break
            pnp = pnp_ransac(fm.uv, fm.points, cam_r, lc.flow_pnp)
            if not pnp.success or pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.flow_min_inlier_ratio:
                break
            dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(w2c))
            result.history.append(IterationRecord(pnp.w2c_opencv, n, pnp.num_inliers, dt, dr))
            best = (pnp, n)
            if dt < lc.converged_translation_rel * self.extent and dr < lc.converged_rotation_deg:
                break
        return best

    @torch.no_grad()
    def localize(self, image_rgb: np.ndarray, camera: Camera, prior: PosePrior | None) -> LocalizationResult:
        lc = self.cfg.localization
        lat: dict[str, float] = defaultdict(float)

        def clock() -> float:  # stage latencies must include the device's queued work
            synchronize(self.device)
            return time.perf_counter()

        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
        if (image_rgb.shape[1], image_rgb.shape[0]) != (camera.width, camera.height):
            raise ValueError(
                f"image is {image_rgb.shape[1]}x{image_rgb.shape[0]} but the camera is {camera.width}x{camera.height}"
            )
        result = LocalizationResult(success=False, method=self.method, prior=prior)
        t0 = clock()
        cam_desc, cam_cnn = descriptor_map_camera(camera, lc.match_long_side, lc.match_short_side)
        query_map = self.extract(self._cnn_input(image_rgb, cam_cnn.width, cam_cnn.height))[0].contiguous()
        lat["extract"] += (clock() - t0) * 1e3
        if prior is None:
            t0 = clock()
            try:
                hypotheses = self.retrieval_priors(image_rgb, query_map, cam_desc)
            except ValueError as e:
                result.reason = f"no prior and no retrieval: {e}"
                return result
            lat["retrieval"] += (clock() - t0) * 1e3
        else:
            hypotheses = [prior]

        def stride_of(it: int) -> int:
            # Coarser blocks before the last iteration: the basin is wide and the cost a
            # quarter; the last one at render_stride sets the precision.
            last = it == lc.max_iterations - 1
            return lc.render_stride if last or lc.early_render_stride <= 0 else lc.early_render_stride

        # First round from every hypothesis; the one with the most inliers goes on.
        first = []
        for h in hypotheses:
            first.append(self._round(query_map, cam_desc, h.w2c_opencv, stride_of(0), None, clock, lat))
        ok = [k for k, (pnp, _, _) in enumerate(first) if pnp is not None]
        win = max(ok, key=lambda k: first[k][0].num_inliers) if ok else 0
        result.prior = hypotheses[win]
        if len(hypotheses) > 1:
            result.prior.detail["hypotheses"] = [
                {"reference": h.detail.get("reference"), "inliers": rec.num_inliers, "matches": rec.num_matches}
                for h, (_, rec, _) in zip(hypotheses, first)
            ]
        pnp, rec, why = first[win]
        result.history.append(rec)
        best = None
        # Success needs one descriptor round at the full inlier ratio (see the config).
        verified = pnp is not None and self._confident(pnp)
        if pnp is None:
            result.reason = f"iteration 1: {why}" + (f" (best of {len(hypotheses)} retrieval hypotheses)" if len(hypotheses) > 1 else "")
        else:
            best = (pnp, rec.num_matches)
        w2c = pnp.w2c_opencv if pnp is not None else None
        for it in range(1, lc.max_iterations):
            if best is None or (rec.pose_update_m < lc.converged_translation_rel * self.extent
                                and rec.pose_update_deg < lc.converged_rotation_deg):
                break
            # The last iteration starts from this frame's own estimate: guided matching.
            window = None
            if it == lc.max_iterations - 1 and lc.guided_radius_cells > 0:
                window = -(-lc.guided_radius_cells // stride_of(it))  # cells -> blocks, rounded up
            pnp, rec, why = self._round(query_map, cam_desc, w2c, stride_of(it), window, clock, lat)
            result.history.append(rec)
            if pnp is None:
                result.reason = f"iteration {it + 1}: {why}"
                break
            best = (pnp, rec.num_matches)
            w2c = pnp.w2c_opencv
            verified = verified or self._confident(pnp)

        if best is not None and not verified:
            last = result.history[-1]
            result.reason = (
                f"unsure: no descriptor round reached min_inlier_ratio={lc.min_inlier_ratio} "
                f"(last: {last.num_inliers} inliers of {last.num_matches} matches)"
            )
            best = None
        if best is not None and lc.flow_refinement_iterations > 0:
            t0 = clock()
            best = self._refine_by_flow(image_rgb, camera, best, result)
            lat["refine"] += (clock() - t0) * 1e3

        result.iterations = len(result.history)
        result.latency_ms = {k: lat[k] for k in STAGES if k in lat}
        if best is None:
            if result.history:  # report what the last attempt got, for status/plots
                result.num_matches = result.history[-1].num_matches
                result.num_inliers = result.history[-1].num_inliers
            return result
        pnp, n_matches = best
        result.w2c_opencv = pnp.w2c_opencv
        result.covariance = pnp.covariance
        result.num_matches = n_matches
        result.num_inliers = pnp.num_inliers
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(result.prior.w2c_opencv))
        if dt > lc.max_prior_translation_rel * self.extent or dr > lc.max_prior_rotation_deg:
            result.reason = (
                f"implausible: the estimate is {dt:.2f} m / {dr:.1f} deg from the prior "
                f"(limits {lc.max_prior_translation_rel * self.extent:.2f} m / {lc.max_prior_rotation_deg} deg)"
            )
            return result
        # A later iteration that failed does not void an earlier good estimate.
        result.success = True
        result.reason = ""
        return result


def make_relocalizer(bundle: MapBundle, device, overrides: dict | None = None) -> CrossfireRelocalizer:
    return CrossfireRelocalizer.from_bundle(bundle, torch.device(device), overrides)


__all__ = ["STAGES", "CrossfireRelocalizer", "make_relocalizer"]
