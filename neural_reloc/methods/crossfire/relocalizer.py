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

from ...device import inference_dtype, synchronize
from ...geometry.camera import Camera
from ...geometry.frames import opencv_w2c_from_opengl_c2w, opengl_c2w_from_opencv_w2c
from ...geometry.pnp import pnp_ransac
from ...geometry.se3 import invert_pose, pose_error
from ...map_bundle import MapBundle, MapError
from ..base import IterationRecord, LocalizationResult, PosePrior, Relocalizer
from ..registry import map_method_config
from .config import CrossfireConfig
from .feature_extractor import FeatureExtractor
from .matching import match_coarse_to_fine, subpixel_offsets
from .retrieval import RetrievalIndex, global_descriptor, retrieval_input
from .trainer import DESCRIPTOR_HEAD, descriptor_map_camera

STAGES = ("retrieval", "extract", "render", "match", "pnp")


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
    def from_bundle(cls, bundle: MapBundle, device, overrides: dict | None = None) -> "CrossfireRelocalizer":
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
        retrieval = None
        if "descriptors" in state:
            retrieval = RetrievalIndex(*state["descriptors"].shape)
            retrieval.load_state_dict({"descriptors": state["descriptors"].float()})
            retrieval = retrieval.to(device)
        refs = bundle.references
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
        """Top-k reference views (index, cosine) for an image, from the map's index."""
        if self.retrieval is None:
            raise ValueError("this map has no retrieval index (built by an older version?)")
        x = retrieval_input(image_rgb, self.cfg.localization.retrieval_long_side, self.device)
        g = global_descriptor(self.extract(x))
        idx, sims = self.retrieval.query(g, top_k)
        return [(int(i), float(s)) for i, s in zip(idx, sims)]

    def retrieval_prior(self, image_rgb: np.ndarray) -> PosePrior:
        (i, s), = self.retrieve(image_rgb, 1)
        return PosePrior(self._ref_w2c[i], source="retrieval",
                         detail={"reference": self.reference_names[i], "score": s})

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
        if prior is None:
            t0 = clock()
            try:
                prior = self.retrieval_prior(image_rgb)
            except ValueError as e:
                result.reason = f"no prior and no retrieval: {e}"
                return result
            lat["retrieval"] += (clock() - t0) * 1e3
            result.prior = prior

        t0 = clock()
        cam_desc, cam_cnn = descriptor_map_camera(camera, lc.match_long_side, lc.match_short_side)
        query_map = self.extract(self._cnn_input(image_rgb, cam_cnn.width, cam_cnn.height))[0].contiguous()
        lat["extract"] += (clock() - t0) * 1e3

        w2c = prior.w2c_opencv.copy()
        best = None
        for it in range(lc.max_iterations):
            t0 = clock()
            # Coarser blocks before the last iteration: the basin is wide and the cost a
            # quarter; the last one at render_stride sets the precision.
            last = it == lc.max_iterations - 1
            stride = lc.render_stride if last or lc.early_render_stride <= 0 else lc.early_render_stride
            desc_r, points_r, acc_r = self.render_at(cam_desc, w2c, stride)
            lat["render"] += (clock() - t0) * 1e3

            t0 = clock()
            valid = acc_r > lc.min_accumulation
            vidx = valid.nonzero().squeeze(-1)
            desc_v = torch.zeros_like(desc_r)
            desc_v[vidx] = desc_r[vidx]  # transparent rays cannot match (zero similarity)
            # The last iteration starts from this frame's own estimate: guided matching.
            window = None
            if last and best is not None and lc.guided_radius_cells > 0:
                window = -(-lc.guided_radius_cells // stride)  # cells -> blocks, rounded up
            ir, cell, _ = match_coarse_to_fine(
                desc_v, query_map, stride, lc.min_similarity, lc.refine_margin, window=window
            )
            cell_f = cell.float()
            if lc.subpixel_refinement:
                cell_f = cell_f + subpixel_offsets(query_map, cell, desc_v[ir])
            uv_desc = cell_f.flip(-1) + 0.5  # (col, row) of the cell centre in cam_desc pixels
            pts = points_r[ir].double().cpu().numpy()
            uv = uv_desc.double().cpu().numpy()
            lat["match"] += (clock() - t0) * 1e3
            n_matches = int(ir.numel())
            if n_matches < lc.min_matches:
                result.history.append(IterationRecord(None, n_matches, 0))
                result.reason = f"iteration {it + 1}: {n_matches} matches < min_matches={lc.min_matches}"
                break

            t0 = clock()
            pnp = pnp_ransac(uv, pts, cam_desc, lc.pnp)
            lat["pnp"] += (clock() - t0) * 1e3
            if not pnp.success or pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.min_inlier_ratio:
                result.history.append(IterationRecord(None, n_matches, pnp.num_inliers))
                why = pnp.reason or (
                    f"{pnp.num_inliers} inliers of {n_matches} matches "
                    f"(min_inliers={lc.min_inliers}, min_inlier_ratio={lc.min_inlier_ratio})"
                )
                result.reason = f"iteration {it + 1}: PnP failed: {why}"
                break
            dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(w2c))
            result.history.append(IterationRecord(pnp.w2c_opencv, n_matches, pnp.num_inliers, dt, dr))
            best = (pnp, n_matches)
            w2c = pnp.w2c_opencv
            if dt < lc.converged_translation_rel * self.extent and dr < lc.converged_rotation_deg:
                break

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
        dt, dr = pose_error(invert_pose(pnp.w2c_opencv), invert_pose(prior.w2c_opencv))
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


__all__ = ["CrossfireRelocalizer", "make_relocalizer", "STAGES"]
