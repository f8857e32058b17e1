"""A bag as a posed image dataset: what ``build-map --data some.mcap`` trains on.

:func:`posed_images_from_bag` reads a bag's images, their CameraInfo and the camera
pose at each image stamp (:class:`~neural_reloc.bags.poses.PoseSource`: a pose topic,
a TF frame pair, optionally of a body frame) and returns
:class:`~neural_reloc.data.posed_images.PosedImages` like every dataset loader does.
Images without a pose are skipped and counted. ``PosedImages`` reads images from
files, so each used image is written once as a PNG into ``images_dir`` (by default a
folder under the user's cache, one per bag and options); a ``source.json`` there names
the bag the PNGs came from, and PNGs of another bag (or another version of the file)
are replaced. Frame names are the ones ``bag-from-dataset`` recorded, else the image's
index in the bag.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import BagTopics
from .errors import BagError
from .poses import GroundTruthConfig
from .reader import BagReadConfig, read_frames

SOURCE_FILE = "source.json"


@dataclass
class BagDatasetConfig:
    """Which topics and frames of a bag make the posed images (the defaults are what
    ``bag-from-dataset`` writes; the map_builder node's bag parameters set the rest)."""

    image_topic: str = BagTopics.image
    camera_info_topic: str = BagTopics.camera_info
    #: camera optical frame pose in map; empty: the bag default /ground_truth/camera_pose,
    #: unless tf_parent and tf_child are set
    pose_topic: str = ""
    #: camera poses as the TF transform tf_parent -> tf_child instead
    tf_parent: str = ""
    tf_child: str = ""
    #: the frame the poses are of when not the images' optical frame (e.g. base_link)
    pose_body_frame: str = ""
    #: use every n-th image
    every_nth: int = 1
    #: hold out every k-th used image as a test view (0: none)
    test_every: int = 0

    def validate(self) -> None:
        if bool(self.tf_parent) != bool(self.tf_child):
            raise ValueError("tf_parent and tf_child must be set together (the TF pair that gives the camera pose)")
        if self.pose_topic and self.tf_parent:
            raise ValueError("set pose_topic or tf_parent/tf_child, not both")
        if self.every_nth < 1 or self.test_every < 0:
            raise ValueError(f"every_nth must be >= 1 and test_every >= 0 (got {self.every_nth}, {self.test_every})")


def _storage_files(bag: Path) -> list[Path]:
    return [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3", ".yaml"))


def bag_identity(bag: str | Path, config: BagDatasetConfig) -> dict:
    """What the unpacked images depend on: the bag's files (path, size, mtime) and the
    options; equal identities give equal images."""
    bag = Path(bag).resolve()
    if not bag.exists():
        raise BagError(f"bag not found: {bag}")
    files = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in _storage_files(bag)]
    return {"bag": str(bag), "files": files, "options": asdict(config)}


def default_images_dir(bag: str | Path, config: BagDatasetConfig) -> Path:
    """``$XDG_CACHE_HOME/neural_reloc/bag_images/<bag name>-<hash of its identity>``."""
    ident = bag_identity(bag, config)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "neural_reloc" / "bag_images" / f"{Path(ident['bag']).name}-{key}"


def _prepare_images_dir(images_dir: Path, ident: dict) -> None:
    """Create ``images_dir``; drop PNGs unpacked from another bag (or version of it)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    stamp = images_dir / SOURCE_FILE
    try:
        same = json.loads(stamp.read_text()) == ident
    except (OSError, ValueError):
        same = False
    if not same:
        for png in images_dir.glob("*.png"):
            if png.stem.isdigit():  # ours: <index in the bag>.png
                png.unlink()
        stamp.write_text(json.dumps(ident, indent=1))


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")  # concurrent loaders never share one
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {tmp}")
    tmp.replace(path)


def posed_images_from_bag(bag: str | Path, config: BagDatasetConfig | None = None, images_dir: str | Path | None = None):
    """The bag's posed images (see the module docstring). ``extras["bag"]`` says how
    many images were used, held out and skipped without a pose."""
    from ..data.posed_images import DatasetError, PosedImages
    from ..geometry.frames import opengl_c2w_from_opencv_c2w

    cfg = config or BagDatasetConfig()
    cfg.validate()
    ident = bag_identity(bag, cfg)
    images_dir = Path(images_dir) if images_dir is not None else default_images_dir(bag, cfg)
    read_cfg = BagReadConfig(topics=BagTopics(image=cfg.image_topic, camera_info=cfg.camera_info_topic), use_odometry=False)
    gt = GroundTruthConfig(topic=cfg.pose_topic, tf_parent=cfg.tf_parent, tf_child=cfg.tf_child, body_frame=cfg.pose_body_frame)
    _prepare_images_dir(images_dir, ident)
    names, paths, cameras, poses, stamps = [], [], [], [], []
    skipped = 0
    for bf in read_frames(bag, read_cfg, gt):
        if bf.index % cfg.every_nth:
            continue
        if bf.gt_map_from_optical is None:
            skipped += 1
            continue
        path = images_dir / f"{bf.index:06d}.png"
        if not path.is_file():
            _write_png(path, bf.frame.image_rgb)
        names.append(bf.name)
        paths.append(path)
        cameras.append(bf.frame.camera)
        poses.append(opengl_c2w_from_opencv_c2w(bf.gt_map_from_optical))
        stamps.append(bf.stamp_ns)
    if not names:
        raise DatasetError(
            f"{bag}: no image with a pose (skipped {skipped} without one); check the image topic, the pose topic "
            "or the TF pair that gives the camera pose"
        )
    n, k = len(names), cfg.test_every
    test = [i for i in range(n) if k and i % k == k // 2]
    held_out = set(test)
    split = {"train": [i for i in range(n) if i not in held_out]}
    if test:
        split["test"] = test
    return PosedImages(
        names=names,
        image_paths=paths,
        cameras=cameras,
        c2w_opengl=np.stack(poses),
        split=split,
        timestamps_ns=np.array(stamps, dtype=np.int64),
        source=f"bag {bag}",
        extras={"bag": {"images_dir": str(images_dir), "used": n, "held_out": len(test), "skipped_without_pose": skipped}},
    )
