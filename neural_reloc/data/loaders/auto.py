"""Pick the right loader from what a path looks like."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..posed_images import DatasetError, PosedImages
from .cambridge import load_cambridge
from .colmap import load_colmap
from .llff import load_llff
from .rosbag2 import is_rosbag2, load_rosbag2
from .seven_scenes import load_seven_scenes
from .transforms_json import load_transforms_json

LOADERS: dict[str, Callable[..., PosedImages]] = {
    "transforms_json": load_transforms_json,
    "colmap": load_colmap,
    "seven_scenes": load_seven_scenes,
    "cambridge": load_cambridge,
    "llff": load_llff,
    "rosbag2": load_rosbag2,
}


def _is_colmap_model(d: Path) -> bool:
    return d.is_dir() and any((d / f"cameras.{e}").is_file() for e in ("bin", "txt"))


def _is_seven_scenes(d: Path) -> bool:
    if (d / "TrainSplit.txt").is_file() or (d / "TestSplit.txt").is_file():
        return True
    return any(next(s.glob("frame-*.pose.txt"), None) for s in d.glob("seq-*") if s.is_dir())


#: What :func:`detect_format` checks, in order (for the error message).
LOOKED_FOR = (
    "a transforms*.json file, or a folder with transforms.json or transforms_train.json",
    "a COLMAP model folder (cameras.bin/.txt), or a folder with sparse/0/ or sparse/",
    "a 7-Scenes scene (TrainSplit.txt/TestSplit.txt or seq-*/frame-*.pose.txt)",
    "a Cambridge Landmarks scene (dataset_train.txt, reconstruction.nvm)",
    "an LLFF scene (poses_bounds.npy)",
    "a rosbag2 bag (a folder with metadata.yaml or one .mcap/.db3 file, or a .mcap/.db3 file)",
)


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(loader name, path to pass it) for a dataset path; DatasetError if unknown."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path does not exist: {path}")
    if path.is_file():
        name = path.name
        if path.suffix.lower() == ".json":
            return "transforms_json", path
        if name == "poses_bounds.npy":
            return "llff", path.parent
        if name in ("dataset_train.txt", "dataset_test.txt") or path.suffix.lower() == ".nvm":
            return "cambridge", path.parent
        if name in ("TrainSplit.txt", "TestSplit.txt"):
            return "seven_scenes", path.parent
        if path.stem in ("cameras", "images", "points3D") and path.suffix in (".bin", ".txt"):
            return "colmap", path.parent
        if is_rosbag2(path):
            return "rosbag2", path
    else:
        if (path / "transforms.json").is_file() or (path / "transforms_train.json").is_file():
            return "transforms_json", path
        if _is_colmap_model(path):
            return "colmap", path
        for sub in (path / "sparse" / "0", path / "sparse"):
            if _is_colmap_model(sub):
                return "colmap", sub
        if _is_seven_scenes(path):
            return "seven_scenes", path
        if (path / "dataset_train.txt").is_file() or (path / "reconstruction.nvm").is_file():
            return "cambridge", path
        if (path / "poses_bounds.npy").is_file():
            return "llff", path
        if is_rosbag2(path):
            return "rosbag2", path
    raise DatasetError(
        f"{path}: unknown dataset layout; looked for " + "; ".join(LOOKED_FOR)
    )


def load_dataset(path: str | Path, format: str | None = None, **kwargs) -> PosedImages:
    """Load any supported dataset, detecting the format from the path.

    ``format`` forces a loader (one of :data:`LOADERS`); ``kwargs`` go to the loader
    (e.g. ``split_file``, ``images_dir``, ``factor``, ``focal_length``). Detection order:
    transforms.json (nerfstudio/instant-ngp/Blender), COLMAP (the folder itself,
    ``sparse/0`` or ``sparse``), 7-Scenes, Cambridge, LLFF, rosbag2 (its options, e.g.
    ``pose_topic``, are :class:`~neural_reloc.bags.dataset.BagDatasetConfig`'s); so an
    LLFF folder that also ships ``sparse/0`` loads the COLMAP model (exact intrinsics)
    unless ``format="llff"``.
    """
    if format is not None:
        if format not in LOADERS:
            raise DatasetError(f"unknown dataset format {format!r} (known: {', '.join(LOADERS)})")
        return LOADERS[format](path, **kwargs)
    name, target = detect_format(path)
    return LOADERS[name](target, **kwargs)
