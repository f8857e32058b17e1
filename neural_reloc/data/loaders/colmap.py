"""COLMAP sparse models (``cameras/images/points3D`` .bin or .txt) via pycolmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...geometry.camera import Camera
from ...geometry.frames import opengl_c2w_from_opencv_w2c
from ...geometry.se3 import make_pose, rotation_from_quat_xyzw
from ..posed_images import DatasetError, PosedImages
from ._common import (
    check_files_exist,
    every_nth_split,
    image_size,
    normalize_relpath,
    read_split_json,
    validated_pose,
)

#: Relative aspect-ratio difference above which a model camera and its image disagree.
ASPECT_TOLERANCE = 0.01


def camera_from_colmap(model: str, width: int, height: int, params, where: str) -> Camera:
    """Our :class:`Camera` from a COLMAP camera model name and parameter list.

    COLMAP's pixel convention (centre of the top-left pixel at (0.5, 0.5)) is ours, so
    cx, cy are copied unchanged. SIMPLE_RADIAL's k and RADIAL's k1, k2 are the first
    radial terms of OpenCV's model; FULL_OPENCV is accepted only when its rational
    denominator terms k4..k6 are zero (then it *is* the 5-parameter OpenCV model).
    """
    p = [float(v) for v in params]
    d = {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "k3": 0.0}
    expected = {
        "SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5,
        "OPENCV": 8, "FULL_OPENCV": 12,
    }  # fmt: skip
    if model not in expected:
        raise DatasetError(
            f"{where}: camera model {model} is not supported (supported: "
            f"{', '.join(expected)}); undistort the images with COLMAP's image_undistorter"
        )
    if len(p) != expected[model]:
        raise DatasetError(f"{where}: {model} needs {expected[model]} parameters, got {len(p)}")
    if model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    elif model == "PINHOLE":
        fx, fy, cx, cy = p
    elif model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, d["k1"] = p[1], p[2], p[3]
    elif model == "RADIAL":
        fx = fy = p[0]
        cx, cy, d["k1"], d["k2"] = p[1], p[2], p[3], p[4]
    else:  # OPENCV, FULL_OPENCV
        fx, fy, cx, cy = p[:4]
        d.update(k1=p[4], k2=p[5], p1=p[6], p2=p[7])
        if model == "FULL_OPENCV":
            d["k3"] = p[8]
            if any(v != 0.0 for v in p[9:12]):
                raise DatasetError(
                    f"{where}: FULL_OPENCV with rational terms k4..k6 = {p[9:12]} cannot be "
                    "represented (only k1, k2, p1, p2, k3); undistort the images first"
                )
    try:
        return Camera(int(width), int(height), fx, fy, cx, cy, source=where, **d)
    except ValueError as e:
        raise DatasetError(str(e)) from e


def _cam_from_world(image) -> np.ndarray:
    """OpenCV world-to-camera 4x4 of a pycolmap image (pycolmap >= 3.12: a method)."""
    rigid = image.cam_from_world
    if callable(rigid):
        rigid = rigid()
    q_xyzw = np.asarray(rigid.rotation.quat, dtype=np.float64)  # Eigen order: x, y, z, w
    return make_pose(rotation_from_quat_xyzw(q_xyzw), np.asarray(rigid.translation, dtype=np.float64))


def _has_pose(image) -> bool:
    hp = getattr(image, "has_pose", None)
    if hp is None:
        return bool(getattr(image, "registered", True))
    return bool(hp() if callable(hp) else hp)


def _candidate_image_dirs(model_dir: Path) -> list[Path]:
    out = []
    for c in (
        model_dir.parent.parent / "images",  # scene/sparse/0 -> scene/images
        model_dir.parent / "images",  # scene/sparse -> scene/images
        model_dir / "images",
        model_dir.parent.parent,  # images stored next to sparse/
        model_dir.parent,
    ):
        c = c.resolve()
        if c not in out:
            out.append(c)
    return out


def load_colmap(
    model_dir: str | Path,
    images_dir: str | Path | None = None,
    split_file: str | Path | None = None,
) -> PosedImages:
    """Load a COLMAP sparse model (``.bin`` or ``.txt``) with ``pycolmap.Reconstruction``.

    Poses: COLMAP stores ``cam_from_world`` (OpenCV world-to-camera, quaternion + t);
    converted with :func:`frames.opengl_c2w_from_opencv_w2c`. Only registered images
    are loaded, sorted by name; ``names`` are the COLMAP image names (paths relative to
    ``images_dir``).

    Cameras: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV (only
    with k4..k6 == 0); anything else raises DatasetError. If the images on disk have a
    different size than the model's camera but the same aspect ratio (a model built on
    downscaled copies), the camera is rescaled to the image size (one header read per
    camera; recorded in ``extras["rescaled_cameras"]``).

    ``images_dir`` defaults to the first of ``<model_dir>/../../images``,
    ``<model_dir>/../images``, ``<model_dir>/images``, ``<model_dir>/../..`` and
    ``<model_dir>/..`` that holds the first image.

    Splits: ``split_file``, else a ``split.json`` next to the images folder (or in the
    model folder), else the LLFF / mip-NeRF convention: every 8th image in name order
    (index % 8 == 0) is "test", the rest "train".
    """
    import pycolmap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DatasetError(f"COLMAP model folder not found: {model_dir}")
    if not any((model_dir / f"cameras.{e}").is_file() for e in ("bin", "txt")):
        raise DatasetError(f"{model_dir}: not a COLMAP model (no cameras.bin or cameras.txt)")
    source = str(model_dir)
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises ValueError/RuntimeError variants
        raise DatasetError(f"{model_dir}: pycolmap cannot read the model: {e}") from e

    images = sorted((im for im in rec.images.values() if _has_pose(im)), key=lambda im: im.name)
    if not images:
        raise DatasetError(f"{model_dir}: the model has no registered images")
    names = [normalize_relpath(im.name) for im in images]

    if images_dir is None:
        looked = _candidate_image_dirs(model_dir)
        found = [d for d in looked if (d / names[0]).is_file()]
        if not found:
            raise DatasetError(
                f"{model_dir}: cannot find the image folder (looked for {names[0]!r} in: "
                f"{', '.join(str(d) for d in looked)}); pass images_dir"
            )
        images_dir = found[0]
    images_dir = Path(images_dir)
    paths = [images_dir / n for n in names]
    check_files_exist(paths, "images", source, hint=f"images_dir is {images_dir}")

    # Cameras (rescaled to the files' size when they differ, same aspect ratio).
    cams: dict[int, Camera] = {}
    rescaled = {}
    for im, path in zip(images, paths):
        cid = im.camera_id
        if cid in cams:
            continue
        c = rec.cameras[cid]
        model = c.model.name if hasattr(c.model, "name") else str(c.model)
        cam = camera_from_colmap(model, c.width, c.height, c.params, f"{model_dir}: camera {cid}")
        w, h = image_size(path, source)
        if (w, h) != (cam.width, cam.height):
            a_img, a_cam = w / h, cam.width / cam.height
            if abs(a_img / a_cam - 1.0) > ASPECT_TOLERANCE:
                raise DatasetError(
                    f"{source}: image {path} is {w}x{h} but camera {cid} is "
                    f"{cam.width}x{cam.height} (different aspect ratio)"
                )
            rescaled[cid] = ((cam.width, cam.height), (w, h))
            cam = cam.resized(w, h)
        cams[cid] = cam

    poses = np.stack(
        [
            validated_pose(
                opengl_c2w_from_opencv_w2c(
                    validated_pose(_cam_from_world(im), f"{source}: pose of image {im.name!r}")
                ),
                f"{source}: pose of image {im.name!r}",
            )
            for im in images
        ]
    )

    if split_file is not None:
        split = read_split_json(Path(split_file), names)
    else:
        candidates = [images_dir.parent / "split.json", model_dir / "split.json"]
        found_split = next((c for c in candidates if c.is_file()), None)
        split = read_split_json(found_split, names) if found_split else every_nth_split(len(names))

    extras: dict = {"format": "colmap", "images_dir": str(images_dir)}
    if rescaled:
        extras["rescaled_cameras"] = rescaled
    return PosedImages(
        names=names,
        image_paths=paths,
        cameras=[cams[im.camera_id] for im in images],
        c2w_opengl=poses,
        split=split,
        source=source,
        extras=extras,
    )
