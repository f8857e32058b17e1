"""A bag as typed camera frames, in bag time order.

:class:`BagFrames` turns a bag (:class:`~neural_reloc.bags.storage.BagReader`) into
:class:`BagFrame` items, each with a :class:`~neural_reloc.tracking.Frame` (RGB image,
camera from CameraInfo, ``odom_from_base`` from /tf and ``base_from_optical`` from
/tf_static) and, when asked for, the ground-truth ``map_from_optical`` (camera optical
frame in ``map``) at the image stamp from a :class:`~neural_reloc.bags.poses.PoseSource`.
Everything but the images (TF, camera infos, pose messages) is read in a first pass, so
lookups can interpolate.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.camera import Camera
from ..geometry.tf_tree import Coverage, TransformTree, normalize_frame_id
from ..tracking import Frame
from . import messages as m
from .config import BagFrameIds, BagTopics
from .errors import BagError, BagTruncatedError
from .poses import GroundTruthConfig, PoseSource
from .storage import BagMessage, BagReader, fmt_time

__all__ = ["BagFrame", "BagFrames", "BagReadConfig", "BagReader", "GroundTruthConfig", "read_frames"]


@dataclass
class BagReadConfig:
    topics: BagTopics = field(default_factory=BagTopics)
    frames: BagFrameIds = field(default_factory=BagFrameIds)
    #: give frames odom->base_link from /tf when the bag has it (else None: no odometry)
    use_odometry: bool = True
    #: TF samples are interpolated across gaps up to this long (seconds)
    tf_max_gap_s: float = 1.0
    #: and the nearest sample is used this close outside them (seconds)
    tf_tolerance_s: float = 0.01


@dataclass
class BagFrame:
    """One image of a bag as the relocalization session sees it, plus evaluation data."""

    index: int
    name: str
    #: image header stamp (the bag's log time when the header has none)
    stamp_ns: int
    log_time_ns: int
    frame_id: str
    frame: Frame
    #: ground truth: camera optical frame in map at stamp_ns (None: no ground truth)
    gt_map_from_optical: np.ndarray | None = None


class BagFrames:
    """Typed, time-ordered camera frames of a bag (see the module docstring).

    Construction checks everything a run needs and raises :class:`BagError` naming
    what is missing (topics, message types, camera infos, transforms, ground truth)
    before any image is read.
    """

    def __init__(self, reader: BagReader, config: BagReadConfig | None = None, ground_truth: GroundTruthConfig | None = None):
        self.reader = reader
        self.config = cfg = config or BagReadConfig()
        self.warnings: list[str] = []
        tp = cfg.topics
        self.image_info = reader.require_topic(
            tp.image, m.IMAGE_TYPES, "image", hint="choose the image topic with --image-topic"
        )
        try:
            self.info_info = reader.require_topic(tp.camera_info, (m.CAMERA_INFO,), "camera info")
        except BagError as e:
            raise BagError(
                f"images on {tp.image!r} have no sensor_msgs/msg/CameraInfo: {e}; pass --camera-info-topic "
                "if it has another name"
            ) from None
        #: the ground truth (None: not asked for)
        self.poses = None if ground_truth is None else PoseSource(reader, ground_truth, tp)
        # -- first pass: everything but the images
        small = [tp.camera_info]
        for t in (tp.tf, tp.tf_static):
            if t in reader.topics and reader.topics[t].msgtype == m.TF_MESSAGE:
                small.append(t)
            elif t in reader.topics:
                self.warnings.append(f"{t} has type {reader.topics[t].msgtype}, not {m.TF_MESSAGE}: ignored")
        pose_topic = self.poses.topic if self.poses else None
        if pose_topic:
            small.append(pose_topic)
        self.tf = TransformTree(cache_s=None, coverage=Coverage.from_seconds(cfg.tf_max_gap_s, cfg.tf_tolerance_s))
        self._rejected_tf: set[tuple[str, str]] = set()
        self.camera_infos: list[tuple[int, str, Camera]] = []
        self.truncation: BagTruncatedError | None = None
        try:
            for msg in reader.messages(small):
                obj = m.deserialize(msg.raw, msg.msgtype)
                if msg.topic == tp.camera_info:
                    self._add_camera_info(obj, msg)
                elif msg.topic == pose_topic:
                    self.poses.add(obj, msg)
                else:
                    self._add_transforms(obj, msg)
        except BagTruncatedError as e:
            self.truncation = e  # images before the cut are still delivered, then this is raised
        if not self.camera_infos:
            raise BagError(
                f"{reader.path}: images on {tp.image!r} have no readable sensor_msgs/msg/CameraInfo on "
                f"{tp.camera_info!r}{' before the bag is cut off' if self.truncation else ''}"
            )
        self.camera_infos.sort(key=lambda x: x[0])
        self._info_stamps = [s for s, _, _ in self.camera_infos]
        if self.poses:
            self.poses.finish(self.tf)
        self._odometry = self._setup_odometry()
        self._extrinsics: dict[str, np.ndarray | None] = {}
        # Frame names from bag-from-dataset's metadata; a cut-off bag has the first ones.
        names = reader.frame_names
        fits = names is not None and (
            len(names) == self.image_info.count or (self.truncation is not None and len(names) > self.image_info.count)
        )
        self.names = names if fits else None

    @property
    def has_odometry(self) -> bool:
        return self._odometry

    @property
    def num_frames(self) -> int:
        return self.image_info.count

    # ------------------------------------------------------------ first pass
    def _add_transforms(self, obj, msg: BagMessage) -> None:
        static = msg.topic == self.config.topics.tf_static
        for tr in obj.transforms:
            parent, child = tr.header.frame_id, tr.child_frame_id
            try:
                T = m.parent_from_child_from_transform_msg(tr.transform)
                self.tf.set_transform(parent, child, m.stamp_to_ns(tr.header.stamp) or msg.log_time_ns, T, static)
            except ValueError as e:  # once per edge, as the node's listener does
                if (parent, child) not in self._rejected_tf:
                    self._rejected_tf.add((parent, child))
                    self.warnings.append(f"ignoring a transform on {msg.topic}: {e}")

    def _add_camera_info(self, obj, msg: BagMessage) -> None:
        stamp = m.stamp_to_ns(obj.header.stamp) or msg.log_time_ns
        try:
            cam = m.camera_from_camera_info(obj, source=f"{self.config.topics.camera_info} at {fmt_time(stamp)}")
        except ValueError as e:
            raise BagError(f"{self.reader.path}: unusable camera info: {e}") from None
        self.camera_infos.append((stamp, normalize_frame_id(obj.header.frame_id), cam))

    def _setup_odometry(self) -> bool:
        cfg, fr = self.config, self.config.frames
        if not cfg.use_odometry:
            return False
        if fr.odom not in self.tf.frames() or fr.base not in self.tf.frames():
            return False
        if self.tf.path(fr.odom, fr.base) is None:
            self.warnings.append(f"TF frames {fr.odom!r} and {fr.base!r} are not connected: no odometry")
            return False
        return True

    # ------------------------------------------------------------ facts
    def describe(self) -> dict:
        """What was read, for results files."""
        return {
            "bag": str(self.reader.path),
            "storage": self.reader.storage,
            "image_topic": self.config.topics.image,
            "image_type": self.image_info.msgtype,
            "images": self.image_info.count,
            "camera_info_topic": self.config.topics.camera_info,
            "odometry": (f"{self.config.frames.odom} -> {self.config.frames.base}" if self._odometry else None),
            "ground_truth": self.poses.describe() if self.poses else None,
            "tf": self.tf.describe(),
            "topics": {t.topic: {"type": t.msgtype, "count": t.count} for t in self.reader.topics.values()},
            "warnings": list(self.warnings),
        }

    # ------------------------------------------------------------ per frame
    def _camera_at(self, stamp_ns: int) -> tuple[str, Camera]:
        i = max(bisect.bisect_right(self._info_stamps, stamp_ns) - 1, 0)
        _, frame_id, cam = self.camera_infos[i]
        return frame_id, cam

    def _base_from_optical(self, frame_id: str, stamp_ns: int) -> np.ndarray | None:
        fr = self.config.frames
        if frame_id == fr.base:
            return np.eye(4)
        T = self.tf.lookup_or_none(fr.base, frame_id, None)  # static extrinsic
        if T is None:
            T = self.tf.lookup_or_none(fr.base, frame_id, stamp_ns)
        if T is None:
            raise BagError(
                f"{self.reader.path}: the bag has odometry ({fr.odom} -> {fr.base}) but no transform from {fr.base!r} "
                f"to the camera frame {frame_id!r} at {fmt_time(stamp_ns)}; transforms in the bag: {self.tf.describe()} "
                "(set use_odometry false to evaluate without odometry)"
            )
        return T

    def __iter__(self) -> Iterator[BagFrame]:
        tp, fr = self.config.topics, self.config.frames
        index = 0
        for msg in self.reader.messages([tp.image]):
            obj = m.deserialize(msg.raw, msg.msgtype)
            stamp = m.stamp_to_ns(obj.header.stamp) or msg.log_time_ns
            where = f"image {index} on {tp.image!r} at {fmt_time(stamp)}"
            try:
                rgb = m.rgb_from_image_msg(obj, msg.msgtype)
            except ValueError as e:
                raise BagError(f"{self.reader.path}: {where}: {e}") from None
            info_frame, cam = self._camera_at(stamp)
            frame_id = normalize_frame_id(obj.header.frame_id) or info_frame or fr.camera_optical
            if (cam.width, cam.height) != (rgb.shape[1], rgb.shape[0]):
                raise BagError(
                    f"{self.reader.path}: {where} is {rgb.shape[1]}x{rgb.shape[0]} but its camera info on "
                    f"{tp.camera_info!r} says {cam.width}x{cam.height}"
                )
            odom_from_base = base_from_optical = None
            if self._odometry:
                odom_from_base = self.tf.lookup_or_none(fr.odom, fr.base, stamp)
                if frame_id not in self._extrinsics:
                    self._extrinsics[frame_id] = self._base_from_optical(frame_id, stamp)
                base_from_optical = self._extrinsics[frame_id]
            gt = self.poses.at(stamp, frame_id, self.tf) if self.poses else None
            name = self.names[index] if self.names else f"{index:05d}"
            yield BagFrame(
                index=index,
                name=name,
                stamp_ns=stamp,
                log_time_ns=msg.log_time_ns,
                frame_id=frame_id,
                frame=Frame(rgb, cam, stamp, odom_from_base=odom_from_base, base_from_optical=base_from_optical),
                gt_map_from_optical=gt,
            )
            index += 1
        if self.truncation is not None:
            raise self.truncation


def read_frames(path: str | Path, config: BagReadConfig | None = None, ground_truth: GroundTruthConfig | None = None) -> Iterator[BagFrame]:
    """Iterate over a bag's frames (opens and closes the bag)."""
    with BagReader(path) as reader:
        yield from BagFrames(reader, config, ground_truth)
