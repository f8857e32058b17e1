"""Writing a procedural scene as an instant-ngp / nerfstudio ``transforms.json`` dataset.

Layout: ``transforms.json`` (OpenGL camera-to-world poses, pinhole intrinsics, the
room's ``aabb``, ``depth_unit_scale_factor``), ``split.json`` (train / test file lists),
``images/NNNN.png`` (RGB) and ``depth/NNNN.png`` (16-bit millimetres, 0 = none; each
frame's ``depth_file_path``, as nerfstudio writes depth).

A stamp file, written last, records the config hash and every file's size: a rerun
with the same config finds it and returns at once; an interrupted run (no stamp) is
redone. Frames may be rendered once and linked into several datasets (the dense and
sparse variants of a room share their query images).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from .render import render_procedural_view
from .scene import ProceduralScene
from .style import GENERATOR_VERSION, SceneStyle

STAMP_NAME = ".procedural_stamp.json"
#: Depth PNGs store millimetres; 0 means "no depth".
DEPTH_UNIT_SCALE = 0.001
UINT16_MAX = 65535
#: zlib level of the written PNGs (explicit, so the bytes do not depend on OpenCV's
#: default; 3 is as fast as 1 here and makes smaller depth images).
PNG_COMPRESSION = 3
#: Rendering threads when none are given: the CPUs, at most this many.
MAX_DEFAULT_WORKERS = 4

#: (frame index, rgb uint8) -> rgb uint8: per-frame camera effects (exposure, noise).
FrameEffects = Callable[[int, np.ndarray], np.ndarray]


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def encode_png(img: np.ndarray) -> bytes:
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def depth_to_png_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth -> uint16 millimetres (0 where invalid, saturating at 65.535 m)."""
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    mm = np.where(valid, np.rint(d / DEPTH_UNIT_SCALE), 0.0)
    return np.clip(mm, 0, UINT16_MAX).astype(np.uint16)


def stamp_ok(out_dir: Path, config_hash: str) -> bool:
    """Whether ``out_dir`` holds a finished dataset of this config hash."""
    stamp = out_dir / STAMP_NAME
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if info.get("config_hash") != config_hash or not isinstance(info.get("files"), dict):
        return False
    for rel, size in info["files"].items():
        p = out_dir / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def write_dataset(
    scene: ProceduralScene,
    out_dir: Path,
    config: SceneStyle,
    frames: list[int],
    split: dict[str, list[int]],
    *,
    scene_name: str,
    effects: FrameEffects | None = None,
    rendered_in: Path | None = None,
    workers: int | None = None,
    force: bool = False,
) -> Path:
    """Write ``frames`` (indices into ``scene.c2w_opengl``) of a scene as a dataset in
    ``out_dir`` and return its transforms.json path. ``split`` maps split names to
    frame indices (a subset of ``frames``). ``rendered_in``: a dataset of the same
    scene whose images of these frames are linked instead of rendered again.
    ``workers`` rendering threads do not change the output.
    """
    out_dir = Path(out_dir)
    config_hash = config.config_hash()
    transforms_path = out_dir / "transforms.json"
    if not force and stamp_ok(out_dir, config_hash):
        return transforms_path

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    stamp = out_dir / STAMP_NAME
    if stamp.exists():
        stamp.unlink()
    all_names = scene.frame_names()
    names = {i: all_names[i] for i in frames}
    for sub in ("images", "depth"):  # frames left over from another config
        for stale in sorted((out_dir / sub).glob("*.png")):
            if stale.name not in set(names.values()):
                stale.unlink()

    def render_frame(i: int) -> None:
        if rendered_in is not None:
            for sub in ("images", "depth"):
                _link_or_copy(Path(rendered_in) / sub / names[i], out_dir / sub / names[i])
            return
        rgb, depth = render_procedural_view(scene, scene.camera, scene.c2w_opengl[i])
        if effects is not None:
            rgb = effects(i, rgb)
        atomic_write(out_dir / "images" / names[i], encode_png(rgb))
        atomic_write(out_dir / "depth" / names[i], encode_png(depth_to_png_mm(depth)))

    workers = workers or min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(render_frame, frames))
    else:
        for i in frames:
            render_frame(i)

    cam = scene.camera
    frame_entries = {
        i: {
            "file_path": f"images/{names[i]}",
            "depth_file_path": f"depth/{names[i]}",
            "transform_matrix": scene.c2w_opengl[i].tolist(),
        }
        for i in frames
    }
    transforms = {
        "scene": scene_name,
        "seed": config.seed,
        "config_hash": config_hash,
        "camera_model": "OPENCV",
        "fl_x": cam.fx,
        "fl_y": cam.fy,
        "cx": cam.cx,
        "cy": cam.cy,
        "w": cam.width,
        "h": cam.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "depth_unit_scale_factor": DEPTH_UNIT_SCALE,
        "aabb": scene.aabb,
        "procedural_config": asdict(config),
        **({"procedural_scene": scene.info} if scene.info else {}),
        "frames": [frame_entries[i] for i in frames],
    }
    split_lists = {k: [frame_entries[i]["file_path"] for i in idx] for k, idx in split.items()}
    atomic_write(transforms_path, (json.dumps(transforms, indent=1) + "\n").encode())
    atomic_write(out_dir / "split.json", (json.dumps(split_lists, indent=1) + "\n").encode())

    files = ["transforms.json", "split.json"]
    files += [f"{sub}/{names[i]}" for sub in ("images", "depth") for i in frames]
    info = {
        "config_hash": config_hash,
        "generator_version": GENERATOR_VERSION,
        "files": {rel: (out_dir / rel).stat().st_size for rel in files},
    }
    atomic_write(stamp, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return transforms_path
