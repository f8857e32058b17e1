"""Opening a rosbag2 bag without ROS and iterating its raw messages.

:class:`BagReader` opens a bag directory (``metadata.yaml`` + storage file) or a bare
``.mcap`` / ``.db3`` file with ``rosbags`` and lists its topics. A cut-off file, which
``rosbags`` cannot open, is read up to the cut by :mod:`.salvage`. Storage errors while
reading (a truncated or corrupt file) become
:class:`~neural_reloc.bags.errors.BagTruncatedError` *after* every message before the
damage has been delivered, so callers keep what they computed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import BagError, BagTruncatedError
from .messages import NS_PER_S


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


def fmt_time(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / NS_PER_S:.3f} s"


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
                    f"{sorted(topics)} (last at {fmt_time(last)}): {type(e).__name__}: {e}"
                ) from e
            n, last = n + 1, t
            yield BagMessage(conn.topic, conn.msgtype, int(t), bytes(raw))

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001
            pass


class BagReader:
    """A rosbag2 bag: its topics, and its raw messages by topic in bag time order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if not (self.path.is_dir() or self.path.is_file()):  # a FIFO or device would block or never end
            raise BagError(f"{self.path}: not a regular file or directory (a pipe or device cannot be a bag)")
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
            if len(files) == 1 and files[0].suffix in (".mcap", ".db3"):
                from .salvage import McapScanSource, SqliteScanSource

                scan = McapScanSource if files[0].suffix == ".mcap" else SqliteScanSource
                return scan(files[0], e)
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
