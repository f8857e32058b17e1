"""Where a bag says the camera was: ground truth for evaluation, training poses for a map.

A :class:`PoseSource` takes the camera optical frame's pose in the map at an image
stamp from one of

* a pose topic (PoseStamped, PoseWithCovarianceStamped, TransformStamped, Odometry),
  its samples interpolated (:class:`~neural_reloc.geometry.trajectory.PoseTrack`);
* a TF frame pair ``tf_parent -> tf_child`` in the bag's TF tree;

and, when those poses are of another frame than the camera's (``body_frame``, e.g.
base_link), applies the bag's static transform from that frame to the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.tf_tree import Coverage, TransformTree, normalize_frame_id
from ..geometry.trajectory import PoseTrack
from . import messages as m
from .config import BagTopics
from .errors import BagError
from .storage import BagMessage, BagReader


@dataclass
class GroundTruthConfig:
    """Where the ground truth is: a pose topic, or a TF frame pair (--gt-tf)."""

    #: pose topic (PoseStamped, PoseWithCovarianceStamped, TransformStamped, Odometry);
    #: empty: the ``ground_truth`` topic of BagTopics (when tf_parent/tf_child are empty)
    topic: str = ""
    #: ground truth as the TF transform tf_parent -> tf_child (both set, topic empty)
    tf_parent: str = ""
    tf_child: str = ""
    #: the frame whose pose the ground truth gives, when it is not the images' camera
    #: optical frame (e.g. base_link); the static TF from it to the camera is applied
    body_frame: str = ""
    #: ground truth is interpolated between samples at most this far apart (seconds)
    max_gap_s: float = 0.25
    #: and taken from the nearest sample this close to an image outside them (seconds)
    tolerance_s: float = 0.01


class PoseSource:
    """The camera poses a :class:`GroundTruthConfig` points at, in three steps:
    construction checks the source against the bag's topics (BagError naming what is
    missing), :meth:`add` takes the pose topic's messages during the bag's first pass,
    :meth:`finish` checks what was read (with the bag's TF tree); then :meth:`at`."""

    def __init__(self, reader: BagReader, config: GroundTruthConfig, topics: BagTopics):
        self.reader, self.config = reader, config
        self.topic: str | None = None  # the pose topic, None when the poses come from TF
        self.parent_frame = ""
        self.track: PoseTrack | None = None
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._frames: set[tuple[str, str]] = set()
        self._body_from_optical: dict[str, np.ndarray] = {}
        self.coverage = Coverage.from_seconds(config.max_gap_s, config.tolerance_s)
        gt, r = config, reader
        if gt.tf_parent or gt.tf_child:
            if gt.topic:
                raise BagError("give the ground truth either as a topic or as a TF frame pair, not both")
            if not (gt.tf_parent and gt.tf_child):
                raise BagError("ground truth from TF needs both the parent and the child frame (--gt-tf PARENT CHILD)")
            if topics.tf not in r.topics and topics.tf_static not in r.topics:
                raise BagError(
                    f"{r.path}: no ground truth: ground truth TF {gt.tf_parent} -> {gt.tf_child} was asked for "
                    f"but the bag has neither {topics.tf!r} nor {topics.tf_static!r} ({r.describe_topics()})"
                )
            return
        self.topic = gt.topic or topics.ground_truth
        info = r.topics.get(self.topic)
        if info is None or info.count == 0:
            poses = r.topics_of_type(m.POSE_TYPES)
            raise BagError(
                f"{r.path}: no ground truth: topic {self.topic!r} is "
                f"{'not in the bag' if info is None else 'empty'}; pass --gt-topic TOPIC or --gt-tf PARENT CHILD "
                f"(pose topics in the bag: {', '.join(poses) if poses else 'none'}; {r.describe_topics()})"
            )
        r.require_topic(self.topic, m.POSE_TYPES, "ground truth")

    @property
    def mode(self) -> str:
        """"topic" or "tf"."""
        return "tf" if self.topic is None else "topic"

    def add(self, obj, msg: BagMessage) -> None:
        """One message of the pose topic (deserialized)."""
        t, parent, child, T = m.stamped_pose_from_msg(obj, msg.msgtype)
        self._stamps.append(t or msg.log_time_ns)
        self._poses.append(T)
        self._frames.add((normalize_frame_id(parent), normalize_frame_id(child)))

    def finish(self, tf: TransformTree) -> None:
        """Check what the first pass read: samples on the topic, or the TF frames."""
        path, gt = self.reader.path, self.config
        if self.topic is not None:
            if not self._stamps:
                raise BagError(f"{path}: no ground truth: the topic {self.topic!r} has no readable messages")
            self.track = PoseTrack(self._stamps, self._poses, what=f"ground truth {self.topic}")
            parents = sorted({p for p, _ in self._frames})
            self.parent_frame = ", ".join(parents)
            if len(parents) > 1:
                raise BagError(f"{path}: ground truth on {self.topic!r} mixes parent frames {parents}")
            return
        missing = [f for f in (gt.tf_parent, gt.tf_child) if normalize_frame_id(f) not in tf.frames()]
        if missing:
            raise BagError(
                f"{path}: no ground truth: {'frames' if len(missing) > 1 else 'frame'} "
                f"{' and '.join(repr(f) for f in missing)} (of --gt-tf {gt.tf_parent} {gt.tf_child}) "
                f"{'are' if len(missing) > 1 else 'is'} not in the bag's TF; transforms in the bag: {tf.describe()}"
            )
        if tf.path(gt.tf_parent, gt.tf_child) is None:
            raise BagError(
                f"{path}: no ground truth: TF frames {gt.tf_parent!r} and {gt.tf_child!r} are not connected; "
                f"transforms in the bag: {tf.describe()}"
            )
        self.parent_frame = normalize_frame_id(gt.tf_parent)

    def at(self, stamp_ns: int, frame_id: str, tf: TransformTree) -> np.ndarray | None:
        """``map_from_optical`` of the camera frame ``frame_id`` at ``stamp_ns``, None when
        the source has no pose then."""
        gt, cover = self.config, self.coverage
        if self.track is not None:
            T = self.track.at(stamp_ns, cover.max_gap_ns, cover.tolerance_ns)
        else:
            T = tf.lookup_or_none(gt.tf_parent, gt.tf_child, stamp_ns, cover)
        if T is None or not gt.body_frame:
            return T
        if frame_id not in self._body_from_optical:
            B = tf.lookup_or_none(gt.body_frame, frame_id, None)
            if B is None:
                raise BagError(
                    f"{self.reader.path}: ground truth is the pose of {gt.body_frame!r} but the bag has no static "
                    f"transform from it to the camera frame {frame_id!r}; transforms in the bag: {tf.describe()}"
                )
            self._body_from_optical[frame_id] = B
        return T @ self._body_from_optical[frame_id]

    def describe(self) -> dict:
        gt = self.config
        if self.topic is not None:
            out = {"topic": self.topic, "parent_frame": self.parent_frame, "samples": len(self.track) if self.track else 0}
        else:
            out = {"tf_parent": gt.tf_parent, "tf_child": gt.tf_child}
        if gt.body_frame:
            out["body_frame"] = gt.body_frame
        return out
