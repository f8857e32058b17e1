"""Reading rosbag2 bags (mcap or sqlite3) without ROS, as typed camera frames.

:class:`BagReader` opens a bag directory (``metadata.yaml`` + storage file) or a bare
``.mcap`` / ``.db3`` file with ``rosbags`` and lists its topics. A cut-off MCAP file
(no footer: a recording that was killed, a partial copy) cannot be opened by
``rosbags``; it is read sequentially with the ``mcap`` package instead, up to the cut.
Storage errors while reading (a truncated or corrupt file) become
:class:`~neural_reloc.bags.errors.BagTruncatedError` *after* every message before the
damage has been delivered, so callers keep what they computed.

:class:`BagFrames` turns a bag into :class:`BagFrame` items in bag time order, each with
a :class:`~neural_reloc.tracking.Frame` (RGB image, camera from CameraInfo,
``odom_from_base`` from /tf and ``base_from_optical`` from /tf_static) and, when asked
for, the ground-truth ``map_from_optical`` (camera optical frame in ``map``) at the
image stamp, interpolated between ground-truth samples. Everything but the images (TF,
camera infos, ground truth) is read in a first pass, so lookups can interpolate.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.camera import Camera
from ..geometry.tf_tree import Coverage, TransformTree, normalize_frame_id
from ..geometry.trajectory import PoseTrack
from ..tracking import Frame
from . import messages as m
from .config import BagFrameIds, BagTopics
from .errors import BagError, BagTruncatedError

NS_PER_S = m.NS_PER_S


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes


def _fmt_time(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / NS_PER_S:.3f} s"


# ====================================================================== storage
class _RosbagsSource:
    """Messages through rosbags (indexed, in log-time order)."""

    def __init__(self, path: Path):
        from rosbags.rosbag2 import Reader

        self.path = path
        self.reader = Reader(path)
        self.reader.open()
        self.storage = "mcap" if any(True for _ in self._storage_files(".mcap")) else "sqlite3"
        self.topics: dict[str, TopicInfo] = {}
        for c in self.reader.connections:
            prev = self.topics.get(c.topic)
            count = c.msgcount + (prev.count if prev else 0)
            self.topics[c.topic] = TopicInfo(c.topic, c.msgtype, count)
        self.truncation: str | None = None

    def _storage_files(self, suffix: str):
        if self.path.is_file():
            return [self.path] if self.path.suffix == suffix else []
        return sorted(self.path.glob(f"*{suffix}"))

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        conns = [c for c in self.reader.connections if c.topic in topics]
        if not conns:
            return
        n, last = 0, None
        it = self.reader.messages(connections=conns)
        while True:
            try:
                conn, t, raw = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise BagTruncatedError(
                    f"{self.path}: the bag's data is truncated or corrupt after {n} messages of "
                    f"{sorted(topics)} (last at {_fmt_time(last)}): {type(e).__name__}: {e}"
                ) from e
            n, last = n + 1, t
            yield BagMessage(conn.topic, conn.msgtype, int(t), bytes(raw))

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001
            pass


class _McapScanSource:
    """A cut-off MCAP file, read record by record up to the cut (file order)."""

    def __init__(self, path: Path, open_error: Exception):
        self.path = path
        self.storage = "mcap"
        self.size = path.stat().st_size
        counts: dict[str, list] = {}
        self.truncation: str | None = None
        #: the data section ended properly (only the index/summary after it is cut)
        self.data_complete = False
        n = 0
        for topic, msgtype, _, _ in self._scan(None, count_only=True):
            info = counts.setdefault(topic, [msgtype, 0])
            info[1] += 1
            n += 1
        self.topics = {t: TopicInfo(t, v[0], v[1]) for t, v in counts.items()}
        if self.truncation is None and not self.data_complete:  # a complete file rosbags could not open
            raise BagError(f"{path}: cannot read the MCAP file: {open_error}")

    def _scan(self, topics: set[str] | None, count_only: bool = False):
        from mcap.exceptions import McapError
        from mcap.records import Channel, DataEnd, Footer, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas, channels = {}, {}
        n, last = 0, None
        with open(self.path, "rb") as f:
            try:
                # A record longer than the whole file can only be a cut-off one.
                for rec in StreamReader(f, record_size_limit=self.size).records:
                    if isinstance(rec, DataEnd):  # every message is before this record
                        self.data_complete = True
                        return
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec.name
                    elif isinstance(rec, Channel):
                        channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                    elif isinstance(rec, Message):
                        topic, msgtype = channels.get(rec.channel_id, ("", ""))
                        n, last = n + 1, rec.log_time
                        if topics is None or topic in topics:
                            yield topic, msgtype, int(rec.log_time), (b"" if count_only else bytes(rec.data))
                    elif isinstance(rec, Footer):
                        return
            except (McapError, struct.error, EOFError, ValueError, OSError) as e:
                why = "the file ends inside a record" if isinstance(e, (struct.error, EOFError)) else f"{type(e).__name__}: {e}"
                self.truncation = (
                    f"{self.path}: the MCAP file ends early ({self.size} bytes, no footer; {why}); "
                    f"{n} messages could be read, the last at {_fmt_time(last)}"
                )

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        for topic, msgtype, t, raw in self._scan(topics):
            yield BagMessage(topic, msgtype, t, raw)
        if self.truncation:
            raise BagTruncatedError(self.truncation)

    def close(self) -> None:
        pass


class _SqliteScanSource:
    """A truncated sqlite3 bag file, read in insertion order up to the damage.

    SQLite refuses a file shorter than its header says; a temporary copy whose header
    states the pages actually present opens, and its rows read until the first page
    that was cut off.
    """

    PAGE_SIZE_OFFSET, PAGE_COUNT_OFFSET = 16, 28

    def __init__(self, path: Path, open_error: Exception):
        import sqlite3
        import tempfile

        self.path = path
        self.storage = "sqlite3"
        self.size = path.stat().st_size
        self._tmpdir = tempfile.TemporaryDirectory(prefix="neural_reloc_bag_")
        self._copy = Path(self._tmpdir.name) / path.name
        with open(path, "rb") as src:
            head = src.read(100)
            if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
                raise BagError(f"{path}: not an SQLite database ({open_error})")
            (page_size,) = struct.unpack(">H", head[self.PAGE_SIZE_OFFSET : self.PAGE_SIZE_OFFSET + 2])
            page_size = 65536 if page_size == 1 else page_size
            (declared,) = struct.unpack(">I", head[self.PAGE_COUNT_OFFSET : self.PAGE_COUNT_OFFSET + 4])
            present = self.size // page_size
            if present >= declared:  # not a truncation: some other damage
                raise BagError(f"{path}: cannot open the bag: {open_error}")
            src.seek(0)
            with open(self._copy, "wb") as dst:
                remaining = present * page_size
                while remaining:
                    chunk = src.read(min(remaining, 1 << 24))
                    dst.write(chunk)
                    remaining -= len(chunk)
            with open(self._copy, "r+b") as dst:
                dst.seek(self.PAGE_COUNT_OFFSET)
                dst.write(struct.pack(">I", present))
        self._cut = f"cut at byte {self.size}, {present} of {declared} database pages present"
        try:
            self._db = sqlite3.connect(f"file:{self._copy}?mode=ro", uri=True)
            rows = self._db.execute("SELECT id, name, type FROM topics").fetchall()
        except sqlite3.DatabaseError as e:
            raise BagError(f"{path}: the sqlite3 bag is truncated ({self._cut}) and its tables are lost: {e}") from None
        self._topic_by_id = {i: (name, typ) for i, name, typ in rows}
        counts: dict[int, int] = dict.fromkeys(self._topic_by_id, 0)
        self.truncation = None
        for tid, _, _ in self._rows(None, with_data=False):
            counts[tid] = counts.get(tid, 0) + 1
        self.topics = {
            name: TopicInfo(name, typ, counts.get(i, 0)) for i, (name, typ) in self._topic_by_id.items()
        }

    def _rows(self, topic_ids: set[int] | None, with_data: bool = True):
        import sqlite3

        n, last = 0, None
        cols = "topic_id, timestamp, data" if with_data else "topic_id, timestamp, NULL"
        try:
            for tid, t, data in self._db.execute(f"SELECT {cols} FROM messages ORDER BY id"):
                n, last = n + 1, t
                if topic_ids is None or tid in topic_ids:
                    yield tid, int(t), data
        except sqlite3.DatabaseError as e:
            self.truncation = (
                f"{self.path}: the sqlite3 bag ends early ({self._cut}: {e}); {n} messages could be read, "
                f"the last at {_fmt_time(last)}"
            )

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        ids = {i for i, (name, _) in self._topic_by_id.items() if name in topics}
        for tid, t, raw in self._rows(ids):
            name, typ = self._topic_by_id[tid]
            yield BagMessage(name, typ, t, bytes(raw))
        if self.truncation:
            raise BagTruncatedError(self.truncation)

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._tmpdir.cleanup()


class BagReader:
    """A rosbag2 bag: its topics, and its raw messages by topic in bag time order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        self.source = self._open()
        self.frame_names: list[str] | None = self._custom_frame_names()

    def _open(self):
        from rosbags.rosbag2 import ReaderError

        p = self.path
        target = p
        if p.is_dir() and not (p / "metadata.yaml").is_file():
            files = sorted(p.glob("*.mcap")) + sorted(p.glob("*.db3"))
            if len(files) != 1:
                raise BagError(
                    f"{p}: not a rosbag2 directory (no metadata.yaml, and "
                    f"{'no' if not files else len(files)} .mcap/.db3 files to read directly)"
                )
            target = files[0]
        elif p.is_file() and p.suffix not in (".mcap", ".db3"):
            raise BagError(f"{p}: not a bag (expected a rosbag2 directory, a .mcap or a .db3 file)")
        try:
            return _RosbagsSource(target)
        except (ReaderError, FileNotFoundError, OSError, KeyError, ValueError) as e:
            files = [target] if target.is_file() else sorted(target.glob("*.mcap")) + sorted(target.glob("*.db3"))
            if len(files) == 1 and files[0].suffix == ".mcap":
                return _McapScanSource(files[0], e)
            if len(files) == 1 and files[0].suffix == ".db3":
                return _SqliteScanSource(files[0], e)
            raise BagError(f"{p}: cannot open the bag: {type(e).__name__}: {e}") from e
        except Exception as e:
            raise BagError(f"{p}: cannot open the bag (damaged or truncated?): {type(e).__name__}: {e}") from e

    def _custom_frame_names(self) -> list[str] | None:
        from .writer import FRAME_NAMES_KEY

        meta = (self.path if self.path.is_dir() else self.path.parent) / "metadata.yaml"
        if not meta.is_file():
            return None
        try:
            import yaml

            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            names = json.loads((info.get("custom_data") or {}).get(FRAME_NAMES_KEY, "null"))
        except Exception:  # noqa: BLE001 - names are a convenience, never required
            return None
        return [str(n) for n in names] if isinstance(names, list) else None

    # ------------------------------------------------------------ facts
    @property
    def storage(self) -> str:
        return self.source.storage

    @property
    def topics(self) -> dict[str, TopicInfo]:
        return dict(self.source.topics)

    @property
    def truncation(self) -> str | None:
        """Why the data ends early, when that is known at open time."""
        return self.source.truncation

    def describe_topics(self) -> str:
        if not self.source.topics:
            return "the bag has no topics"
        return "topics in the bag: " + ", ".join(
            f"{t.topic} ({t.msgtype}, {t.count})" for t in sorted(self.source.topics.values(), key=lambda t: t.topic)
        )

    def topics_of_type(self, msgtypes) -> list[str]:
        return sorted(t.topic for t in self.source.topics.values() if t.msgtype in msgtypes)

    def require_topic(self, topic: str, msgtypes: tuple[str, ...], role: str, hint: str = "") -> TopicInfo:
        """The topic's info; BagError naming the topic (and what the bag has) when it is
        missing, has no messages, or has another message type."""
        info = self.source.topics.get(topic)
        what = " or ".join(msgtypes)
        if self.truncation and (info is None or info.count == 0):
            raise BagTruncatedError(f"{self.truncation}; nothing of the {role} topic {topic!r} is readable before the cut")
        if info is None:
            similar = self.topics_of_type(msgtypes)
            alt = f"; topics of type {what} in the bag: {', '.join(similar)}" if similar else f"; the bag has no {what} topic"
            raise BagError(
                f"{self.path}: {role} topic {topic!r} is not in the bag{alt}{'; ' + hint if hint else ''} ({self.describe_topics()})"
            )
        if info.msgtype not in msgtypes:
            raise BagError(
                f"{self.path}: {role} topic {topic!r} has message type {info.msgtype!r}, expected {what}"
                f"{'; ' + hint if hint else ''}"
            )
        if info.count == 0:
            raise BagError(f"{self.path}: {role} topic {topic!r} ({info.msgtype}) has no messages")
        return info

    def messages(self, topics) -> Iterator[BagMessage]:
        return self.source.messages(set(topics))

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ====================================================================== frames
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
        self.gt_config = ground_truth
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
        self.gt_mode: str | None = None  # "topic", "tf" or None (no ground truth asked for)
        self.gt_topic: str | None = None
        if ground_truth is not None:
            self.gt_mode = self._check_ground_truth_source(ground_truth)
        # -- first pass: everything but the images
        small = [tp.camera_info]
        for t in (tp.tf, tp.tf_static):
            if t in reader.topics and reader.topics[t].msgtype == m.TF_MESSAGE:
                small.append(t)
            elif t in reader.topics:
                self.warnings.append(f"{t} has type {reader.topics[t].msgtype}, not {m.TF_MESSAGE}: ignored")
        if self.gt_mode == "topic":
            small.append(self.gt_topic)
        self.tf = TransformTree(cache_s=None, coverage=Coverage.from_seconds(cfg.tf_max_gap_s, cfg.tf_tolerance_s))
        self._rejected_tf: set[tuple[str, str]] = set()
        self.camera_infos: list[tuple[int, str, Camera]] = []
        gt_stamps, gt_poses, gt_frames = [], [], set()
        self.truncation: BagTruncatedError | None = None
        try:
            for msg in reader.messages(small):
                obj = m.deserialize(msg.raw, msg.msgtype)
                if msg.topic == tp.camera_info:
                    self._add_camera_info(obj, msg)
                elif msg.topic == self.gt_topic_or_none():
                    t, parent, child, T = m.stamped_pose_from_msg(obj, msg.msgtype)
                    gt_stamps.append(t or msg.log_time_ns)
                    gt_poses.append(T)
                    gt_frames.add((normalize_frame_id(parent), normalize_frame_id(child)))
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
        self.gt_track: PoseTrack | None = None
        self.gt_parent_frame = ""
        if self.gt_mode == "topic":
            if not gt_stamps:
                raise BagError(f"{reader.path}: no ground truth: the topic {self.gt_topic!r} has no readable messages")
            self.gt_track = PoseTrack(gt_stamps, gt_poses, what=f"ground truth {self.gt_topic}")
            parents = sorted({p for p, _ in gt_frames})
            self.gt_parent_frame = ", ".join(parents)
            if len(parents) > 1:
                raise BagError(f"{reader.path}: ground truth on {self.gt_topic!r} mixes parent frames {parents}")
        elif self.gt_mode == "tf":
            self._check_gt_tf(ground_truth)
        self._odometry = self._setup_odometry()
        self._extrinsics: dict[str, np.ndarray | None] = {}
        self._gt_body_from_optical: dict[str, np.ndarray] = {}
        # Frame names from bag-from-dataset's metadata; a cut-off bag has the first ones.
        names = reader.frame_names
        fits = names is not None and (
            len(names) == self.image_info.count or (self.truncation is not None and len(names) > self.image_info.count)
        )
        self.names = names if fits else None

    # ------------------------------------------------------------ setup helpers
    def gt_topic_or_none(self) -> str | None:
        return self.gt_topic if self.gt_mode == "topic" else None

    def _check_ground_truth_source(self, gt: GroundTruthConfig) -> str:
        r, tp = self.reader, self.config.topics
        if gt.tf_parent or gt.tf_child:
            if gt.topic:
                raise BagError("give the ground truth either as a topic or as a TF frame pair, not both")
            if not (gt.tf_parent and gt.tf_child):
                raise BagError("ground truth from TF needs both the parent and the child frame (--gt-tf PARENT CHILD)")
            if tp.tf not in r.topics and tp.tf_static not in r.topics:
                raise BagError(
                    f"{r.path}: no ground truth: ground truth TF {gt.tf_parent} -> {gt.tf_child} was asked for "
                    f"but the bag has neither {tp.tf!r} nor {tp.tf_static!r} ({r.describe_topics()})"
                )
            return "tf"
        self.gt_topic = gt.topic or tp.ground_truth
        info = r.topics.get(self.gt_topic)
        if info is None or info.count == 0:
            poses = r.topics_of_type(m.POSE_TYPES)
            raise BagError(
                f"{r.path}: no ground truth: topic {self.gt_topic!r} is "
                f"{'not in the bag' if info is None else 'empty'}; pass --gt-topic TOPIC or --gt-tf PARENT CHILD "
                f"(pose topics in the bag: {', '.join(poses) if poses else 'none'}; {r.describe_topics()})"
            )
        r.require_topic(self.gt_topic, m.POSE_TYPES, "ground truth")
        return "topic"

    def _check_gt_tf(self, gt: GroundTruthConfig) -> None:
        missing = [f for f in (gt.tf_parent, gt.tf_child) if normalize_frame_id(f) not in self.tf.frames()]
        if missing:
            raise BagError(
                f"{self.reader.path}: no ground truth: {'frames' if len(missing) > 1 else 'frame'} "
                f"{' and '.join(repr(f) for f in missing)} (of --gt-tf {gt.tf_parent} {gt.tf_child}) "
                f"{'are' if len(missing) > 1 else 'is'} not in the bag's TF; transforms in the bag: {self.tf.describe()}"
            )
        if self.tf.path(gt.tf_parent, gt.tf_child) is None:
            raise BagError(
                f"{self.reader.path}: no ground truth: TF frames {gt.tf_parent!r} and {gt.tf_child!r} are not connected; "
                f"transforms in the bag: {self.tf.describe()}"
            )
        self.gt_parent_frame = normalize_frame_id(gt.tf_parent)

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
            cam = m.camera_from_camera_info(obj, source=f"{self.config.topics.camera_info} at {_fmt_time(stamp)}")
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

    @property
    def has_odometry(self) -> bool:
        return self._odometry

    @property
    def num_frames(self) -> int:
        return self.image_info.count

    def describe(self) -> dict:
        """What was read, for results files."""
        gt = None
        if self.gt_mode == "topic":
            gt = {"topic": self.gt_topic, "parent_frame": self.gt_parent_frame, "samples": len(self.gt_track)}
        elif self.gt_mode == "tf":
            gt = {"tf_parent": self.gt_config.tf_parent, "tf_child": self.gt_config.tf_child}
        if gt is not None and self.gt_config.body_frame:
            gt["body_frame"] = self.gt_config.body_frame
        return {
            "bag": str(self.reader.path),
            "storage": self.reader.storage,
            "image_topic": self.config.topics.image,
            "image_type": self.image_info.msgtype,
            "images": self.image_info.count,
            "camera_info_topic": self.config.topics.camera_info,
            "odometry": (f"{self.config.frames.odom} -> {self.config.frames.base}" if self._odometry else None),
            "ground_truth": gt,
            "tf": self.tf.describe(),
            "topics": {t.topic: {"type": t.msgtype, "count": t.count} for t in self.reader.topics.values()},
            "warnings": list(self.warnings),
        }

    # ------------------------------------------------------------ per frame
    def _camera_at(self, stamp_ns: int) -> tuple[str, Camera]:
        import bisect

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
                f"to the camera frame {frame_id!r} at {_fmt_time(stamp_ns)}; transforms in the bag: {self.tf.describe()} "
                "(set use_odometry false to evaluate without odometry)"
            )
        return T

    def _ground_truth_at(self, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        gt = self.gt_config
        cover = Coverage.from_seconds(gt.max_gap_s, gt.tolerance_s)
        if self.gt_mode == "topic":
            T = self.gt_track.at(stamp_ns, cover.max_gap_ns, cover.tolerance_ns)
        else:
            T = self.tf.lookup_or_none(gt.tf_parent, gt.tf_child, stamp_ns, cover)
        if T is None or not gt.body_frame:
            return T
        if frame_id not in self._gt_body_from_optical:
            B = self.tf.lookup_or_none(gt.body_frame, frame_id, None)
            if B is None:
                raise BagError(
                    f"{self.reader.path}: ground truth is the pose of {gt.body_frame!r} but the bag has no static "
                    f"transform from it to the camera frame {frame_id!r}; transforms in the bag: {self.tf.describe()}"
                )
            self._gt_body_from_optical[frame_id] = B
        return T @ self._gt_body_from_optical[frame_id]

    def __iter__(self) -> Iterator[BagFrame]:
        tp, fr = self.config.topics, self.config.frames
        index = 0
        for msg in self.reader.messages([tp.image]):
            obj = m.deserialize(msg.raw, msg.msgtype)
            stamp = m.stamp_to_ns(obj.header.stamp) or msg.log_time_ns
            where = f"image {index} on {tp.image!r} at {_fmt_time(stamp)}"
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
            gt = self._ground_truth_at(stamp, frame_id) if self.gt_mode else None
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
