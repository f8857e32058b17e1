"""nerfstudio / instant-ngp ``transforms.json`` (and the Blender-synthetic layout)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ...geometry.camera import Camera
from ..posed_images import DatasetError, PosedImages
from ._common import (
    MAX_LISTED,
    check_files_exist,
    image_size,
    normalize_relpath,
    read_split_json,
    resolve_image_path,
    split_from_lists,
    validated_pose,
)

#: Intrinsics keys that may appear globally and/or per frame (per frame wins).
INTRINSIC_KEYS = (
    "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2",
    "camera_angle_x", "camera_angle_y", "camera_model", "is_fisheye",
)  # fmt: skip

#: ``camera_model`` values we accept: pinhole with optional radial-tangential distortion.
SUPPORTED_CAMERA_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "PERSPECTIVE")

#: Top-level keys kept in ``PosedImages.extras``.
EXTRA_KEYS = ("aabb_scale", "aabb", "scale", "offset", "applied_transform")

#: Blender-synthetic layout: one file per split, in this order.
BLENDER_FILES = (("train", "transforms_train.json"), ("val", "transforms_val.json"), ("test", "transforms_test.json"))

#: Default depth unit of nerfstudio's ``depth_file_path`` images (16-bit PNG in mm).
DEFAULT_DEPTH_UNIT_SCALE = 1e-3

#: Optional per-frame files: frame key -> (what the error messages call them, key of
#: the path lists in :func:`_parse_frames`'s result). All frames have one or none.
OPTIONAL_FRAME_FILES = {
    "depth_file_path": ("depth images", "depths"),
    "mask_path": ("masks", "masks"),
}


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(Path(path).read_text())
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DatasetError(f"{path}: no 'frames' list")
    if not frames:
        raise DatasetError(f"{path}: 'frames' is empty")
    return meta


def _camera(intr: dict, image_path: Path, where: str) -> Camera:
    model = intr.get("camera_model")
    if model is not None and str(model).upper() not in SUPPORTED_CAMERA_MODELS:
        raise DatasetError(
            f"{where}: camera_model {model!r} is not supported (only pinhole cameras: "
            f"{', '.join(SUPPORTED_CAMERA_MODELS[:3])}); undistort/reproject the images first"
        )
    if intr.get("is_fisheye"):
        raise DatasetError(f"{where}: fisheye cameras (is_fisheye) are not supported")
    if float(intr.get("k4", 0.0) or 0.0) != 0.0:
        raise DatasetError(
            f"{where}: k4={intr['k4']} is set, which is a fisheye/rational model; only the "
            "OpenCV radial-tangential model (k1, k2, p1, p2, k3) is supported"
        )
    try:
        if "w" in intr and "h" in intr:
            w, h = round(float(intr["w"])), round(float(intr["h"]))
        else:
            w, h = image_size(image_path, where)
        if "fl_x" in intr:
            fx = float(intr["fl_x"])
        elif "camera_angle_x" in intr:
            fx = 0.5 * w / math.tan(0.5 * float(intr["camera_angle_x"]))
        else:
            fx = None
        if "fl_y" in intr:
            fy = float(intr["fl_y"])
        elif "camera_angle_y" in intr:
            fy = 0.5 * h / math.tan(0.5 * float(intr["camera_angle_y"]))
        else:
            fy = fx
        if fx is None:
            fx = fy
        if fx is None:
            raise DatasetError(f"{where}: no focal length (need fl_x or camera_angle_x)")
        return Camera(
            width=w,
            height=h,
            fx=fx,
            fy=fy,
            cx=float(intr.get("cx", w / 2.0)),
            cy=float(intr.get("cy", h / 2.0)),
            k1=float(intr.get("k1", 0.0)),
            k2=float(intr.get("k2", 0.0)),
            p1=float(intr.get("p1", 0.0)),
            p2=float(intr.get("p2", 0.0)),
            k3=float(intr.get("k3", 0.0)),
            source=where,
        )
    except DatasetError:
        raise
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: bad intrinsics: {e}") from e


def _parse_frames(json_path: Path, meta: dict, root: Path) -> dict:
    """Per-frame names, paths, cameras, poses, depth and mask paths of one transforms file.

    Names are image paths relative to ``root`` (the folder of the json file(s)).
    """
    base = json_path.parent
    global_intr = {k: meta[k] for k in INTRINSIC_KEYS if k in meta}
    names, paths, cameras, poses = [], [], [], []
    optional: dict[str, list[Path | None]] = {key: [] for _, key in OPTIONAL_FRAME_FILES.values()}
    for i, fr in enumerate(meta["frames"]):
        if not isinstance(fr, dict) or "file_path" not in fr:
            raise DatasetError(f"{json_path}: frame {i} has no 'file_path'")
        fp = str(fr["file_path"])
        where = f"{json_path}: frame {i} ({fp!r})"
        if "transform_matrix" not in fr:
            raise DatasetError(f"{where}: no 'transform_matrix'")
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: transform_matrix is not a numeric matrix: {e}") from e
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        # transform_matrix is already OpenGL camera-to-world (instant-ngp / nerfstudio).
        poses.append(validated_pose(m, f"{where} transform_matrix"))
        path = resolve_image_path(base, fp)
        paths.append(path)
        try:
            name = normalize_relpath(path.relative_to(root))
        except ValueError:
            name = normalize_relpath(fp)
        names.append(name)
        intr = {**global_intr, **{k: fr[k] for k in INTRINSIC_KEYS if k in fr}}
        # Size from the header only if the json lacks it (and only if the image exists;
        # a missing image is reported below with the others).
        if ("w" not in intr or "h" not in intr) and not path.is_file():
            cameras.append(None)
        else:
            cameras.append(_camera(intr, path, where))
        for frame_key, (_, key) in OPTIONAL_FRAME_FILES.items():
            rel = fr.get(frame_key)
            optional[key].append(None if rel is None else base / normalize_relpath(rel))
    return {"names": names, "paths": paths, "cameras": cameras, "poses": poses, **optional}


def _all_or_none(
    files: list[Path | None], names: list[str], frame_key: str, what: str, source: str
) -> list[Path] | None:
    """The per-frame optional files ``frame_key`` when every frame has one (checked to
    exist), None when no frame has one; a DatasetError listing the frames without one
    when only some have it."""
    have = [f is not None for f in files]
    if not any(have):
        return None
    if not all(have):
        without = [names[i] for i, h in enumerate(have) if not h]
        more = f" (and {len(without) - MAX_LISTED} more)" if len(without) > MAX_LISTED else ""
        raise DatasetError(
            f"{source}: {len(without)} frame(s) have no {frame_key} while others do: "
            f"{', '.join(without[:MAX_LISTED])}{more}"
        )
    check_files_exist(files, what, source)
    return list(files)


def _assemble(parts: list[tuple[Path, dict, dict]], source: str) -> tuple[dict, dict]:
    """Concatenate per-file frame lists; check images, depth and masks.

    Returns the frames and the optional per-frame file lists (``depths``, ``masks``:
    a path per frame, or None when the data has none).
    """
    names, paths, cameras, poses = [], [], [], []
    optional: dict[str, list] = {key: [] for _, key in OPTIONAL_FRAME_FILES.values()}
    for _, _, fr in parts:
        names += fr["names"]
        paths += fr["paths"]
        cameras += fr["cameras"]
        poses += fr["poses"]
        for key in optional:
            optional[key] += fr[key]
    check_files_exist(paths, "images", source)
    dup = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dup:
        raise DatasetError(f"{source}: image(s) listed more than once: {', '.join(dup[:MAX_LISTED])}")
    files = {
        key: _all_or_none(optional[key], names, frame_key, what, source)
        for frame_key, (what, key) in OPTIONAL_FRAME_FILES.items()
    }
    return {"names": names, "paths": paths, "cameras": cameras, "poses": np.stack(poses)}, files


def _extras(meta: dict, fmt: str) -> dict:
    extras: dict = {"format": fmt}
    for k in EXTRA_KEYS:
        if k in meta:
            extras[k] = np.asarray(meta[k], dtype=np.float64) if k == "applied_transform" else meta[k]
    return extras


def _nerfstudio_split(meta: dict, names: list[str], where: str) -> dict[str, list[int]] | None:
    lists = {}
    for key in ("train", "val", "test"):
        if f"{key}_filenames" in meta:
            lists[key] = meta[f"{key}_filenames"]
    if not lists:
        return None
    split = split_from_lists(lists, names, where)
    if "test" not in split and "val" in split:
        split["test"] = list(split["val"])  # nerfstudio evaluates on val when no test list
    return split


def load_transforms_json(path: str | Path, split_file: str | Path | None = None) -> PosedImages:
    """Load a nerfstudio / instant-ngp ``transforms.json`` (or a Blender-synthetic folder).

    Args:
        path: a ``transforms*.json`` file, or a folder holding ``transforms.json`` or the
            Blender layout ``transforms_train.json`` + ``transforms_test.json``
            [+ ``transforms_val.json``].
        split_file: optional JSON ``{"train": [file_path, ...], "test": [...]}``.

    Conventions:
        * ``transform_matrix`` is OpenGL camera-to-world already; it is validated (a
          non-rotation raises DatasetError naming the file and the frame) and only tiny
          float errors are orthonormalized away.
        * Intrinsics: global ``fl_x fl_y cx cy w h k1 k2 k3 p1 p2`` with per-frame overrides;
          ``camera_angle_x``/``camera_angle_y`` when a focal length is missing; ``cx``/``cy``
          default to w/2, h/2 (instant-ngp/nerfstudio use the same pixel convention as
          :class:`Camera`, centre of pixel i at i + 0.5). ``camera_model`` must be a
          pinhole (OPENCV / PINHOLE); fisheye and equirectangular raise DatasetError.
        * ``file_path`` is relative to the json's folder and may lack an extension
          (Blender ``./train/r_0``: .png/.jpg are tried). ``w``/``h`` are read from the
          image header only when the json lacks them.
        * ``depth_file_path`` per frame -> ``depth_paths``; ``depth_unit_scale_factor``
          (default 1e-3, i.e. millimetre PNGs) -> ``depth_scale``.
        * ``mask_path`` per frame (relative to the json's folder; a single-channel image
          of the image's size, 0 = ignore the pixel) -> ``mask_paths``.
        * ``depth_file_path`` and ``mask_path`` are given for every frame or for none: a
          DatasetError lists the frames without when only some have one.

    Splits, first that applies: ``split_file``; a ``split.json`` next to the json;
    nerfstudio's ``train_filenames``/``val_filenames``/``test_filenames`` ("test" falls
    back to the val list); the Blender files. Without any, every frame is "train" and
    there is no "test" split. ``aabb_scale``, ``aabb``, ``scale``, ``offset`` and
    ``applied_transform`` are kept in ``extras``.
    """
    path = Path(path)
    blender = False
    if path.is_dir():
        if (path / "transforms.json").is_file():
            json_files = [("all", path / "transforms.json")]
        elif (path / "transforms_train.json").is_file():
            blender = True
            json_files = [(s, path / f) for s, f in BLENDER_FILES if (path / f).is_file()]
        else:
            raise DatasetError(
                f"{path}: no transforms.json and no Blender transforms_train.json/"
                "transforms_test.json in this folder"
            )
        root = path
    elif path.is_file():
        json_files = [("all", path)]
        root = path.parent
    else:
        raise DatasetError(f"transforms file or folder not found: {path}")
    source = str(path)

    parts = []
    for split_name, jf in json_files:
        meta = _read_json(jf)
        parts.append((jf, meta, _parse_frames(jf, meta, root)))
    frames, files = _assemble(parts, source)
    names = frames["names"]

    # Cameras deferred because the image was missing were reported by _assemble.
    cameras = frames["cameras"]
    first_meta = parts[0][1]

    split: dict[str, list[int]]
    if split_file is not None:
        split = read_split_json(Path(split_file), names)
    elif (root / "split.json").is_file():
        split = read_split_json(root / "split.json", names)
    elif (ns := _nerfstudio_split(first_meta, names, str(parts[0][0]))) is not None:
        split = ns
    elif blender:
        split, start = {}, 0
        for (split_name, _), (_, _, fr) in zip(json_files, parts):
            n = len(fr["names"])
            split[split_name] = list(range(start, start + n))
            start += n
        for s, idx in split.items():
            if not idx:
                raise DatasetError(f"{source}: split {s!r} is empty")
    else:
        split = {"train": list(range(len(names)))}

    scale = float(first_meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT_SCALE))
    extras = _extras(first_meta, "blender" if blender else "transforms_json")
    if blender:
        extras["json_files"] = [str(jf) for _, jf in json_files]
    return PosedImages(
        names=names,
        image_paths=frames["paths"],
        cameras=cameras,
        c2w_opengl=frames["poses"],
        split=split,
        depth_paths=files["depths"],
        mask_paths=files["masks"],
        depth_scale=scale,
        source=source,
        extras=extras,
    )
