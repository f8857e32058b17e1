"""LLFF scenes (``poses_bounds.npy`` + ``images/``), as used by NeRF and mip-NeRF.

Format source: LLFF's ``llff/poses/pose_utils.py`` (github.com/Fyusion/LLFF): it
takes COLMAP's camera-to-world ``[r, d, f]`` columns (OpenCV axes), reorders them to
``[d, r, -f]`` ("must switch to [-u, r, -t] from [r, -u, t]"), appends the column
``hwf = [height, width, focal]`` of the COLMAP camera and two depth bounds, and saves
one 17-vector per image in image-name order. Its ``load_data`` lists ``images{sfx}/``
sorted by name and sets h, w from the actual files and ``f /= factor``. NeRF's
``load_llff.py`` converts the columns to OpenGL ``[r, u, b] = [c1, -c0, c2]``; mip-NeRF
holds out every 8th image (``[::8]``) for testing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...geometry.camera import Camera
from ...geometry.frames import opengl_c2w_from_llff_c2w
from ..posed_images import DatasetError, PosedImages
from ._common import every_nth_split, image_size, validated_pose

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Relative aspect-ratio difference above which hwf and the image files disagree.
ASPECT_TOLERANCE = 0.01


def load_llff(scene_dir: str | Path, factor: int | None = None) -> PosedImages:
    """Load an LLFF scene.

    Args:
        scene_dir: folder with ``poses_bounds.npy`` and ``images/``.
        factor: use the pre-downscaled ``images_{factor}/`` folder (intrinsics follow
            the actual image size either way).

    ``poses_bounds.npy`` is N x 17: a 3x5 ``[R | t | hwf]`` per image (camera-to-world,
    camera axes [down, right, backwards]; converted with
    :func:`frames.opengl_c2w_from_llff_c2w`) and the near/far depth bounds, kept in
    ``extras["near_far"]`` (N x 2). Rows belong to the images sorted by file name.
    ``hwf`` is for the full-resolution images the poses were computed on; the camera
    (principal point at the image centre, as LLFF/NeRF assume, no distortion) is scaled
    to the actual size of the first listed image (header only). Split: every 8th image
    (index % 8 == 0) is "test", the rest "train" (LLFF / mip-NeRF convention).
    """
    scene_dir = Path(scene_dir)
    pb_path = scene_dir / "poses_bounds.npy"
    if not pb_path.is_file():
        raise DatasetError(f"{scene_dir}: no poses_bounds.npy (not an LLFF scene)")
    source = str(scene_dir)
    try:
        arr = np.load(pb_path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{pb_path}: cannot read: {e}") from e
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise DatasetError(f"{pb_path}: expected an N x 17 array, got shape {arr.shape}")
    arr = arr.astype(np.float64)

    img_dir = scene_dir / ("images" if factor is None else f"images_{factor}")
    if not img_dir.is_dir():
        raise DatasetError(f"{source}: image folder {img_dir} not found")
    files = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != len(arr):
        raise DatasetError(
            f"{source}: count mismatch: {pb_path.name} has {len(arr)} poses but "
            f"{img_dir} has {len(files)} images ({', '.join(IMAGE_SUFFIXES)})"
        )

    blocks = arr[:, :15].reshape(-1, 3, 5)
    near_far = arr[:, 15:17].copy()
    w_img, h_img = image_size(files[0], source)
    names, cameras, poses = [], [], []
    for i, (p, blk) in enumerate(zip(files, blocks)):
        name = f"{img_dir.name}/{p.name}"
        what = f"{pb_path}: row {i} ({name})"
        h, w, f = blk[:, 4]
        if not (h > 0 and w > 0 and f > 0):
            raise DatasetError(f"{what}: invalid hwf {blk[:, 4].tolist()}")
        if abs((w_img / h_img) / (w / h) - 1.0) > ASPECT_TOLERANCE:
            raise DatasetError(
                f"{what}: hwf says {w:g}x{h:g} but {files[0].name} is {w_img}x{h_img} "
                "(different aspect ratio)"
            )
        c2w_llff = np.eye(4)
        c2w_llff[:3, :4] = blk[:, :4]
        c2w_llff = validated_pose(c2w_llff, f"{what} pose")
        poses.append(validated_pose(opengl_c2w_from_llff_c2w(c2w_llff), f"{what} pose"))
        full = Camera(round(w), round(h), f, f, w / 2.0, h / 2.0, source=what)
        cameras.append(full.resized(w_img, h_img))
        names.append(name)

    return PosedImages(
        names=names,
        image_paths=files,
        cameras=cameras,
        c2w_opengl=np.stack(poses),
        split=every_nth_split(len(files)),
        source=source,
        extras={"format": "llff", "near_far": near_far, "factor": factor},
    )
