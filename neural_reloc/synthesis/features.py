"""Pluggable local features for the synthesis pipeline and the query side: an extractor
and its matcher, registered by name.

* ``sift``: OpenCV SIFT (strongest responses first, up to the keypoint budget), RootSIFT
  descriptors (:func:`~neural_reloc.sfm.features.root_sift`), matched by
  mutual nearest neighbours + Lowe's ratio test
  (:func:`~neural_reloc.sfm.matching.mutual_nn_ratio`). Weights-free.
* ``superpoint_lightglue``: SuperPoint + LightGlue, the paper's pair
  (:mod:`neural_reloc.synthesis.superpoint_lightglue`; needs kornia and two weights files).

Every extractor's ``extract(image_rgb)`` returns ``(keypoints_px, descriptors, scores)``:
(N, 2) float32 pixel coordinates with the centre of pixel (col i, row j) at
(i + 0.5, j + 0.5) (the convention of :mod:`neural_reloc.sfm.features` and
:class:`~neural_reloc.geometry.camera.Camera`), (N, D) float32 descriptors, (N,) float32
scores, strongest first. A matcher's ``match(a, b)`` takes two :class:`ImageFeatures`
and returns (M, 2) index pairs (i in a, j in b).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..sfm.features import root_sift
from ..sfm.matching import mutual_nn_ratio, torch_threads
from .config import FeatureSettings, SynthesisConfig

#: OpenCV reports keypoints with pixel centres at integer coordinates; ours are at +0.5.
OPENCV_TO_PIXEL_CENTER = 0.5
#: torch threads of descriptor matching: small similarity matrices lose more to thread
#: synchronization than they gain on a shared CPU (as in the classical method).
MATCH_THREADS = 1


@dataclass
class ImageFeatures:
    keypoints_px: np.ndarray  # (N, 2) float32
    descriptors: np.ndarray  # (N, D) float32
    scores: np.ndarray  # (N,) float32
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.keypoints_px.shape[0])

    def subset(self, idx: np.ndarray) -> ImageFeatures:
        return ImageFeatures(self.keypoints_px[idx], self.descriptors[idx], self.scores[idx], self.width, self.height)


def extract_features(extractor, image_rgb: np.ndarray) -> ImageFeatures:
    kp, desc, scores = extractor.extract(image_rgb)
    return ImageFeatures(kp, desc, scores, int(image_rgb.shape[1]), int(image_rgb.shape[0]))


class SiftExtractor:
    """OpenCV SIFT keypoints with RootSIFT descriptors."""

    def __init__(self, cfg: FeatureSettings):
        self.cfg = cfg
        # Precise upscaling: without it the 2x-upsampled first octave puts every keypoint
        # a quarter pixel off, down and right (a blob centred on pixel (50, 40) was
        # detected at (50.24, 40.24) in OpenCV's convention; test_synthesis checks it).
        self._sift = cv2.SIFT_create(nfeatures=int(cfg.max_keypoints),
                                     contrastThreshold=float(cfg.sift_contrast_threshold),
                                     enable_precise_upscale=True)

    def extract(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"sift: expected an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
        gray = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)
        kps, desc = self._sift.detectAndCompute(gray, None)
        if not kps:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros(0, np.float32)
        xy = np.array([k.pt for k in kps], dtype=np.float64) + OPENCV_TO_PIXEL_CENTER
        resp = np.array([k.response for k in kps], dtype=np.float64)
        # Strongest first, ties by position: a deterministic order and an exact budget
        # (OpenCV may return a few more than nfeatures: extra orientations, ties).
        order = np.lexsort((xy[:, 1], xy[:, 0], -resp))[: int(self.cfg.max_keypoints)]
        return (xy[order].astype(np.float32), root_sift(desc[order]).astype(np.float32),
                resp[order].astype(np.float32))


class MutualNNRatioMatcher:
    """Mutual nearest neighbours + Lowe's ratio test on unit descriptors."""

    def __init__(self, cfg: FeatureSettings):
        self.ratio = float(cfg.ratio_threshold)

    def match(self, a: ImageFeatures, b: ImageFeatures) -> np.ndarray:
        with torch_threads(MATCH_THREADS):
            return mutual_nn_ratio(a.descriptors, b.descriptors, self.ratio)


def _superpoint_extractor(cfg: FeatureSettings):
    from .superpoint_lightglue import SuperPointExtractor

    return SuperPointExtractor(cfg)


def _lightglue_matcher(cfg: FeatureSettings):
    from .superpoint_lightglue import LightGlueMatcher

    return LightGlueMatcher(cfg)


#: name -> (extractor factory, matcher factory)
REGISTRY: dict[str, tuple[Callable, Callable]] = {
    "sift": (SiftExtractor, MutualNNRatioMatcher),
    "superpoint_lightglue": (_superpoint_extractor, _lightglue_matcher),
}


def _settings(cfg: FeatureSettings | SynthesisConfig | None) -> FeatureSettings:
    if cfg is None:
        return FeatureSettings()
    return cfg.features if isinstance(cfg, SynthesisConfig) else cfg


def _entry(name: str) -> tuple[Callable, Callable]:
    if name not in REGISTRY:
        raise ValueError(f"unknown feature extractor {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_extractor(name: str, cfg: FeatureSettings | SynthesisConfig | None = None):
    """The extractor registered as ``name`` with the settings of ``cfg``."""
    return _entry(name)[0](_settings(cfg))


def make_matcher(name: str, cfg: FeatureSettings | SynthesisConfig | None = None):
    """The matcher that goes with extractor ``name``."""
    return _entry(name)[1](_settings(cfg))


def available_extractors() -> list[str]:
    return list(REGISTRY)


__all__ = ["ImageFeatures", "MutualNNRatioMatcher", "SiftExtractor", "available_extractors", "extract_features",
           "make_extractor", "make_matcher"]
