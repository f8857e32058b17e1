"""``contact_sheet.png``: kept renders (top rows) and rejected ones (bottom rows), each
labelled with its name, its matched keypoints (the count compared with eta) and, in
brackets, its matches with each of its two reference views (cv2 drawing)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

#: Tiles per row of the sheet.
COLUMNS = 4
#: Height of the label band under each tile, pixels.
LABEL_PX = 30
#: Tiles are enlarged to at least this width so that their labels fit.
MIN_TILE_WIDTH_PX = 150
FONT_SCALE = 0.4
KEPT_BGR = (60, 170, 60)
REJECTED_BGR = (50, 50, 200)


def thumbnail(image_rgb: np.ndarray, long_side: int) -> np.ndarray:
    """``image_rgb`` shrunk (never enlarged) so its long side is at most ``long_side``."""
    h, w = image_rgb.shape[:2]
    s = min(1.0, long_side / max(h, w))
    if s >= 1.0:
        return np.ascontiguousarray(image_rgb)
    return cv2.resize(image_rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _tile(image_rgb: np.ndarray, title: str, detail: str, kept: bool, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    tile = np.full((h + LABEL_PX, w, 3), 255, np.uint8)
    img = cv2.cvtColor(cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2BGR)
    tile[:h] = img
    color = KEPT_BGR if kept else REJECTED_BGR
    cv2.rectangle(tile, (0, 0), (w - 1, h - 1), color, 2)
    cv2.putText(tile, title, (3, h + 12), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, color, 1, cv2.LINE_AA)
    cv2.putText(tile, detail, (3, h + 25), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def write_contact_sheet(path: Path, entries: list[dict]) -> Path | None:
    """Write the sheet of ``entries`` (dicts: image_rgb, name, kept, num_matched, num_matches) atomically;
    None when there is nothing to draw."""
    if not entries:
        return None
    w = max(e["image_rgb"].shape[1] for e in entries)
    h = max(e["image_rgb"].shape[0] for e in entries)
    scale = max(1.0, MIN_TILE_WIDTH_PX / w)
    size = (round(w * scale), round(h * scale))
    tiles = [
        _tile(e["image_rgb"], f"{e['name']} {'kept' if e['kept'] else 'rejected'}",
              f"matched {e['num_matched']} ({' + '.join(str(int(n)) for n in e['num_matches'])})", e["kept"], size)
        for e in entries
    ]
    blank = np.full_like(tiles[0], 255)
    rows = [tiles[i:i + COLUMNS] + [blank] * (COLUMNS - len(tiles[i:i + COLUMNS])) for i in range(0, len(tiles), COLUMNS)]
    sheet = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, path)
    return path


__all__ = ["thumbnail", "write_contact_sheet"]
