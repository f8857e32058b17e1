"""The procedural scene: determinism, caching, conventions, loadability, texture.

The default config (640x480, 120 frames) is generated once per module (its time is
printed); the rest uses a small config (160x120, 30 frames).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import neural_reloc.data as nr_data
from neural_reloc.data.procedural import (
    ProceduralSceneConfig,
    build_scene,
    generate_procedural_scene,
    render_procedural_view,
)
from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import opencv_c2w_from_opengl_c2w, opencv_w2c_from_opengl_c2w
from neural_reloc.geometry.se3 import invert_pose

SMALL = ProceduralSceneConfig(width=160, height=120, num_frames=30)


# ----------------------------------------------------------------- loading
@dataclasses.dataclass
class Loaded:
    """What the tests need of a dataset, read by the project's loader when it exists."""

    names: list[str]
    cameras: list[Camera]
    c2w_opengl: np.ndarray
    split: dict[str, list[int]]
    image_paths: list[Path]
    depth_paths: list[Path]
    depth_scale: float
    extras: dict

    def image(self, i: int) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(self.image_paths[i]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def depth(self, i: int) -> np.ndarray:
        raw = cv2.imread(str(self.depth_paths[i]), cv2.IMREAD_UNCHANGED)
        assert raw is not None and raw.dtype == np.uint16
        return raw.astype(np.float32) * self.depth_scale


def load(path: Path) -> Loaded:
    if hasattr(nr_data, "load_transforms_json"):
        d = nr_data.load_transforms_json(path)
        return Loaded(
            names=list(d.names),
            cameras=list(d.cameras),
            c2w_opengl=d.c2w_opengl,
            split={k: list(v) for k, v in d.split.items()},
            image_paths=[Path(p) for p in d.image_paths],
            depth_paths=[Path(p) for p in d.depth_paths],
            depth_scale=d.depth_scale,
            extras=dict(d.extras),
        )
    # Fallback: read the instant-ngp / nerfstudio json ourselves.
    meta = json.loads(path.read_text())
    root = path.parent
    cam = Camera(
        width=meta["w"], height=meta["h"], fx=meta["fl_x"], fy=meta["fl_y"], cx=meta["cx"], cy=meta["cy"]
    )
    names = [f["file_path"] for f in meta["frames"]]
    split_meta = json.loads((root / "split.json").read_text())
    return Loaded(
        names=names,
        cameras=[cam] * len(names),
        c2w_opengl=np.array([f["transform_matrix"] for f in meta["frames"]], dtype=np.float64),
        split={k: [names.index(n) for n in v] for k, v in split_meta.items()},
        image_paths=[root / n for n in names],
        depth_paths=[root / f["depth_file_path"] for f in meta["frames"]],
        depth_scale=meta["depth_unit_scale_factor"],
        extras={"aabb": meta["aabb"]},
    )


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("proc_small") / "scene"
    generate_procedural_scene(out, SMALL)
    return out


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("proc_default") / "scene"
    t0 = time.perf_counter()
    generate_procedural_scene(out)
    print(f"\n[procedural] default config generated in {time.perf_counter() - t0:.2f} s")
    return out


# ----------------------------------------------------------- determinism / caching
def test_same_seed_is_byte_identical_and_other_seed_differs(small_dir, tmp_path):
    again = tmp_path / "again"
    generate_procedural_scene(again, SMALL, workers=1)  # thread count must not matter
    a, b = all_files(small_dir), all_files(again)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.startswith("images/")]) == SMALL.num_frames
    for name in a:
        assert a[name] == b[name], f"{name} differs between two generations of the same config"

    other = tmp_path / "seed1"
    generate_procedural_scene(other, dataclasses.replace(SMALL, seed=1))
    c = all_files(other)
    assert c["images/0000.png"] != a["images/0000.png"]
    assert c["transforms.json"] != a["transforms.json"]
    assert json.loads(c["transforms.json"])["seed"] == 1


def test_rerun_skips_and_damage_triggers_regeneration(small_dir, tmp_path):
    mtimes = {p: p.stat().st_mtime_ns for p in small_dir.rglob("*") if p.is_file()}
    time.sleep(0.01)
    t0 = time.perf_counter()
    path = generate_procedural_scene(small_dir, SMALL)
    assert time.perf_counter() - t0 < 1.0
    assert path == small_dir / "transforms.json"
    assert {p: p.stat().st_mtime_ns for p in small_dir.rglob("*") if p.is_file()} == mtimes

    # A damaged copy is regenerated, to the same bytes.
    copy = tmp_path / "copy"
    shutil.copytree(small_dir, copy)
    (copy / "images" / "0003.png").unlink()
    (copy / "depth" / "0004.png").write_bytes(b"truncated")
    generate_procedural_scene(copy, SMALL)
    assert all_files(copy) == all_files(small_dir)
    # ...and so is one made with another config (the stamp holds the config hash).
    other = dataclasses.replace(SMALL, num_frames=10)
    generate_procedural_scene(copy, other)
    assert len(list((copy / "images").glob("*.png"))) == 10
    assert len(json.loads((copy / "transforms.json").read_text())["frames"]) == 10


