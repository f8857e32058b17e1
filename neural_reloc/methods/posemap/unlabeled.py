"""Unlabeled images for the self-supervised alignment (``add-method posemap
--unlabeled DIR_OR_BAG``): their poses are never read.

* a rosbag2 bag: its camera stream (image topic and CameraInfo of the bag defaults);
* a posed dataset (any format ``load_dataset`` reads): the images of
  ``align.dataset_split`` (default the test split), poses ignored;
* a folder of images only (.png/.jpg): taken with the map's camera (the first
  reference view's intrinsics scaled to the image size; the aspect ratio must agree).

With a teacher (``align.teacher``), each image is localized at its own size by another
method of the map while loading; only its pose is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ...data.loaders._common import IMAGE_EXTENSIONS
from ...data.posed_images import DatasetError
from ...geometry.camera import Camera
from .apr_net import apr_camera, apr_input
from .config import PoseMapConfig

#: A plain image folder's images may differ from the map camera's aspect ratio by this much.
ASPECT_TOLERANCE = 0.01


def _spaced(n: int, limit: int) -> list[int]:
    if limit <= 0 or n <= limit:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})


def _image_files(path: Path) -> list[Path]:
    exts = {e.lower() for e in IMAGE_EXTENSIONS}
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in exts)


#: A teacher: (image RGB, its camera) -> the camera-to-world pose (OpenCV) of its fix, or None.
Teacher = Callable[[np.ndarray, Camera], "np.ndarray | None"]


def load_unlabeled(path: str | Path, cfg: PoseMapConfig, map_camera: Camera, teacher: Teacher | None = None,
                   progress=None) -> tuple[np.ndarray, list[Camera], np.ndarray | None]:
    """(images (N, H, W, 3) uint8 at APR-Net's size, their APR-size cameras, the
    ``teacher``'s c2w_opencv poses (N, 4, 4), NaN where it gave none, or None without a
    teacher); a :class:`DatasetError` naming ``path`` when nothing usable is there."""
    from ...data.loaders.rosbag2 import is_rosbag2

    path = Path(path)
    where = f"--unlabeled {path}"
    if not path.exists():
        raise DatasetError(f"{where}: does not exist (give a folder of images, a posed dataset or a rosbag2 bag)")
    pairs: list[tuple[np.ndarray, Camera]] = []
    limit = cfg.align.max_images
    if is_rosbag2(path):
        from ...bags.errors import BagError
        from ...bags.reader import BagReadConfig, read_frames

        try:
            frames = [(f.frame.image_rgb, f.frame.camera) for f in read_frames(path, BagReadConfig(use_odometry=False))]
        except BagError as e:
            raise DatasetError(f"{where}: {e}") from None
        pairs = [frames[i] for i in _spaced(len(frames), limit)]
    elif path.is_dir() and _image_files(path) and not (path / "transforms.json").is_file():
        files = _image_files(path)
        for f in (files[i] for i in _spaced(len(files), limit)):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(f"{where}: cannot read image {f.name}")
            h, w = img.shape[:2]
            if abs(w / h - map_camera.width / map_camera.height) > ASPECT_TOLERANCE * map_camera.width / map_camera.height:
                raise DatasetError(f"{where}: {f.name} is {w}x{h}, not the map camera's aspect ratio "
                                   f"({map_camera.width}x{map_camera.height}); give a dataset or bag with its camera")
            pairs.append((cv2.cvtColor(img, cv2.COLOR_BGR2RGB), map_camera.resized(w, h)))
    else:
        from ...data import load_dataset

        try:
            data = load_dataset(path)
        except DatasetError as e:
            raise DatasetError(f"{where}: {e}") from None
        split = cfg.align.dataset_split
        if split != "all" and split not in data.split:
            raise DatasetError(f"{where}: the dataset has no {split!r} split (it has: {', '.join(data.split) or 'none'}); "
                               "set align.dataset_split")
        idx = data.indices(None if split == "all" else split)
        pairs = [(data.image(idx[i]), data.camera(idx[i])) for i in _spaced(len(idx), limit)]
    if not pairs:
        raise DatasetError(f"{where}: no images found")
    blocks = len(cfg.apr.channels)
    cam0 = apr_camera(pairs[0][1], cfg.apr.image_long_side, blocks)
    cams = [c.resized(cam0.width, cam0.height) for _, c in pairs]
    images = np.stack([apr_input(img, c) for (img, _), c in zip(pairs, cams)])
    if teacher is None:
        return images, cams, None
    return images, cams, teacher_poses(teacher, pairs, progress)


def teacher_poses(teacher: Teacher, pairs: list[tuple[np.ndarray, Camera]], progress=None) -> np.ndarray:
    """The ``teacher``'s c2w_opencv fix of each (image RGB, camera) of ``pairs``, (N, 4, 4),
    NaN where it gave none."""
    teacher_c2w_opencv = np.full((len(pairs), 4, 4), np.nan)
    it = range(len(pairs)) if progress is None else progress(range(len(pairs)), desc="posemap: teacher localizes")
    for i in it:
        c2w_opencv = teacher(*pairs[i])
        if c2w_opencv is not None:
            teacher_c2w_opencv[i] = c2w_opencv
    return teacher_c2w_opencv


__all__ = ["load_unlabeled", "teacher_poses"]
