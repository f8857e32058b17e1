"""One type for posed image collections, whatever format they came from.

Images are read lazily from disk (and downscaled on request); poses are stored as
OpenGL camera-to-world (NeRF side). Every loader in :mod:`neural_reloc.data` returns a
:class:`PosedImages`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..geometry.camera import Camera
from ..geometry.frames import opencv_w2c_from_opengl_c2w
from ..geometry.se3 import check_pose

SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A dataset on disk is missing something or is inconsistent (message says what)."""


@dataclass
class PosedImages:
    """Posed images with per-frame intrinsics.

    Attributes:
        names: a stable name per frame (usually the relative image path).
        image_paths: where each RGB image lives.
        cameras: per-frame intrinsics *at the native resolution of the file*.
        c2w_opengl: (N, 4, 4) camera-to-world poses, OpenGL camera axes.
        split: frame indices per split name ("train", "test").
        depth_paths: optional per-frame metric depth images (16-bit PNG in mm, or .npy
            in metres); ``depth_scale`` converts stored values to metres.
        timestamps_ns: optional capture times (used when writing bags).
        downscale: factor applied when loading images (2 = half size).
        source: where it came from (for messages and fingerprints).
        extras: format-specific metadata worth keeping (e.g. LLFF near/far bounds,
            instant-ngp ``aabb_scale``, a procedural scene's ``aabb``).
        depth_invalid: optional raw stored depth value that marks "no measurement"
            (e.g. 65535 in 7-Scenes); such pixels read as 0 (invalid) in :meth:`depth`.
        mask_paths: optional per-frame validity masks (single-channel images of the
            image's size; 0 = ignore the pixel, nonzero = valid), e.g. nerfstudio's
            ``mask_path`` for turntable captures whose background does not follow the
            poses. Training samples and evaluation score valid pixels only.
    """

    names: list[str]
    image_paths: list[Path]
    cameras: list[Camera]
    c2w_opengl: np.ndarray
    split: dict[str, list[int]] = field(default_factory=dict)
    depth_paths: list[Path] | None = None
    depth_scale: float = 0.001
    timestamps_ns: np.ndarray | None = None
    downscale: float = 1.0
    source: str = ""
    extras: dict = field(default_factory=dict)
    depth_invalid: float | None = None
    mask_paths: list[Path] | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        self.c2w_opengl = np.asarray(self.c2w_opengl, dtype=np.float64).reshape(-1, 4, 4)
        counts = {
            "names": n,
            "image_paths": len(self.image_paths),
            "cameras": len(self.cameras),
            "poses": len(self.c2w_opengl),
        }
        if self.depth_paths is not None:
            counts["depth_paths"] = len(self.depth_paths)
        if self.mask_paths is not None:
            counts["mask_paths"] = len(self.mask_paths)
        if self.timestamps_ns is not None:
            counts["timestamps"] = len(self.timestamps_ns)
        if len(set(counts.values())) != 1:
            raise DatasetError(f"{self.source}: count mismatch between {counts}")
        if n == 0:
            raise DatasetError(f"{self.source}: no frames")
        for i, T in enumerate(self.c2w_opengl):
            try:
                check_pose(T, f"{self.source}: pose of frame {self.names[i]!r}")
            except ValueError as e:
                raise DatasetError(str(e)) from None
        for name, idx in self.split.items():
            bad = [j for j in idx if not 0 <= j < n]
            if bad:
                raise DatasetError(f"{self.source}: split {name!r} has out-of-range indices {bad[:5]}")
        if self.downscale <= 0:
            raise DatasetError(f"downscale must be > 0, got {self.downscale}")

    # ------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.names)

    def indices(self, split: str | None) -> list[int]:
        if split is None or split == "all":
            return list(range(len(self)))
        if split not in self.split:
            raise DatasetError(
                f"{self.source}: no split named {split!r} (have {sorted(self.split) or 'none'})"
            )
        idx = self.split[split]
        if not idx:
            raise DatasetError(f"{self.source}: split {split!r} is empty")
        return list(idx)

    def subset(self, which: str | Sequence[int]) -> "PosedImages":
        """Frames of a split name or an explicit index list; splits are remapped."""
        idx = self.indices(which) if isinstance(which, str) else list(which)
        pos = {j: k for k, j in enumerate(idx)}
        split = {s: [pos[j] for j in v if j in pos] for s, v in self.split.items()}
        return replace(
            self,
            names=[self.names[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx],
            cameras=[self.cameras[i] for i in idx],
            c2w_opengl=self.c2w_opengl[idx],
            split={k: v for k, v in split.items() if v},
            depth_paths=None if self.depth_paths is None else [self.depth_paths[i] for i in idx],
            mask_paths=None if self.mask_paths is None else [self.mask_paths[i] for i in idx],
            timestamps_ns=None if self.timestamps_ns is None else self.timestamps_ns[idx],
        )

    def with_downscale(self, factor: float) -> "PosedImages":
        return replace(self, downscale=float(factor))

    def with_max_size(self, max_long_side: int) -> "PosedImages":
        """Downscale so that no image's long side exceeds ``max_long_side``."""
        longest = max(max(c.width, c.height) for c in self.cameras)
        return self.with_downscale(max(1.0, longest / max_long_side))

    # ------------------------------------------------------------ frames
    def camera(self, i: int) -> Camera:
        """Intrinsics of frame i at the loaded (downscaled) resolution."""
        c = self.cameras[i]
        if self.downscale == 1.0:
            return c
        return c.resized(
            max(1, int(round(c.width / self.downscale))), max(1, int(round(c.height / self.downscale)))
        )

    def w2c_opencv(self, i: int) -> np.ndarray:
        return opencv_w2c_from_opengl_c2w(self.c2w_opengl[i])

    def image(self, i: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) at the loaded resolution."""
        import cv2

        path = self.image_paths[i]
        if not Path(path).is_file():
            raise DatasetError(f"{self.source}: image of frame {self.names[i]!r} is missing: {path}")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"{self.source}: cannot decode image {path}")
        native = self.cameras[i]
        if bgr.shape[1] != native.width or bgr.shape[0] != native.height:
            raise DatasetError(
                f"{self.source}: image {path} is {bgr.shape[1]}x{bgr.shape[0]} but its camera says "
                f"{native.width}x{native.height}"
            )
        cam = self.camera(i)
        if (cam.width, cam.height) != (native.width, native.height):
            bgr = cv2.resize(bgr, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def depth(self, i: int) -> np.ndarray | None:
        """Metric depth (H, W) float32 in metres at the loaded resolution (0 = invalid)."""
        if self.depth_paths is None:
            return None
        import cv2

        path = Path(self.depth_paths[i])
        if not path.is_file():
            raise DatasetError(f"{self.source}: depth of frame {self.names[i]!r} is missing: {path}")
        if path.suffix == ".npy":
            d = np.load(path).astype(np.float32)
        else:
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise DatasetError(f"{self.source}: cannot decode depth {path}")
            d = raw.astype(np.float32) * self.depth_scale
            if self.depth_invalid is not None:
                d[raw == self.depth_invalid] = 0.0
        cam = self.camera(i)
        if (d.shape[1], d.shape[0]) != (cam.width, cam.height):
            d = cv2.resize(d, (cam.width, cam.height), interpolation=cv2.INTER_NEAREST)
        return d

    def mask(self, i: int) -> np.ndarray | None:
        """Validity mask (H, W) bool at the loaded resolution (True = use the pixel),
        None when the data has no masks. Resized with nearest neighbour."""
        if self.mask_paths is None:
            return None
        import cv2

        path = Path(self.mask_paths[i])
        where = f"{self.source}: mask of frame {self.names[i]!r}"
        if not path.is_file():
            raise DatasetError(f"{where} is missing: {path}")
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DatasetError(f"{where}: cannot decode {path}")
        if raw.ndim != 2:
            raise DatasetError(
                f"{where}: {path} has {raw.shape[2]} channels; a mask must be a single-channel image "
                "(0 = ignore the pixel, nonzero = valid)"
            )
        native = self.cameras[i]
        if (raw.shape[1], raw.shape[0]) != (native.width, native.height):
            raise DatasetError(
                f"{where}: {path} is {raw.shape[1]}x{raw.shape[0]} but the image is "
                f"{native.width}x{native.height}"
            )
        valid = (raw != 0).astype(np.uint8)
        cam = self.camera(i)
        if (cam.width, cam.height) != (native.width, native.height):
            valid = cv2.resize(valid, (cam.width, cam.height), interpolation=cv2.INTER_NEAREST)
        return valid.astype(bool)

    # ------------------------------------------------------------ identity
    def fingerprint(self, which: str | None = None) -> str:
        """Hash of poses, intrinsics, names and image file sizes of a split (and of the
        depth and mask files' names and sizes, when the data has them).

        Cheap (no image decoding) yet changes when any input changes.
        """
        h = hashlib.sha256()
        for i in self.indices(which):
            h.update(self.names[i].encode())
            h.update(np.round(self.c2w_opengl[i], 9).tobytes())
            h.update(repr(sorted(self.cameras[i].to_dict().items())).encode())
            h.update(f"{_file_size(self.image_paths[i])}".encode())
            # Only when present, so that data without them keeps its fingerprint.
            for kind, paths in (("depth", self.depth_paths), ("mask", self.mask_paths)):
                if paths is not None:
                    h.update(f"{kind}={Path(paths[i]).name}:{_file_size(paths[i])}".encode())
        if self.depth_paths is not None:
            h.update(f"depth_scale={self.depth_scale},depth_invalid={self.depth_invalid}".encode())
        h.update(f"downscale={self.downscale}".encode())
        return h.hexdigest()[:16]

    def camera_centers(self) -> np.ndarray:
        return self.c2w_opengl[:, :3, 3].copy()


def _file_size(path: Path | str) -> int:
    """Size of a file in bytes, -1 when it does not exist."""
    p = Path(path)
    return p.stat().st_size if p.exists() else -1