def test_default_generation(default_dir):
    """Generates the default config (time printed by the fixture) and checks its layout."""
    meta = json.loads((default_dir / "transforms.json").read_text())
    cfg = ProceduralSceneConfig()
    assert (meta["w"], meta["h"], meta["camera_model"]) == (cfg.width, cfg.height, "OPENCV")
    assert meta["scene"] == "neural_reloc procedural" and meta["seed"] == cfg.seed
    assert meta["depth_unit_scale_factor"] == 0.001
    assert meta["cx"] == cfg.width / 2 and meta["cy"] == cfg.height / 2
    assert len(meta["frames"]) == cfg.num_frames
    f0 = meta["frames"][0]
    assert f0["file_path"] == "images/0000.png" and f0["depth_file_path"] == "depth/0000.png"
    img = cv2.imread(str(default_dir / f0["file_path"]), cv2.IMREAD_UNCHANGED)
    dep = cv2.imread(str(default_dir / f0["depth_file_path"]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (cfg.height, cfg.width, 3) and img.dtype == np.uint8
    assert dep.shape == (cfg.height, cfg.width) and dep.dtype == np.uint16
    assert dep.min() > 0  # closed room: every pixel sees a surface


def test_trajectory_is_smooth_and_clear_of_surfaces():
    scene = build_scene()
    centres = scene.c2w_opengl[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0, append=centres[:1]), axis=1)
    assert 0.04 < steps.min() and steps.max() < 0.11 and 0.05 <= steps.mean() <= 0.10, steps
    clearance = [scene.min_clearance(c) for c in centres]
    assert min(clearance) >= scene.config.min_clearance_m
    lo, hi = np.array(scene.aabb)
    assert np.all(centres > lo) and np.all(centres < hi)
    assert 8 <= len(scene.objects) <= 15
    # Test views lie between training views.
    for i in scene.split["test"]:
        assert i - 1 in scene.split["train"] and (i + 1) % len(centres) in scene.split["train"]


# ------------------------------------------------------------------ conventions
def reprojection_stats(data: Loaded, a: int, b: int, pose_a=None, pose_b=None) -> tuple[float, float, float]:
    """Back-project frame a with its depth and pose, project into frame b.

    Returns (fraction of a's pixels seen unoccluded in b, median and 90th percentile of
    the colour difference there). ``pose_*`` override the OpenCV camera-to-world poses.
    """
    cam = data.cameras[a]
    assert data.cameras[b] == cam
    c2w_a = opencv_c2w_from_opengl_c2w(data.c2w_opengl[a]) if pose_a is None else pose_a
    w2c_b = opencv_w2c_from_opengl_c2w(data.c2w_opengl[b]) if pose_b is None else invert_pose(pose_b)
    depth_a, depth_b = data.depth(a), data.depth(b)
    img_a, img_b = data.image(a).astype(np.float32), data.image(b).astype(np.float32)

    xy = cam.pixel_to_normalized(cam.pixel_centers())  # (H, W, 2)
    z = depth_a.astype(np.float64)
    pts_a = np.concatenate([xy * z[..., None], z[..., None]], axis=-1).reshape(-1, 3)
    world = pts_a @ c2w_a[:3, :3].T + c2w_a[:3, 3]
    pts_b = world @ w2c_b[:3, :3].T + w2c_b[:3, 3]
    uv_b, in_front = cam.project(pts_b)
    valid = in_front & cam.in_image(uv_b) & (z.reshape(-1) > 0)
    # cv2.remap samples at integer = pixel centre; ours are at i + 0.5.
    map_x = (uv_b[:, 0] - 0.5).astype(np.float32).reshape(z.shape)
    map_y = (uv_b[:, 1] - 0.5).astype(np.float32).reshape(z.shape)
    depth_at_b = cv2.remap(depth_b, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(
        -1
    )
    color_at_b = cv2.remap(img_b, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(
        -1, 3
    )
    visible = valid & (np.abs(depth_at_b - pts_b[:, 2]) < 0.015)
    if visible.sum() < 100:
        return float(visible.mean()), float("inf"), float("inf")
    err = np.abs(color_at_b[visible] - img_a.reshape(-1, 3)[visible]).mean(axis=1)
    return float(visible.mean()), float(np.median(err)), float(np.percentile(err, 90))


@pytest.mark.parametrize("a,b", [(40, 41), (40, 43), (101, 99)])
def test_depth_pose_and_colour_agree_across_views(default_dir, a, b):
    data = load(default_dir / "transforms.json")
    frac, med, p90 = reprojection_stats(data, a, b)
    assert frac > 0.5, f"only {frac:.0%} of frame {a} reprojects consistently into frame {b}"
    assert med < 1.0 and p90 < 3.0, (med, p90)

    # Negative control: the same check with the matrices taken as OpenCV (no axis
    # conversion) must fail, so the test really constrains the convention.
    bad = reprojection_stats(data, a, b, pose_a=data.c2w_opengl[a], pose_b=data.c2w_opengl[b])
    ok = bad[0] > 0.5 and bad[1] < 1.0 and bad[2] < 3.0
    assert not ok, f"a wrong axis convention passes the check: {bad}"


def test_loader_splits_and_render_reproduces_saved_frames(small_dir):
    data = load(small_dir / "transforms.json")
    n, k = SMALL.num_frames, SMALL.test_stride
    assert len(data.names) == n
    assert data.split["test"] == [i for i in range(n) if i % k == k // 2]
    assert data.split["train"] == [i for i in range(n) if i % k != k // 2]
    assert data.depth_scale == pytest.approx(0.001)
    assert np.allclose(np.array(data.extras["aabb"]), [[-3.0, -2.5, 0.0], [3.0, 2.5, 2.8]])
    cam = data.cameras[0]
    assert (cam.width, cam.height, cam.cx, cam.cy) == (160, 120, 80.0, 60.0) and not cam.is_distorted

    scene = build_scene(SMALL)
    # (the loader may re-orthonormalize rotations: equal up to float noise)
    assert np.allclose(scene.c2w_opengl, data.c2w_opengl, atol=1e-9)
    for i in (data.split["train"][0], data.split["train"][7], data.split["test"][2]):
        rgb, depth = render_procedural_view(scene, cam, data.c2w_opengl[i])
        saved_rgb, saved_depth = data.image(i), data.depth(i)
        # identical but for (rare) pixels where float noise in the pose flips a hit
        assert np.mean(np.any(rgb != saved_rgb, axis=-1)) < 1e-3
        assert np.mean(np.abs(depth - saved_depth) > 0.0005 + 1e-6) < 1e-3
        assert np.median(np.abs(depth - saved_depth)) < 0.0003


def test_downscaled_render_matches_low_resolution_render():
    """Anti-aliasing: INTER_AREA-downscaled 640x480 images agree with direct renders."""
    scene = build_scene()
    big_cam = scene.camera
    for i in (20, 70):
        big, _ = render_procedural_view(scene, big_cam, scene.c2w_opengl[i])
        for size in ((160, 120), (320, 240)):
            small, _ = render_procedural_view(scene, big_cam.resized(*size), scene.c2w_opengl[i])
            down = cv2.resize(big, size, interpolation=cv2.INTER_AREA)
            mse = np.mean((down.astype(np.float64) - small) ** 2)
            psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
            assert psnr > 35.0, (i, size, psnr)


def test_any_camera_and_pose():
    """A distorted camera and a pose off the trajectory render consistently."""
    scene = build_scene(SMALL)
    pin = scene.camera
    T = scene.c2w_opengl[5].copy()
    T[:3, 3] += [0.1, -0.2, 0.05]
    rgb, depth = render_procedural_view(scene, pin, T)
    assert rgb.shape == (120, 160, 3) and depth.shape == (120, 160) and depth.min() > 0
    distorted = dataclasses.replace(pin, k1=-0.2, k2=0.05)
    rgb_d, depth_d = render_procedural_view(scene, distorted, T)
    # The principal point's ray is undistorted: same surface, same colour.
    r, c = int(pin.cy), int(pin.cx)
    assert abs(float(depth_d[r, c]) - float(depth[r, c])) < 1e-4
    # Undistorting the distorted render reproduces the pinhole one (up to resampling).
    from neural_reloc.geometry.camera import undistort_image

    und, _ = undistort_image(rgb_d, distorted)
    inner = (slice(20, 100), slice(25, 135))
    assert np.median(np.abs(und[inner].astype(float) - rgb[inner])) < 4.0


# ------------------------------------------------------------------ texture
def gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.hypot(gx, gy)  # grey levels per pixel


def test_scene_is_textured_with_some_low_texture_regions(default_dir):
    data = load(default_dir / "transforms.json")
    textured_fraction, flattest_window = [], []
    for i in range(0, len(data.names), 4):
        img = cv2.resize(data.image(i), (320, 240), interpolation=cv2.INTER_AREA)
        g = gradient_magnitude(img)
        blocks = g.reshape(15, 16, 20, 16).mean(axis=(1, 3))  # 16x16-pixel blocks
        textured_fraction.append(float((blocks > 2.0).mean()))
        window = cv2.boxFilter(g, -1, (64, 64), borderType=cv2.BORDER_REFLECT)[32:-32, 32:-32]
        flattest_window.append(float(window.min()))
    textured_fraction = np.array(textured_fraction)
    # Most of a typical image has real texture (mean gradient > 2 grey levels/pixel at
    # 320x240), and no frame is mostly flat...
    assert np.median(textured_fraction) >= 0.5, textured_fraction
    assert textured_fraction.min() >= 0.25, textured_fraction
    # ...but some frames contain a large nearly flat region (the plain wall section).
    assert min(flattest_window) < 0.3, flattest_window
    assert max(flattest_window) > 1.0, flattest_window
