"""The classical map's content and its tensors in a map bundle (prefix ``classical.``).

Per mapping image i (in the order of the bundle's reference views), its keypoints are
rows ``keypoint_offsets[i]:keypoint_offsets[i + 1]`` of the concatenated arrays:

=====================  ==============  =================================================
``keypoints``          (K, 2) float32  pixels of the reference camera (Camera convention),
                                       stored bit for bit as int32 (see below)
``descriptors``        (K, 128) uint8  quantized RootSIFT (features.quantize_descriptors)
``point3d_ids``        (K,) int64      index into ``points3d``, -1 for none
``keypoint_offsets``   (N + 1,) int64
``points3d``           (P, 3) float64  world points, stored bit for bit as int64
``vocabulary``         (W, 128)        VLAD visual words
``vlad``               (N, W * 128)    the mapping images' VLAD vectors
=====================  ==============  =================================================

:func:`neural_reloc.map_bundle.write_map` stores floating tensors of 2^20 elements or
more as float16; keypoints and points must not lose that precision in large maps, so
they are stored as integer *views* of their float bits (lossless, no scaling). The
VLAD vectors may become float16 there, which retrieval tolerates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...map_bundle import MapError
from ...sfm.features import DESCRIPTOR_DIM, dequantize_descriptors

PREFIX = "classical"
REQUIRED = ("keypoints", "descriptors", "point3d_ids", "keypoint_offsets", "points3d", "vocabulary", "vlad")


@dataclass
class ClassicalMap:
    #: Per mapping image: (K_i, 2) float64 keypoints, (K_i, 128) uint8 descriptors and
    #: (K_i,) int64 point ids (-1: no 3D point).
    keypoints: list[np.ndarray]
    descriptors_uint8: list[np.ndarray]
    point3d_ids: list[np.ndarray]
    #: (P, 3) float64 world points.
    points3d: np.ndarray
    #: (W, 128) float32 visual words and (N, W * 128) float32 VLAD vectors.
    vocabulary: np.ndarray
    vlad: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.keypoints)

    def descriptors(self, i: int) -> np.ndarray:
        """float32 unit RootSIFT descriptors of mapping image i."""
        return dequantize_descriptors(self.descriptors_uint8[i])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        offsets = np.concatenate([[0], np.cumsum([len(k) for k in self.keypoints])]).astype(np.int64)
        cat = lambda arrs, shape, dt: np.concatenate(arrs).astype(dt) if arrs else np.zeros(shape, dt)
        kps = np.ascontiguousarray(cat(self.keypoints, (0, 2), np.float32))
        pts = np.ascontiguousarray(np.asarray(self.points3d, dtype=np.float64).reshape(-1, 3))
        return {
            "keypoints": torch.from_numpy(kps.view(np.int32)),
            "descriptors": torch.from_numpy(cat(self.descriptors_uint8, (0, DESCRIPTOR_DIM), np.uint8)),
            "point3d_ids": torch.from_numpy(cat(self.point3d_ids, (0,), np.int64)),
            "keypoint_offsets": torch.from_numpy(offsets),
            "points3d": torch.from_numpy(pts.view(np.int64)),
            "vocabulary": torch.from_numpy(np.asarray(self.vocabulary, dtype=np.float32)),
            "vlad": torch.from_numpy(np.asarray(self.vlad, dtype=np.float32)),
        }

    @classmethod
    def from_tensors(cls, state: dict[str, torch.Tensor], num_images: int, where: str = "map") -> ClassicalMap:
        """The map from a bundle's ``classical.*`` tensors; MapError naming what is wrong."""
        missing = [k for k in REQUIRED if k not in state]
        if missing:
            raise MapError(f"{where}: classical map tensors {missing} are missing (not a classical map, or corrupt)")
        kps = state["keypoints"].numpy().view(np.float32).reshape(-1, 2).astype(np.float64)
        desc = state["descriptors"].numpy()
        ids = state["point3d_ids"].numpy().astype(np.int64)
        offsets = state["keypoint_offsets"].numpy().astype(np.int64)
        points = state["points3d"].numpy().view(np.float64).reshape(-1, 3)
        vocab = state["vocabulary"].float().numpy()
        vlads = state["vlad"].float().numpy()
        problems = []
        if len(offsets) != num_images + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            problems.append(f"keypoint_offsets ({len(offsets)}) do not describe {num_images} reference views")
        elif not len(kps) == len(desc) == len(ids) == offsets[-1]:
            problems.append(f"{len(kps)} keypoints, {len(desc)} descriptors, {len(ids)} point ids, offsets end at {offsets[-1]}")
        if desc.ndim != 2 or desc.shape[1] != DESCRIPTOR_DIM or desc.dtype != np.uint8:
            problems.append(f"descriptors are {desc.dtype} {desc.shape}, expected uint8 (K, {DESCRIPTOR_DIM})")
        if len(ids) and (ids.min() < -1 or ids.max() >= len(points)):
            problems.append(f"point ids outside [-1, {len(points)})")
        if vocab.ndim != 2 or vocab.shape[1] != DESCRIPTOR_DIM or vlads.shape != (num_images, vocab.shape[0] * DESCRIPTOR_DIM):
            problems.append(f"vocabulary {vocab.shape} and VLAD vectors {vlads.shape} do not match {num_images} views")
        if problems:
            raise MapError(f"{where}: inconsistent classical map: " + "; ".join(problems))
        split = lambda a: [a[offsets[i] : offsets[i + 1]] for i in range(num_images)]
        return cls(split(kps), split(desc), split(ids), points, vocab, vlads)
