"""Keypoint views: what the synthesis pipeline writes (one ``.npz`` per view under
``<out>/views/``) and what a keypoint scene-coordinate regressor trains on.

A view file holds ``keypoints_px`` (N, 2; pixel centres at +0.5, the convention of
:class:`~neural_reloc.geometry.camera.Camera`), ``descriptors`` (N, D; stored as
float16, read as float32), ``xyz_world`` (N, 3), ``reliable`` (N,), ``w2c_opencv``,
``K``, ``width``, ``height``, ``kept`` (a rejected synthetic view is written too, with
no keypoints, so that a resumed run knows it is done), ``num_matches`` (per reference
view) and ``source_indices`` (the data's frame indices: the view itself for a real
view, the two reference views for a synthetic one). A synthetic view's file also has
``num_matched`` (its keypoints with a counted match: the number compared with eta)
and some have a ``thumbnail`` of the render (for the contact sheet). Files are
written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VIEWS_DIR = "views"
REAL_PREFIX = "real_"
SYNTH_PREFIX = "synth_"
REQUIRED_KEYS = ("keypoints_px", "descriptors", "xyz_world", "reliable", "w2c_opencv", "K", "width", "height",
                 "kept", "num_matches", "source_indices")


class ViewFileError(ValueError):
    """A view file is missing, unreadable or inconsistent (the message names the file)."""


@dataclass
class KeypointView:
    name: str
    synthetic: bool
    keypoints_px: np.ndarray  # (N, 2) float32, pixel centres at +0.5
    descriptors: np.ndarray  # (N, D) float32
    xyz_world: np.ndarray  # (N, 3) float32, finite
    reliable: np.ndarray  # (N,) bool
    w2c_opencv: np.ndarray  # (4, 4) float64
    K: np.ndarray  # (3, 3) float64
    width: int
    height: int
    kept: bool = True
    num_matches: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.keypoints_px.shape[0])


def view_file_name(synthetic: bool, index: int) -> str:
    return f"{SYNTH_PREFIX}{index:05d}.npz" if synthetic else f"{REAL_PREFIX}{index:04d}.npz"


def write_view(path: Path, view: KeypointView, extra: dict | None = None) -> None:
    """Write a view file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "keypoints_px": np.asarray(view.keypoints_px, np.float32).reshape(-1, 2),
        "descriptors": np.asarray(view.descriptors, np.float16),
        "xyz_world": np.asarray(view.xyz_world, np.float32).reshape(-1, 3),
        "reliable": np.asarray(view.reliable, bool).reshape(-1),
        "w2c_opencv": np.asarray(view.w2c_opencv, np.float64),
        "K": np.asarray(view.K, np.float64),
        "width": np.int64(view.width),
        "height": np.int64(view.height),
        "kept": np.bool_(view.kept),
        "synthetic": np.bool_(view.synthetic),
        "num_matches": np.asarray(view.num_matches, np.int64).reshape(-1),
        "source_indices": np.asarray(view.source_indices, np.int64).reshape(-1),
        **(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def read_view(path: Path) -> KeypointView:
    """One view file, validated (ViewFileError naming the file and the field)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ViewFileError(f"{path}: view file is missing") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise ViewFileError(f"{path}: not a readable view file ({type(e).__name__}: {e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ViewFileError(f"{path}: missing field(s) {missing}")
    kp, desc, xyz, rel = data["keypoints_px"], data["descriptors"], data["xyz_world"], data["reliable"]
    n = kp.shape[0] if kp.ndim == 2 else -1
    problems = []
    if kp.ndim != 2 or kp.shape[1] != 2:
        problems.append(f"keypoints_px has shape {kp.shape}, expected (N, 2)")
    if desc.ndim != 2 or desc.shape[0] != n:
        problems.append(f"descriptors has shape {desc.shape}, expected ({n}, D)")
    if xyz.shape != (n, 3):
        problems.append(f"xyz_world has shape {xyz.shape}, expected ({n}, 3)")
    elif not np.all(np.isfinite(xyz)):
        problems.append("xyz_world has non-finite coordinates")
    if rel.shape != (n,):
        problems.append(f"reliable has shape {rel.shape}, expected ({n},)")
    if data["w2c_opencv"].shape != (4, 4) or not np.all(np.isfinite(data["w2c_opencv"])):
        problems.append("w2c_opencv is not a finite 4x4 matrix")
    if data["K"].shape != (3, 3):
        problems.append(f"K has shape {data['K'].shape}, expected (3, 3)")
    if problems:
        raise ViewFileError(f"{path}: " + "; ".join(problems))
    return KeypointView(
        name=path.stem, synthetic=bool(data.get("synthetic", path.name.startswith(SYNTH_PREFIX))),
        keypoints_px=kp.astype(np.float32), descriptors=desc.astype(np.float32), xyz_world=xyz.astype(np.float32),
        reliable=rel.astype(bool), w2c_opencv=data["w2c_opencv"].astype(np.float64),
        K=data["K"].astype(np.float64), width=int(data["width"]), height=int(data["height"]),
        kept=bool(data["kept"]), num_matches=data["num_matches"].astype(np.int64),
        source_indices=data["source_indices"].astype(np.int64),
    )


def load_views(out_dir: str | Path, synthetic: bool = True) -> list[KeypointView]:
    """The kept views of a synthesis output folder, real views first (name order), then
    the kept synthetic views when ``synthetic``; rejected synthetic views are skipped.
    Raises ViewFileError when the folder has no real views or a file is invalid."""
    folder = Path(out_dir) / VIEWS_DIR
    if not folder.is_dir():
        raise ViewFileError(f"{out_dir}: no {VIEWS_DIR}/ folder; run `neural-reloc synthesize` into it first")
    real = sorted(folder.glob(f"{REAL_PREFIX}*.npz"))
    if not real:
        raise ViewFileError(f"{folder}: no real views ({REAL_PREFIX}*.npz); the synthesis did not run or failed")
    views = [read_view(p) for p in real]
    if synthetic:
        views += [v for v in (read_view(p) for p in sorted(folder.glob(f"{SYNTH_PREFIX}*.npz"))) if v.kept]
    descriptor_dims = {v.descriptors.shape[1] for v in views if len(v)}
    if len(descriptor_dims) > 1:
        raise ViewFileError(f"{folder}: views have different descriptor sizes {sorted(descriptor_dims)}")
    return views


__all__ = ["KeypointView", "ViewFileError", "load_views", "read_view", "view_file_name", "write_view"]
