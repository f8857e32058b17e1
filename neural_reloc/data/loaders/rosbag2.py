"""rosbag2 bags (a bag directory, or a bare ``.mcap`` / ``.db3`` file) as a dataset.

Images, CameraInfo and the camera pose at each image stamp come from the bag's topics
(:mod:`neural_reloc.bags.dataset`); unlike the other loaders this one decodes images,
since a bag holds them as messages: the used ones are unpacked once into PNG files.
Options (keyword arguments of :func:`~neural_reloc.data.load_dataset`): ``images_dir``
and the fields of :class:`~neural_reloc.bags.dataset.BagDatasetConfig` (image and
CameraInfo topics, pose topic or TF pair, body frame, every n-th image, test hold-out),
all with defaults that read a ``bag-from-dataset`` bag.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..posed_images import DatasetError, PosedImages

STORAGE_SUFFIXES = (".mcap", ".db3")


def is_rosbag2(path: Path) -> bool:
    """A .mcap/.db3 file, a folder with a rosbag2 metadata.yaml, or a folder holding
    exactly one .mcap/.db3 file (what :class:`~neural_reloc.bags.BagReader` opens)."""
    if path.is_file():
        return path.suffix in STORAGE_SUFFIXES
    meta = path / "metadata.yaml"
    if meta.is_file():
        try:
            return "rosbag2_bagfile_information" in meta.read_text(errors="replace")
        except OSError:
            return False
    return len([p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file()]) == 1


def load_rosbag2(path: str | Path, images_dir: str | Path | None = None, **options) -> PosedImages:
    from ...bags.dataset import BagDatasetConfig, posed_images_from_bag

    known = [f.name for f in dataclasses.fields(BagDatasetConfig)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DatasetError(f"{path}: unknown bag option(s) {', '.join(unknown)} (known: images_dir, {', '.join(known)})")
    return posed_images_from_bag(path, BagDatasetConfig(**options), images_dir)
