"""Classical localization (hloc's ``localize_sfm``): retrieve, match, 2D-3D, PnP.

SIFT + RootSIFT of the query; the mapping images to match come from VLAD retrieval
(no prior: the top-k, and the top-1's pose becomes the reported retrieval prior) or
from the prior pose (its k nearest mapping images); the query is matched to each
(mutual NN + ratio test); its keypoints matched to keypoints with a 3D point give 2D-3D
correspondences, merged over the images as hloc does (every distinct (query keypoint,
3D point) pair once); PnP + RANSAC (:func:`neural_reloc.geometry.pnp.pnp_ransac`) gives
the OpenCV world-to-camera pose ``w2c_opencv`` and its covariance. One pass, no
iterations: the prior only chooses the mapping images.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch

from ...geometry.camera import Camera
from ...geometry.frames import opencv_w2c_from_opengl_c2w
from ...geometry.pnp import pnp_ransac
from ...map_bundle import MapBundle, ReferenceViews
from ...map_loading import map_method_config
from ...sfm.features import Features, SiftExtractor
from ...sfm.matching import mutual_nn_ratio, torch_threads
from ...sfm.pairs import nearest_views
from ..base import IterationRecord, LocalizationResult, PosePrior, Relocalizer
from .config import ClassicalConfig
from .retrieval import top_k, vlad
from .storage import PREFIX, ClassicalMap

STAGES = ("retrieval", "extract", "match", "pnp")


class ClassicalRelocalizer(Relocalizer):
    method = "classical"

    def __init__(self, cmap: ClassicalMap, cfg: ClassicalConfig, references: ReferenceViews):
        lc = cfg.localization
        if lc.num_prior_neighbors < 1 or cfg.retrieval.top_k < 1:
            raise ValueError("localization.num_prior_neighbors and retrieval.top_k must be at least 1")
        if lc.min_matches < 0 or lc.min_inliers < 0 or not 0.0 <= lc.min_inlier_ratio <= 1.0:
            raise ValueError("localization: min_matches and min_inliers must be >= 0, min_inlier_ratio in [0, 1]")
        lc.pnp.validate()
        if cmap.num_images != len(references.names):
            raise ValueError(f"the map has {cmap.num_images} images but {len(references.names)} reference views")
        self.map = cmap
        self.cfg = cfg
        self.reference_names = list(references.names)
        self._ref_w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in references.c2w_opengl])
        self.extractor = SiftExtractor(cfg.features)
        self._ref_desc = [torch.from_numpy(cmap.descriptors(i)) for i in range(cmap.num_images)]

    @classmethod
    def from_bundle(cls, bundle: MapBundle, device=None, overrides: dict | None = None) -> ClassicalRelocalizer:
        """The relocalizer of a classical map bundle (``device`` is unused: CPU)."""
        cfg = map_method_config(bundle.manifest, overrides, method=cls.method)
        refs = bundle.references
        cmap = ClassicalMap.from_tensors(bundle.module_state(PREFIX), len(refs.names), where=str(bundle.path))
        return cls(cmap, cfg, refs)

    @property
    def reference_poses_w2c_opencv(self) -> np.ndarray:
        return self._ref_w2c

    # ------------------------------------------------------------ stages
    def retrieve(self, features: Features, k: int) -> list[tuple[int, float]]:
        """The ``k`` mapping images most similar to a query (index, cosine), best first."""
        q = vlad(features.descriptors, self.map.vocabulary, self.cfg.retrieval.power_alpha)
        return top_k(q, self.map.vlad, k)

    def correspondences(self, features: Features, refs: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(uv (M, 2) query pixels, xyz (M, 3) world points): the distinct (query keypoint,
        3D point) pairs of the query's matches to the mapping images ``refs``."""
        q_desc = torch.from_numpy(features.descriptors)
        pairs = []
        for r in refs:
            with torch_threads(self.cfg.matching.num_threads):
                m = mutual_nn_ratio(q_desc, self._ref_desc[r], self.cfg.localization.ratio_threshold)
            pid = self.map.point3d_ids[r][m[:, 1]]
            has = pid >= 0
            pairs.append(np.stack([m[has, 0], pid[has]], axis=1))
        pairs = np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), dtype=np.int64)
        return features.keypoints[pairs[:, 0]], self.map.points3d[pairs[:, 1]]

    # ------------------------------------------------------------ localize
    def localize(self, image_rgb: np.ndarray, camera: Camera, prior: PosePrior | None) -> LocalizationResult:
        lc = self.cfg.localization
        lat: dict[str, float] = defaultdict(float)
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
        if (image_rgb.shape[1], image_rgb.shape[0]) != (camera.width, camera.height):
            raise ValueError(
                f"image is {image_rgb.shape[1]}x{image_rgb.shape[0]} but the camera is {camera.width}x{camera.height}"
            )
        result = LocalizationResult(success=False, method=self.method, prior=prior, iterations=1)

        def done(reason: str, n_matches: int = 0, n_inliers: int = 0) -> LocalizationResult:
            result.reason = reason
            result.num_matches, result.num_inliers = n_matches, n_inliers
            result.history = [IterationRecord(None, n_matches, n_inliers)]
            result.latency_ms = {k: lat[k] for k in STAGES if k in lat}
            return result

        t0 = time.perf_counter()
        feats = self.extractor.extract(image_rgb)
        lat["extract"] += (time.perf_counter() - t0) * 1e3
        if len(feats) == 0:
            return done("no SIFT keypoints in the query image (blank or textureless?)")

        t0 = time.perf_counter()
        if prior is None:
            ranked = self.retrieve(feats, self.cfg.retrieval.top_k)
            refs = [i for i, _ in ranked]
            (best, score) = ranked[0]
            result.prior = PosePrior(
                self._ref_w2c[best], source="retrieval",
                detail={"reference": self.reference_names[best], "score": score},
            )
        else:
            refs = [int(i) for i in nearest_views(
                prior.w2c_opencv, self._ref_w2c, lc.num_prior_neighbors, self.cfg.matching.max_view_angle_deg
            )]
        lat["retrieval"] += (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        uv, xyz = self.correspondences(feats, refs)
        lat["match"] += (time.perf_counter() - t0) * 1e3
        n = len(uv)
        if n < max(lc.min_matches, 1):
            return done(f"{n} 2D-3D matches < min_matches={lc.min_matches} "
                        f"({len(feats)} query keypoints, {len(refs)} mapping images)", n)

        t0 = time.perf_counter()
        pnp = pnp_ransac(uv, xyz, camera, lc.pnp)
        lat["pnp"] += (time.perf_counter() - t0) * 1e3
        if not pnp.success:
            return done(f"PnP failed: {pnp.reason}", n, pnp.num_inliers)
        if pnp.num_inliers < lc.min_inliers or pnp.inlier_ratio < lc.min_inlier_ratio:
            return done(
                f"{pnp.num_inliers} PnP inliers of {n} 2D-3D matches "
                f"(min_inliers={lc.min_inliers}, min_inlier_ratio={lc.min_inlier_ratio})",
                n, pnp.num_inliers,
            )
        result.success = True
        result.w2c_opencv = pnp.w2c_opencv
        result.covariance = pnp.covariance
        result.history = [IterationRecord(pnp.w2c_opencv, n, pnp.num_inliers)]
        result.num_matches, result.num_inliers = n, pnp.num_inliers
        result.latency_ms = {k: lat[k] for k in STAGES if k in lat}
        return result


def make_relocalizer(bundle: MapBundle, device=None, overrides: dict | None = None, method: str = "classical") -> ClassicalRelocalizer:
    return ClassicalRelocalizer.from_bundle(bundle, device, overrides)


__all__ = ["STAGES", "ClassicalRelocalizer", "make_relocalizer"]
