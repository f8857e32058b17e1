"""Reading what a cut-off bag file still holds (a recording that was killed, a partial
copy), which ``rosbags`` refuses to open: an MCAP file without its footer is read record
by record with the ``mcap`` package, a truncated sqlite3 file through a copy whose
header states the pages present. Both deliver every message before the cut, then raise
:class:`~neural_reloc.bags.errors.BagTruncatedError` saying where the data ends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from .errors import BagError, BagTruncatedError
from .storage import BagMessage, TopicInfo, fmt_time


class McapScanSource:
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
                    f"{n} messages could be read, the last at {fmt_time(last)}"
                )

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        for topic, msgtype, t, raw in self._scan(topics):
            yield BagMessage(topic, msgtype, t, raw)
        if self.truncation:
            raise BagTruncatedError(self.truncation)

    def close(self) -> None:
        pass


class SqliteScanSource:
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
                f"the last at {fmt_time(last)}"
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
