"""Microsoft 7-Scenes (RGB-D relocalization dataset) as distributed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...geometry.camera import Camera
from ...geometry.frames import opengl_c2w_from_opencv_c2w
from ..posed_images import DatasetError, PosedImages
from ._common import check_files_exist, validated_pose

#: Intrinsics of the 7-Scenes RGB images as used by hloc, DSAC* and ACE (the dataset
#: page's 585 is the depth sensor's focal length).
SEVEN_SCENES_SIZE = (640, 480)
SEVEN_SCENES_FOCAL = 525.0
SEVEN_SCENES_PRINCIPAL = (320.0, 240.0)
#: Stored depth value meaning "no measurement" (uint16 millimetres otherwise).
SEVEN_SCENES_DEPTH_INVALID = 65535

_SEQ_LINE = re.compile(r"^sequence[-_ ]?(\d+)$", re.IGNORECASE)


def _read_split(path: Path) -> list[str]:
    seqs = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        m = _SEQ_LINE.match(s)
        if not m:
            raise DatasetError(f"{path}:{lineno}: cannot parse {s!r} (expected e.g. 'sequence1')")
        seqs.append(f"seq-{int(m.group(1)):02d}")
    if not seqs:
        raise DatasetError(f"{path}: lists no sequences (empty split)")
    return seqs


def _read_pose(path: Path) -> np.ndarray:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read pose: {e}") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            vals = [float(v) for v in line.split()]
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: cannot parse {line.strip()!r} as 4 numbers") from None
        if len(vals) != 4:
            raise DatasetError(f"{path}:{lineno}: expected 4 numbers, got {len(vals)}")
        rows.append(vals)
    if len(rows) != 4:
        raise DatasetError(f"{path}: expected a 4x4 matrix, got {len(rows)} rows")
    return np.array(rows)


def load_seven_scenes(scene_dir: str | Path, focal_length: float = SEVEN_SCENES_FOCAL) -> PosedImages:
    """Load one 7-Scenes scene (e.g. ``chess/``) as distributed by Microsoft.

    Layout: ``seq-XX/frame-NNNNNN.color.png`` (RGB), ``.depth.png`` (uint16 mm, 65535 =
    invalid, read as 0), ``.pose.txt`` (4x4 camera-to-world, camera axes x right,
    y down, z forward = OpenCV; converted with :func:`frames.opengl_c2w_from_opencv_c2w`),
    ``TrainSplit.txt`` / ``TestSplit.txt`` with lines like ``sequence1`` (= ``seq-01``).
    Without split files every ``seq-*`` folder is "train" and there is no "test".

    Intrinsics: 640x480, fx = fy = ``focal_length`` (default 525, the RGB focal
    length used by hloc, DSAC* and ACE; the dataset page's 585 is the depth
    sensor's), principal point (320, 240). The dataset does not say which pixel
    convention (320, 240) uses; we take it as-is in ours (pixel centres at i + 0.5),
    i.e. at most 0.5 px off, which is negligible next to the calibration itself.

    Depth: the raw release's depth maps are *not registered* to the RGB images (they
    come from the Kinect depth sensor, a different viewpoint and calibration); using
    them per RGB pixel is only approximately right.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(f"7-Scenes scene folder not found: {scene_dir}")
    source = str(scene_dir)
    split_files = {"train": scene_dir / "TrainSplit.txt", "test": scene_dir / "TestSplit.txt"}
    seq_split: dict[str, list[str]] = {}
    if any(p.is_file() for p in split_files.values()):
        for name, p in split_files.items():
            if not p.is_file():
                raise DatasetError(f"{source}: {p.name} is missing (the other split file exists)")
            seq_split[name] = _read_split(p)
    else:
        seqs = sorted(d.name for d in scene_dir.glob("seq-*") if d.is_dir())
        if not seqs:
            raise DatasetError(f"{source}: no TrainSplit.txt/TestSplit.txt and no seq-* folders")
        seq_split["train"] = seqs

    names, paths, depth_paths, poses = [], [], [], []
    split: dict[str, list[int]] = {}
    for split_name, seqs in seq_split.items():
        idx = split.setdefault(split_name, [])
        for seq in seqs:
            seq_dir = scene_dir / seq
            if not seq_dir.is_dir():
                raise DatasetError(
                    f"{source}: sequence folder {seq_dir} listed in "
                    f"{split_files[split_name].name} is missing (unzip {seq}.zip?)"
                )
            colors = sorted(seq_dir.glob("frame-*.color.png"))
            if not colors:
                raise DatasetError(f"{seq_dir}: no frame-*.color.png images")
            for c in colors:
                stem = c.name[: -len(".color.png")]
                pose_path = seq_dir / f"{stem}.pose.txt"
                if not pose_path.is_file():
                    raise DatasetError(f"{source}: pose file missing for {c}: {pose_path}")
                T = validated_pose(_read_pose(pose_path), f"{pose_path}")
                idx.append(len(names))
                names.append(f"{seq}/{c.name}")
                paths.append(c)
                depth_paths.append(seq_dir / f"{stem}.depth.png")
                poses.append(opengl_c2w_from_opencv_c2w(T))
        if not idx:
            raise DatasetError(f"{source}: split {split_name!r} is empty")
    check_files_exist(depth_paths, "depth images", source)

    w, h = SEVEN_SCENES_SIZE
    cam = Camera(w, h, focal_length, focal_length, *SEVEN_SCENES_PRINCIPAL, source="7-Scenes")
    return PosedImages(
        names=names,
        image_paths=paths,
        cameras=[cam] * len(names),
        c2w_opengl=np.stack(poses),
        split=split,
        depth_paths=depth_paths,
        depth_scale=1e-3,
        depth_invalid=SEVEN_SCENES_DEPTH_INVALID,
        source=source,
        extras={"format": "seven_scenes", "sequences": seq_split, "depth_registered_to_rgb": False},
    )
