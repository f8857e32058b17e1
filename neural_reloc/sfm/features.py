"""SIFT keypoints (pycolmap, CPU) with RootSIFT descriptors.

Keypoint coordinates: pycolmap 4.2.1's ``Sift.extract`` returns (x, y, scale,
orientation) in COLMAP's pixel convention, the centre of pixel (col i, row j) at
(i + 0.5, j + 0.5): a Gaussian blob centred on pixel (50, 40) is detected at
(50.5, 40.5) (test_classical checks it). That is :class:`~neural_reloc.geometry.camera.Camera`'s
convention, so keypoints are used as camera pixels unchanged; when an image is shrunk
to ``max_long_side`` first, its keypoints are scaled back by the size ratio, exact in
this convention.

RootSIFT (Arandjelovic & Zisserman 2012): L1-normalize the SIFT descriptor, take the
element-wise square root; the result has unit L2 norm and its dot products are the
Hellinger kernel of the original histograms. pycolmap is asked for plain (L2) SIFT and
the RootSIFT step is done here, explicitly.

Descriptors are stored in a map as uint8, ``round(512 * d)`` clipped to 255 (COLMAP's
quantization of the same descriptors), and renormalized when loaded.

Import order: ``cv2`` must be loaded before ``pycolmap``. With pycolmap 4.2.1 and
OpenCV 5.1 wheels, importing pycolmap first makes every later PNG encode of cv2
(``imwrite``/``imencode``) abort the process (double free in zlib's ``deflateEnd``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2  # must be loaded before pycolmap, see the module docstring
import numpy as np

from .config import FeatureConfig

#: Scale of the uint8 descriptor quantization (COLMAP's): RootSIFT components are at
#: most ~0.5 in practice, 512 * 0.5 = 256 just fits a byte.
DESCRIPTOR_QUANTIZATION_SCALE = 512.0
#: Guards the L1/L2 normalizations of all-zero descriptors (a flat patch).
NORM_EPS = 1e-12
DESCRIPTOR_DIM = 128


@dataclass
class Features:
    """Keypoints and descriptors of one image."""

    #: (N, 2) float64 pixel coordinates (x, y) in the image's camera, pixel centres at +0.5.
    keypoints: np.ndarray
    #: (N, 128) float32 RootSIFT descriptors (unit L2 norm).
    descriptors: np.ndarray

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT of SIFT descriptors (N, 128): sqrt(d / |d|_1), float32, unit L2 norm."""
    d = np.maximum(np.asarray(descriptors, dtype=np.float32), 0.0)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), NORM_EPS)
    return np.sqrt(d)


def quantize_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """uint8 storage form of unit RootSIFT descriptors (see the module docstring)."""
    q = np.rint(np.asarray(descriptors, dtype=np.float32) * DESCRIPTOR_QUANTIZATION_SCALE)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_descriptors(q: np.ndarray) -> np.ndarray:
    """float32 unit descriptors from their uint8 storage form."""
    d = np.asarray(q, dtype=np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), NORM_EPS)


def grayscale_float(image_rgb: np.ndarray) -> np.ndarray:
    """SIFT's input: grayscale float32 in [0, 1], C-contiguous."""
    gray = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(gray.astype(np.float32) / 255.0)


class SiftExtractor:
    """SIFT + RootSIFT with the settings of a :class:`FeatureConfig`."""

    def __init__(self, cfg: FeatureConfig):
        problems = []
        if cfg.max_num_features <= 0:
            problems.append(f"max_num_features={cfg.max_num_features} must be positive")
        if cfg.max_long_side < 0:
            problems.append(f"max_long_side={cfg.max_long_side} must be 0 (off) or positive")
        if cfg.num_octaves <= 0 or cfg.octave_resolution <= 0:
            problems.append("num_octaves and octave_resolution must be positive")
        if not cfg.peak_threshold > 0 or not cfg.edge_threshold > 0:
            problems.append("peak_threshold and edge_threshold must be positive")
        if cfg.max_num_orientations <= 0:
            problems.append(f"max_num_orientations={cfg.max_num_orientations} must be positive")
        if problems:
            raise ValueError("features: " + "; ".join(problems))
        self.cfg = cfg
        self._sift = None

    def _extractor(self):
        if self._sift is None:
            import pycolmap

            c = self.cfg
            sift = pycolmap.SiftExtractionOptions()
            sift.max_num_features = int(c.max_num_features)
            sift.first_octave = int(c.first_octave)
            sift.num_octaves = int(c.num_octaves)
            sift.octave_resolution = int(c.octave_resolution)
            sift.peak_threshold = float(c.peak_threshold)
            sift.edge_threshold = float(c.edge_threshold)
            sift.max_num_orientations = int(c.max_num_orientations)
            sift.upright = bool(c.upright)
            sift.normalization = pycolmap.Normalization.L2  # RootSIFT is applied here
            options = pycolmap.FeatureExtractionOptions()
            options.sift = sift
            with warnings.catch_warnings():
                # pycolmap 4.2 deprecates Sift in favour of FeatureExtractor.create, whose
                # numpy entry point returns opaque keypoint objects; Sift still works.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._sift = pycolmap.Sift(options, pycolmap.Device.cpu)
        return self._sift

    def extract(self, image_rgb: np.ndarray) -> Features:
        """Keypoints (in ``image_rgb``'s pixel coordinates) and RootSIFT descriptors."""
        h, w = image_rgb.shape[:2]
        gray = grayscale_float(image_rgb)
        cap = int(self.cfg.max_long_side)
        sx = sy = 1.0
        if cap and max(w, h) > cap:
            s = cap / max(w, h)
            w2, h2 = max(1, round(w * s)), max(1, round(h * s))
            gray = np.ascontiguousarray(cv2.resize(gray, (w2, h2), interpolation=cv2.INTER_AREA))
            sx, sy = w / w2, h / h2
        kp, desc = self._extractor().extract(gray)
        kp = np.asarray(kp, dtype=np.float64).reshape(-1, 4)[:, :2] * np.array([sx, sy])
        desc = np.asarray(desc, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM)
        return Features(keypoints=kp, descriptors=root_sift(desc))
