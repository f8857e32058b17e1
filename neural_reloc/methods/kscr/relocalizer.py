"""KSCR localization: the query's keypoints -> D2S scene coordinates and reliabilities
-> the most reliable ones -> PnP + RANSAC -> pose and covariance. Needs no prior (a
kidnapped robot relocalizes from one image): a prior passed in is reported, not used.
The refinement by the map is CROSSFIRE or NeRFMatch started from this pose (the
``global_prior`` of :func:`neural_reloc.map_loading.load_relocalizer`)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import camera_center_from_opencv_w2c, opencv_w2c_from_opengl_c2w
from ...geometry.pnp import pnp_ransac
from ...map_bundle import MapBundle, MapError
from ...map_loading import map_method_config
from ..base import IterationRecord, LocalizationResult, PosePrior, Relocalizer
from ..common.iterative import check_query
from .config import KscrConfig
from .trainer import REGRESSOR, make_model

STAGES = ("extract", "regress", "pnp")


class KscrRelocalizer(Relocalizer):
    method = "kscr"

    def __init__(self, model, cfg: KscrConfig, reference_names: list[str], reference_c2w_opengl: np.ndarray):
        self.model = model.eval()
        self.cfg = cfg
        self.loc = cfg.localization
        self.loc.pnp.validate()
        self.device = next(model.parameters()).device
        from ...synthesis.features import make_extractor

        self.extractor = make_extractor(cfg.synthesis.features.extractor, cfg.synthesis.features)
        self.reference_names = list(reference_names)
        self._ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in reference_c2w_opengl])
        self._ref_centers = np.asarray(reference_c2w_opengl)[:, :3, 3]
        self._ref_diagonal = float(np.linalg.norm(np.ptp(self._ref_centers, axis=0)))

    @classmethod
    def from_bundle(cls, bundle: MapBundle, device, overrides: dict | None = None) -> KscrRelocalizer:
        cfg = map_method_config(bundle.manifest, overrides, method=cls.method)
        state = bundle.module_state(REGRESSOR)
        if "input.weight" not in state:
            raise MapError(f"{bundle.path}: the kscr component has no D2S weights ({REGRESSOR}.input.weight)")
        model = make_model(cfg, int(state["input.weight"].shape[1]))
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: D2S weights do not match the kscr config: {e}") from e
        refs = bundle.references
        return cls(model.to(device), cfg, refs.names, refs.c2w_opengl)

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return self._ref_w2c

    @torch.no_grad()
    def regress(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Keypoints (N, 2) px, their predicted world points (N, 3) and reliabilities (N,),
        with the extraction and regression times (ms)."""
        t0 = time.perf_counter()
        kp, desc, _ = self.extractor.extract(image_rgb)
        t1 = time.perf_counter()
        if len(kp) == 0:
            return kp, np.zeros((0, 3)), np.zeros(0), {"extract": (t1 - t0) * 1e3}
        x = torch.from_numpy(np.asarray(desc, np.float32))[None].to(self.device)
        xyz, logit = self.model(x)
        xyz, rel = xyz[0].double().cpu().numpy(), torch.sigmoid(logit[0]).double().cpu().numpy()
        return kp, xyz, rel, {"extract": (t1 - t0) * 1e3, "regress": (time.perf_counter() - t1) * 1e3}

    def localize(self, image_rgb: np.ndarray, camera: Camera, prior: PosePrior | None) -> LocalizationResult:
        lc = self.loc
        image_rgb = check_query(image_rgb, camera)
        result = LocalizationResult(success=False, method=self.method, prior=prior, iterations=1)
        long_side = self.cfg.image_long_side
        if long_side and max(camera.width, camera.height) > long_side:  # the resolution it was trained at
            camera = camera.fit_within(long_side, long_side)
            image_rgb = cv2.resize(image_rgb, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
        kp, xyz, rel, lat = self.regress(image_rgb)
        order = np.argsort(-rel, kind="stable")
        order = order[rel[order] >= lc.min_reliability][: lc.max_correspondences]
        n = len(order)

        def done(reason: str, n_inliers: int = 0) -> LocalizationResult:
            result.reason = reason
            result.num_matches, result.num_inliers = n, n_inliers
            result.history = [IterationRecord(result.w2c_opencv, n, n_inliers)]
            result.latency_ms = {k: lat[k] for k in STAGES if k in lat}
            return result

        if n < max(lc.min_matches, 1):
            return done(f"{n} keypoints with reliability >= {lc.min_reliability} < min_matches={lc.min_matches} "
                        f"({len(kp)} query keypoints)")
        t0 = time.perf_counter()
        pnp = pnp_ransac(np.asarray(kp, np.float64)[order], xyz[order], camera, lc.pnp)
        lat["pnp"] = (time.perf_counter() - t0) * 1e3
        if not pnp.success:
            return done(f"PnP failed: {pnp.reason}", pnp.num_inliers)
        if pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.min_inlier_ratio:
            return done(f"{pnp.num_inliers} PnP inliers of {n} regressed keypoints (min_inliers={lc.min_inliers}, "
                        f"min_inlier_ratio={lc.min_inlier_ratio})", pnp.num_inliers)
        centre = camera_center_from_opencv_w2c(pnp.w2c_opencv)
        gap = float(np.min(np.linalg.norm(self._ref_centers - centre, axis=1)))
        if gap > lc.max_reference_distance_rel * self._ref_diagonal:
            return done(f"implausible pose: its camera is {gap:.3g} from the nearest mapping camera "
                        f"(max_reference_distance_rel={lc.max_reference_distance_rel} of the mapping cameras' "
                        f"extent {self._ref_diagonal:.3g})", pnp.num_inliers)
        result.success = True
        result.w2c_opencv = pnp.w2c_opencv
        result.covariance = None if pnp.covariance is None else pnp.covariance * lc.covariance_scale
        return done("", pnp.num_inliers)


def make_relocalizer(bundle: MapBundle, device, overrides: dict | None = None, method: str = "kscr"):
    return KscrRelocalizer.from_bundle(bundle, torch.device(device), overrides)


__all__ = ["STAGES", "KscrRelocalizer", "make_relocalizer"]
