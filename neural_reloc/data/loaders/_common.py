"""Helpers shared by the dataset loaders (no format knowledge here).

Nothing in this module decodes an image: sizes come from file headers only.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...geometry.se3 import check_pose, orthonormalize
from ..posed_images import DatasetError

#: Extensions tried (in this order) for image paths given without one.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")

#: How many missing files an error message lists.
MAX_LISTED = 5

#: LLFF / mip-NeRF hold-out: every ``LLFF_HOLD``-th image (index % 8 == 0) is "test".
LLFF_HOLD = 8


# ------------------------------------------------------------------ paths
def normalize_relpath(p: str | Path) -> str:
    """Canonical relative path for matching: forward slashes, no ``./``, no ``a/../``."""
    s = str(p).replace("\\", "/").strip()
    s = posixpath.normpath(s) if s else s
    while s.startswith("./"):
        s = s[2:]
    return "" if s == "." else s


def strip_extension(p: str) -> str:
    stem, ext = posixpath.splitext(p)
    return stem if ext else p


def resolve_image_path(base: Path, rel: str) -> Path:
    """``base / rel``; when ``rel`` has no existing file and no extension (Blender
    synthetic style ``./train/r_0``), try the usual image extensions."""
    p = base / rel
    if p.is_file() or posixpath.splitext(rel)[1].lower() in {e.lower() for e in IMAGE_EXTENSIONS}:
        return p
    for ext in IMAGE_EXTENSIONS:
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return p


def check_files_exist(paths: Sequence[Path], what: str, source: str, hint: str = "") -> None:
    """Raise a DatasetError listing the first few missing files, if any."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        listed = ", ".join(missing[:MAX_LISTED])
        more = f" (and {len(missing) - MAX_LISTED} more)" if len(missing) > MAX_LISTED else ""
        raise DatasetError(
            f"{source}: {len(missing)} of {len(paths)} {what} missing: {listed}{more}"
            + (f". {hint}" if hint else "")
        )


# ------------------------------------------------------------ image sizes
def _png_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    return None


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return None
        while True:
            b = f.read(1)
            while b and b != b"\xff":
                b = f.read(1)
            while b == b"\xff":
                b = f.read(1)
            if not b:
                return None
            marker = b[0]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                continue  # markers without a length
            seg = f.read(2)
            if len(seg) < 2:
                return None
            (length,) = struct.unpack(">H", seg)
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                data = f.read(5)
                if len(data) < 5:
                    return None
                h, w = struct.unpack(">HH", data[1:5])
                return int(w), int(h)
            f.seek(length - 2, 1)


def image_size(path: Path, source: str = "") -> tuple[int, int]:
    """(width, height) from the image file's header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{source}: cannot read the size of a missing image: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(32)
        size = _png_size(head)
        if size is None and head[:2] == b"\xff\xd8":
            size = _jpeg_size(path)
        if size is None:
            from PIL import Image  # lazy header read for other formats

            with Image.open(path) as im:
                size = (int(im.width), int(im.height))
    except DatasetError:
        raise
    except Exception as e:  # any parse failure (or no PIL) means "cannot size this file"
        raise DatasetError(f"{source}: cannot read the image size from {path}: {e}") from e
    if size[0] <= 0 or size[1] <= 0:
        raise DatasetError(f"{source}: image {path} has an invalid size {size}")
    return size


# ------------------------------------------------------------------ poses
def validated_pose(T: np.ndarray, what: str) -> np.ndarray:
    """Check a 4x4 rigid transform (raise DatasetError naming ``what``), then remove tiny
    float errors of the rotation part (orthonormalize)."""
    try:
        T = check_pose(np.asarray(T, dtype=np.float64), what)
    except ValueError as e:
        raise DatasetError(str(e)) from e
    out = T.copy()
    out[:3, :3] = orthonormalize(T[:3, :3])
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


# ------------------------------------------------------------------ splits
def every_nth_split(n: int, hold: int = LLFF_HOLD) -> dict[str, list[int]]:
    """LLFF / mip-NeRF convention: index % hold == 0 is "test", the rest "train".

    With a single frame there is nothing to train on, so it is "train" only.
    """
    if n <= 1:
        return {"train": list(range(n))}
    return {
        "train": [i for i in range(n) if i % hold != 0],
        "test": [i for i in range(n) if i % hold == 0],
    }


class NameMatcher:
    """Match user-written image paths to frame keys, forgiving prefixes and ``./``.

    An entry matches a frame when (after :func:`normalize_relpath`) it equals the frame
    key, or one is a path-suffix of the other ("images/0001.jpg" vs "0001.jpg"), or
    (last resort) the two are equal without extensions (Blender "train/r_0").
    """

    def __init__(self, keys: Sequence[str]):
        self.keys = [normalize_relpath(k) for k in keys]
        self.exact: dict[str, int] = {}
        self.suffixes: dict[str, list[int]] = {}
        self.stems: dict[str, list[int]] = {}
        for i, k in enumerate(self.keys):
            self.exact.setdefault(k, i)
            parts = k.split("/")
            for j in range(len(parts)):
                self.suffixes.setdefault("/".join(parts[j:]), []).append(i)
            self.stems.setdefault(strip_extension(k), []).append(i)

    def find(self, entry: str) -> int | None:
        e = normalize_relpath(entry)
        if e in self.exact:
            return self.exact[e]
        parts = e.split("/")
        for j in range(1, len(parts)):  # entry has an extra prefix
            tail = "/".join(parts[j:])
            if tail in self.exact:
                return self.exact[tail]
        hits = self.suffixes.get(e, [])
        if len(hits) == 1:  # frame key has an extra prefix
            return hits[0]
        if len(hits) > 1:
            return None
        hits = self.stems.get(strip_extension(e), [])
        return hits[0] if len(hits) == 1 else None


def split_from_lists(
    lists: dict[str, Iterable[str]], keys: Sequence[str], where: str
) -> dict[str, list[int]]:
    """Index lists per split from lists of image names (see :class:`NameMatcher`).

    Unknown names and empty splits are errors naming ``where``.
    """
    matcher = NameMatcher(keys)
    split: dict[str, list[int]] = {}
    for name, entries in lists.items():
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
            raise DatasetError(f"{where}: split {name!r} must be a list of image paths")
        entries = list(entries)
        idx, unknown = [], []
        for e in entries:
            i = matcher.find(str(e))
            (unknown.append(str(e)) if i is None else idx.append(i))
        if unknown:
            more = f" (and {len(unknown) - MAX_LISTED} more)" if len(unknown) > MAX_LISTED else ""
            raise DatasetError(
                f"{where}: split {name!r} names {len(unknown)} image(s) that match no frame: "
                f"{', '.join(unknown[:MAX_LISTED])}{more}"
            )
        if not idx:
            raise DatasetError(f"{where}: split {name!r} is empty")
        split[str(name)] = sorted(set(idx))
    return split


def read_split_json(path: Path, keys: Sequence[str]) -> dict[str, list[int]]:
    """``{"train": [path, ...], "test": [...]}`` -> index lists (other keys kept too)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot parse split file: {e}") from e
    if not isinstance(data, dict) or not data:
        raise DatasetError(f"{path}: split file must be a JSON object like {{\"train\": [...], \"test\": [...]}}")
    return split_from_lists(data, keys, str(path))

