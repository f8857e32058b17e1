"""Cambridge Landmarks (PoseNet's outdoor relocalization dataset) as distributed.

Format sources relied on (conventions verified against public code):
  * ``dataset_{train,test}.txt``: DSAC*'s ``datasets/setup_cambridge.py``
    (github.com/vislearn/dsacstar, same code in nianticlabs/ace) skips 3 header lines,
    reads ``camera[1:4]`` as the camera centre and ``camera[4:8]`` as a w-first
    quaternion, builds R from it, sets ``t = -R @ C`` and uses ``[R | t]`` as the
    scene-to-camera transform, projecting with ``x = X/Z * f + w/2``, ``y = Y/Z * f + h/2``
    and keeping points with Z > 0: so the quaternion is the world-to-camera rotation and
    the camera axes are OpenCV's (x right, y down, z forward).
  * ``reconstruction.nvm``: VisualSFM's NVM_V3, one line per camera
    ``<file> <focal> <qw qx qy qz> <cx cy cz> <radial distortion> 0`` (the same DSAC*
    script reads the focal length as ``split()[1]`` at the released image resolution;
    NVM names the images ``.jpg`` where the dataset files say ``.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...geometry.camera import Camera
from ...geometry.frames import opengl_c2w_from_opencv_w2c
from ...geometry.se3 import make_pose, rotation_from_quat_xyzw
from ..posed_images import DatasetError, PosedImages
from ._common import (
    MAX_LISTED,
    check_files_exist,
    image_size,
    normalize_relpath,
    strip_extension,
    validated_pose,
)

SPLIT_FILES = (("train", "dataset_train.txt"), ("test", "dataset_test.txt"))
HEADER_LINES = 3


def _read_split(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(image name, centre xyz, quaternion wxyz)] of a ``dataset_*.txt``."""
    rows = []
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines[HEADER_LINES:], start=HEADER_LINES + 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 8:
            raise DatasetError(
                f"{path}:{lineno}: expected 'image X Y Z W P Q R' (8 fields), got {len(tok)}"
            )
        try:
            vals = np.array([float(v) for v in tok[1:]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: cannot parse numbers in {line.strip()!r}") from None
        if not np.all(np.isfinite(vals)):
            raise DatasetError(f"{path}:{lineno}: non-finite value in {line.strip()!r}")
        rows.append((normalize_relpath(tok[0]), vals[:3], vals[3:]))
    return rows


def read_nvm_cameras(path: Path) -> dict[str, tuple[float, float]]:
    """{image name without extension: (focal length px, NVM radial distortion)} of the
    first model in an NVM_V3 file (only the camera block is read; points are skipped)."""
    with open(path) as f:
        header = f.readline().split()
        if not header or not header[0].startswith("NVM_V3"):
            raise DatasetError(f"{path}:1: not an NVM_V3 file (header {' '.join(header)!r})")
        lineno = 1
        count = None
        for line in f:
            lineno += 1
            if line.strip():
                try:
                    count = int(line.split()[0])
                except ValueError:
                    raise DatasetError(f"{path}:{lineno}: expected the number of cameras") from None
                break
        if count is None:
            raise DatasetError(f"{path}: no camera block")
        cams: dict[str, tuple[float, float]] = {}
        while len(cams) < count:
            line = f.readline()
            if not line:
                raise DatasetError(f"{path}: ends after {len(cams)} of {count} cameras")
            lineno += 1
            tok = line.split()
            if not tok:
                continue
            if len(tok) < 10:
                raise DatasetError(
                    f"{path}:{lineno}: expected '<file> <focal> <qw qx qy qz> <cx cy cz> <radial> 0'"
                )
            try:
                focal, radial = float(tok[1]), float(tok[9])
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: cannot parse {line.strip()!r}") from None
            cams[strip_extension(normalize_relpath(tok[0]))] = (focal, radial)
    return cams


def load_cambridge(scene_dir: str | Path, focal_length: float | None = None) -> PosedImages:
    """Load one Cambridge Landmarks scene (e.g. ``KingsCollege/``) as distributed.

    Poses: ``dataset_train.txt`` / ``dataset_test.txt`` (3 header lines, then
    ``seqN/frameNNNNN.png X Y Z W P Q R``): camera centre C in world and the
    world-to-camera rotation quaternion in (w, x, y, z) order, OpenCV camera axes. We
    build the OpenCV world-to-camera ``[R | -R C]`` and convert it with
    :func:`frames.opengl_c2w_from_opencv_w2c`. Splits come from the two files.

    Intrinsics: per-image focal length from ``reconstruction.nvm`` (matched by name
    without extension), principal point at the image centre (W/2, H/2), image size from
    the first image's header (1920x1080 in the release). NVM's single radial
    coefficient is VisualSFM's *undistortion* model (it maps measured, distorted pixels
    to undistorted ones), which has no exact equivalent in OpenCV's forward model; it is
    ignored (kept per image in ``extras["nvm_radial"]``), as DSAC*/ACE do. Without an
    NVM file ``focal_length`` is required; with one, ``focal_length`` (if given) is used
    for images the NVM does not list, otherwise those raise DatasetError.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(f"Cambridge scene folder not found: {scene_dir}")
    source = str(scene_dir)
    names, centres, quats, split = [], [], [], {}
    for split_name, fname in SPLIT_FILES:
        p = scene_dir / fname
        if not p.is_file():
            raise DatasetError(f"{source}: {fname} is missing")
        rows = _read_split(p)
        if not rows:
            raise DatasetError(f"{p}: no images (split {split_name!r} is empty)")
        split[split_name] = list(range(len(names), len(names) + len(rows)))
        for name, c, q in rows:
            names.append(name)
            centres.append(c)
            quats.append(q)
    paths = [scene_dir / n for n in names]
    check_files_exist(paths, "images", source)

    poses = []
    for name, c, q in zip(names, centres, quats):
        R_w2c = rotation_from_quat_xyzw([q[1], q[2], q[3], q[0]])  # file order is w, x, y, z
        w2c = validated_pose(make_pose(R_w2c, -R_w2c @ c), f"{source}: pose of {name!r}")
        poses.append(opengl_c2w_from_opencv_w2c(w2c))

    nvm_path = scene_dir / "reconstruction.nvm"
    extras: dict = {"format": "cambridge"}
    if nvm_path.is_file():
        nvm = read_nvm_cameras(nvm_path)
        missing = [n for n in names if strip_extension(n) not in nvm]
        if missing and focal_length is None:
            raise DatasetError(
                f"{nvm_path}: {len(missing)} image(s) have no camera in the NVM file: "
                f"{', '.join(missing[:MAX_LISTED])}; pass focal_length to use for them"
            )
        focals = [nvm[strip_extension(n)][0] if strip_extension(n) in nvm else focal_length for n in names]
        extras["nvm_radial"] = np.array(
            [nvm[strip_extension(n)][1] if strip_extension(n) in nvm else 0.0 for n in names]
        )
    elif focal_length is None:
        raise DatasetError(
            f"{source}: no reconstruction.nvm to read focal lengths from; pass focal_length"
        )
    else:
        focals = [focal_length] * len(names)

    w, h = image_size(paths[0], source)
    try:
        cameras = [
            Camera(w, h, float(f), float(f), w / 2.0, h / 2.0, source=f"Cambridge {n}")
            for f, n in zip(focals, names)
        ]
    except ValueError as e:
        raise DatasetError(f"{source}: {e}") from e
    return PosedImages(
        names=names,
        image_paths=paths,
        cameras=cameras,
        c2w_opengl=np.stack(poses),
        split=split,
        source=source,
        extras=extras,
    )
