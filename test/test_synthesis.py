"""Descriptor synthesis (neural_reloc.synthesis): pose synthesis, features, the filter,
resume, the view files, the SuperPoint offline message, and the pipeline on the shared
room map through the CLI.

Most tests render a textured ground plane analytically (PlaneMap, a stand-in for the
neural map with its render_view interface): exact, deterministic, milliseconds a view.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from neural_reloc.config_io import merge
from neural_reloc.data.posed_images import PosedImages
from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import (
    opencv_c2w_from_opengl_c2w,
    opengl_c2w_from_opencv_c2w,
)
from neural_reloc.geometry.se3 import (
    make_pose,
    rotation_angle_deg,
    rotation_from_rotvec,
)
from neural_reloc.synthesis import (
    KeypointView,
    SynthesisConfig,
    ViewFileError,
    load_views,
    make_extractor,
    make_matcher,
    synthesize,
)
from neural_reloc.synthesis.config import PoseSynthesisConfig
from neural_reloc.synthesis.features import extract_features
from neural_reloc.geometry.neighbours import nearest_pairs
from neural_reloc.synthesis.poses import synthesize_poses
from neural_reloc.synthesis.views import read_view, write_view

TEXTURE_PX = 512
TEXTURE_M = 2.0
CAMERA = Camera(width=96, height=72, fx=70.0, fy=70.0, cx=48.0, cy=36.0)


def _texture(seed: int) -> np.ndarray:
    """Multi-scale blob noise, RGB uint8: plenty of SIFT keypoints."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((TEXTURE_PX, TEXTURE_PX, 3), np.float32)
    for sigma, amp in ((12, 1.0), (5, 0.6), (2, 0.3)):
        acc += amp * cv2.GaussianBlur(rng.normal(size=acc.shape).astype(np.float32), (0, 0), sigma) * sigma
    acc = (acc - acc.min()) / (acc.max() - acc.min())
    return (acc * 255).astype(np.uint8)


class PlaneMap:
    """A textured plane z = 0 (world), TEXTURE_M wide and centred on the origin, with the
    NeuralMap.render_view interface. ``garbage=True`` renders noise instead of the plane
    (a failed render; its geometry stays right)."""

    def __init__(self, seed: int = 0, garbage: bool = False):
        self.texture = _texture(seed).astype(np.float32) / 255.0
        self.garbage = garbage

    def state_dict(self):
        return {"texture": torch.from_numpy(self.texture), "garbage": torch.tensor(self.garbage)}

    def render_view(self, camera, c2w_opengl, outputs=("rgb", "depth"), pixels_uv=None, **_kw):
        c2w = opencv_c2w_from_opengl_c2w(c2w_opengl)
        uv = camera.pixel_centers().reshape(-1, 2) if pixels_uv is None else np.asarray(pixels_uv, np.float64)
        d_cam = np.stack([(uv[:, 0] - camera.cx) / camera.fx, (uv[:, 1] - camera.cy) / camera.fy,
                          np.ones(len(uv))], 1)
        d = d_cam @ c2w[:3, :3].T
        o = c2w[:3, 3]
        t = -o[2] / np.where(np.abs(d[:, 2]) > 1e-9, d[:, 2], 1e-9)
        pts = o + t[:, None] * d
        tex = (pts[:, :2] / TEXTURE_M + 0.5) * TEXTURE_PX - 0.5
        hit = (t > 0) & np.all((tex >= 0) & (tex <= TEXTURE_PX - 1), axis=1)
        rgb = cv2.remap(self.texture, tex[:, :1].astype(np.float32), tex[:, 1:].astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT).reshape(-1, 3)
        if self.garbage:
            rng = np.random.default_rng(abs(hash(np.round(c2w, 6).tobytes())) % 2**32)
            rgb = rng.random(rgb.shape, dtype=np.float32)
        out = {"rgb": rgb, "depth": t, "points": pts, "accumulation": hit.astype(np.float32)}
        res = {}
        for k in outputs:
            v = np.asarray(out[k], np.float32)
            res[k] = v.reshape(camera.height, camera.width, *v.shape[1:]) if pixels_uv is None else v
        return res


def _look_down(x: float, y: float, height: float, yaw_deg: float) -> np.ndarray:
    """c2w_opengl of a camera above (x, y) looking straight down (OpenCV z = world -z)."""
    R = rotation_from_rotvec([0, 0, np.radians(yaw_deg)]) @ np.diag([1.0, -1.0, -1.0])
    return opengl_c2w_from_opencv_c2w(make_pose(R, [x, y, height]))


def _plane_data(tmp: Path, model: PlaneMap, xs=(-0.3, -0.1, 0.1, 0.3)) -> PosedImages:
    c2ws, paths = [], []
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    for k, x in enumerate(xs):
        c2w = _look_down(x, 0.05 * k, 1.0, 8.0 * k)
        rgb = (np.clip(model.render_view(CAMERA, c2w, ("rgb",))["rgb"], 0, 1) * 255 + 0.5).astype(np.uint8)
        path = tmp / "images" / f"{k:04d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        c2ws.append(c2w)
        paths.append(path)
    return PosedImages(names=[p.name for p in paths], image_paths=paths, cameras=[CAMERA] * len(xs),
                       c2w_opengl=np.stack(c2ws), split={"train": list(range(len(xs)))}, source=str(tmp))


def _cfg(**overrides) -> SynthesisConfig:
    base = {"poses": {"num_neighbors": 2, "poses_per_segment": 3}, "filter": {"min_matches": 20},
            "features": {"max_keypoints": 300}, "contact_sheet_views": 2, "contact_sheet_tile_px": 48}
    for k, v in overrides.items():
        base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
    return merge(SynthesisConfig(), base)


# ------------------------------------------------------------------ poses
def test_pose_synthesis_counts_dedup_and_slerp():
    centers = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.5, 0, 0], [4.5, 0, 0]])
    # 1-NN: 0->1, 1->0, 2->1, 3->2: the pair (0, 1) found from both ends is one segment.
    assert nearest_pairs(centers, 1).tolist() == [[0, 1], [1, 2], [2, 3]]
    assert len(nearest_pairs(centers, 10)) == 6  # k beyond the camera count: every pair once

    w2c = []
    for k, c in enumerate(centers):
        c2w = make_pose(rotation_from_rotvec([0, 0, np.radians(30.0 * k)]), c)
        w2c.append(np.linalg.inv(c2w))
    n = 4
    poses = synthesize_poses(np.stack(w2c), PoseSynthesisConfig(num_neighbors=1, poses_per_segment=n))
    assert len(poses) == 3 * n
    assert np.allclose(poses.fraction[:n], np.arange(1, n + 1) / (n + 1))
    c2w = np.linalg.inv(poses.w2c_opencv)
    for m in range(len(poses)):
        a, b, f = poses.source_a[m], poses.source_b[m], poses.fraction[m]
        assert np.allclose(c2w[m][:3, 3], (1 - f) * centers[a] + f * centers[b])  # translation linear
        ra, rb = np.linalg.inv(w2c[a])[:3, :3], np.linalg.inv(w2c[b])[:3, :3]
        assert rotation_angle_deg(ra.T @ c2w[m][:3, :3]) == pytest.approx(30.0 * f, abs=1e-6)  # slerp
        assert rotation_angle_deg(c2w[m][:3, :3].T @ rb) == pytest.approx(30.0 * (1 - f), abs=1e-6)


def test_pose_synthesis_takes_the_shortest_arc():
    # 350 deg about z is -10 deg: the segment must turn 10 deg, not 350.
    w2c = [np.linalg.inv(make_pose(rotation_from_rotvec([0, 0, a]), [x, 0, 0]))
           for a, x in ((0.0, 0.0), (np.radians(350.0), 1.0))]
    poses = synthesize_poses(np.stack(w2c), PoseSynthesisConfig(num_neighbors=1, poses_per_segment=1))
    mid = np.linalg.inv(poses.w2c_opencv[0])[:3, :3]
    assert rotation_angle_deg(mid) == pytest.approx(5.0, abs=1e-6)


def test_pose_synthesis_needs_two_cameras():
    with pytest.raises(ValueError, match="at least 2"):
        synthesize_poses(np.eye(4)[None], PoseSynthesisConfig())


# --------------------------------------------------------------- features
def test_sift_features_on_a_textured_image():
    image = (_texture(1)[:200, :240]).copy()
    ex = make_extractor("sift", _cfg(features={"max_keypoints": 150}))
    kp, desc, scores = ex.extract(image)
    assert 100 <= len(kp) <= 150 and kp.dtype == np.float32 and desc.dtype == np.float32
    assert desc.shape == (len(kp), 128) and np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-4)
    assert np.all(np.diff(scores) <= 0)  # strongest first
    assert np.all((kp >= 0) & (kp <= [240, 200]))
    # A shifted copy matches with the shift (mutual NN + ratio test).
    shifted = np.ascontiguousarray(np.roll(image, (7, 11), axis=(0, 1))[20:180, 20:220])
    fa, fb = extract_features(ex, image[20:180, 20:220].copy()), extract_features(ex, shifted)
    m = make_matcher("sift", _cfg()).match(fa, fb)
    assert len(m) > 40
    d = fb.keypoints_px[m[:, 1]] - fa.keypoints_px[m[:, 0]]
    assert np.median(np.linalg.norm(d - [11, 7], axis=1)) < 0.5


def test_sift_keypoints_use_pixel_centres_at_half():
    img = np.zeros((80, 100), np.float32)
    img[40, 50] = 1.0
    img = cv2.GaussianBlur(img, (0, 0), 3.0)
    rgb = np.repeat((img / img.max() * 255).astype(np.uint8)[..., None], 3, axis=2)
    kp, _, _ = make_extractor("sift", _cfg(features={"sift_contrast_threshold": 0.0})).extract(rgb)
    nearest = kp[np.argmin(np.linalg.norm(kp - [50.5, 40.5], axis=1))]
    assert np.allclose(nearest, [50.5, 40.5], atol=0.15)


def test_unknown_extractor_names_the_choices():
    with pytest.raises(ValueError, match="sift, superpoint_lightglue"):
        make_extractor("orb")


def test_superpoint_offline_message_names_where_to_put_the_weights(tmp_path):
    from neural_reloc.synthesis.superpoint_lightglue import WeightsMissingError

    cfg = _cfg(features={"weights_dir": str(tmp_path)})
    with pytest.raises(WeightsMissingError) as e:
        make_extractor("superpoint_lightglue", cfg)
    assert str(tmp_path / "superpoint_v1.pth") in str(e.value) and "download" in str(e.value)
    with pytest.raises(WeightsMissingError) as e:
        make_matcher("superpoint_lightglue", cfg)
    assert str(tmp_path / "superpoint_lightglue.pth") in str(e.value)


def test_superpoint_loads_weights_from_the_folder(tmp_path):
    from neural_reloc.synthesis.superpoint_lightglue import (
        SUPERPOINT_FILE,
        SuperPointNet,
    )

    torch.manual_seed(0)
    torch.save(SuperPointNet().state_dict(), tmp_path / SUPERPOINT_FILE)
    ex = make_extractor("superpoint_lightglue", _cfg(features={"weights_dir": str(tmp_path), "max_keypoints": 50}))
    kp, desc, scores = ex.extract(_texture(2)[:61, :83].copy())  # not multiples of 8
    assert kp.shape == (len(desc), 2) and desc.shape[1] == 256 and len(scores) == len(kp) <= 50
    assert np.all((kp > 0) & (kp < [83, 61])) and np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-4)
    (tmp_path / SUPERPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match=SUPERPOINT_FILE):
        make_extractor("superpoint_lightglue", _cfg(features={"weights_dir": str(tmp_path)}))


def test_lightglue_loads_cvg_weights_from_the_folder(tmp_path):
    kf = pytest.importorskip("kornia.feature", reason="kornia is optional (superpoint_lightglue only)")
    from neural_reloc.synthesis.superpoint_lightglue import (
        LIGHTGLUE_FILE,
        SUPERPOINT_FILE,
        SuperPointNet,
    )

    torch.manual_seed(0)
    torch.save(SuperPointNet().state_dict(), tmp_path / SUPERPOINT_FILE)
    state = kf.LightGlue(None, input_dim=256).state_dict()
    # cvg's file names the attention layers self_attn.<i> / cross_attn.<i>
    state = {re.sub(r"^transformers\.(\d+)\.(self|cross)_attn", r"\2_attn.\1", k): v for k, v in state.items()}
    assert "self_attn.0.Wqkv.weight" in state
    torch.save(state, tmp_path / LIGHTGLUE_FILE)
    cfg = _cfg(features={"weights_dir": str(tmp_path), "max_keypoints": 60})
    ex, matcher = make_extractor("superpoint_lightglue", cfg), make_matcher("superpoint_lightglue", cfg)
    img = _texture(3)[:120, :160].copy()
    fa, fb = extract_features(ex, img), extract_features(ex, img[5:, 3:].copy())
    m = matcher.match(fa, fb)
    assert m.shape[1] == 2 and m.dtype == np.int64 and np.all(m[:, 0] < len(fa)) and np.all(m[:, 1] < len(fb))


# ----------------------------------------------------------------- filter
def test_filter_keeps_good_renders_and_rejects_garbage(tmp_path):
    good = PlaneMap()
    data = _plane_data(tmp_path / "data", good)
    out = synthesize(good, data, tmp_path / "good", _cfg())
    views = load_views(out)
    real, synth = [v for v in views if not v.synthetic], [v for v in views if v.synthetic]
    assert len(real) == 4 and all(len(v) > 50 for v in real)
    assert all(v.reliable.mean() > 0.5 for v in real)  # neighbours see the same plane points
    summary = json.loads((out / "summary.json").read_text())
    n = summary["synthetic"]["generated"]
    assert summary["complete"] and n == len(nearest_pairs(data.camera_centers(), 2)) * 3
    assert len(synth) == n == summary["synthetic"]["kept"]
    for v in views:
        assert np.abs(v.xyz_world[:, 2]).max() < 1e-3  # 3D points on the plane
        assert v.reliable.sum() >= (20 if v.synthetic else 1)
    assert (out / "contact_sheet.png").is_file()

    garbage = synthesize(PlaneMap(garbage=True), data, tmp_path / "garbage", _cfg())
    summary = json.loads((garbage / "summary.json").read_text())
    assert summary["synthetic"]["kept"] == 0 and summary["synthetic"]["rejected"] == n
    assert [v.synthetic for v in load_views(garbage)] == [False] * 4
    rejected = read_view(garbage / "views" / "synth_00000.npz")
    assert not rejected.kept and len(rejected) == 0 and rejected.num_matches.max() < 20


# ----------------------------------------------------------------- resume
def _kept(out: Path) -> dict[str, KeypointView]:
    return {v.name: v for v in load_views(out)}


def test_a_stopped_run_resumes_to_the_same_views(tmp_path):
    model = PlaneMap()
    data = _plane_data(tmp_path / "data", model)
    # A threshold at the median of the matched keypoint counts: some views kept, some rejected.
    probe = load_views(synthesize(model, data, tmp_path / "probe", _cfg(filter={"min_matches": 0})))
    cfg = _cfg(filter={"min_matches": int(np.median([v.reliable.sum() for v in probe if v.synthetic])) + 1})
    full = _kept(synthesize(model, data, tmp_path / "full", cfg))

    class Stop(Exception):
        pass

    def stop_after(n):
        def progress(it, desc="", **_kw):
            for k, x in enumerate(it):
                if k == n and desc == "synthetic views":
                    raise Stop
                yield x
        return progress

    with pytest.raises(Stop):  # killed after 3 synthetic views
        synthesize(model, data, tmp_path / "resumed", cfg, progress=stop_after(3))
    assert len(list((tmp_path / "resumed" / "views").glob("synth_*.npz"))) == 3
    synthesize(model, data, tmp_path / "resumed", cfg, limit=2)  # a limited run goes on from there
    assert len(list((tmp_path / "resumed" / "views").glob("synth_*.npz"))) == 5
    resumed = _kept(synthesize(model, data, tmp_path / "resumed", cfg))
    n_synth = sum(v.synthetic for v in full.values())
    assert 0 < n_synth < json.loads((tmp_path / "full" / "summary.json").read_text())["synthetic"]["generated"]
    assert sorted(full) == sorted(resumed)
    for name, v in full.items():
        w = resumed[name]
        for field in ("keypoints_px", "descriptors", "xyz_world", "reliable", "w2c_opencv", "num_matches"):
            assert np.array_equal(getattr(v, field), getattr(w, field)), (name, field)

    with pytest.raises(ValueError, match="other inputs"):  # never mixes settings in one folder
        synthesize(model, data, tmp_path / "resumed", _cfg(filter={"min_matches": 10}))


# ------------------------------------------------------------- view files
def test_view_loader_errors_name_the_file(tmp_path):
    with pytest.raises(ViewFileError, match="no views/ folder"):
        load_views(tmp_path)
    views = tmp_path / "views"
    views.mkdir()
    with pytest.raises(ViewFileError, match="no real views"):
        load_views(tmp_path)
    v = KeypointView(name="real_0000", synthetic=False, keypoints_px=np.zeros((3, 2)), descriptors=np.ones((3, 8)),
                     xyz_world=np.zeros((3, 3)), reliable=np.ones(3, bool), w2c_opencv=np.eye(4), K=CAMERA.K,
                     width=96, height=72)
    write_view(views / "real_0000.npz", v)
    assert len(load_views(tmp_path)) == 1
    (views / "synth_00000.npz").write_bytes(b"truncated")
    with pytest.raises(ViewFileError, match="synth_00000.npz: not a readable view file"):
        load_views(tmp_path)
    v.xyz_world = np.full((3, 3), np.nan)
    write_view(views / "synth_00000.npz", v)
    with pytest.raises(ViewFileError, match="synth_00000.npz: xyz_world has non-finite"):
        load_views(tmp_path)
    v.xyz_world = np.zeros((2, 3))
    write_view(views / "synth_00000.npz", v)
    with pytest.raises(ViewFileError, match=r"xyz_world has shape \(2, 3\), expected \(3, 3\)"):
        load_views(tmp_path)
    np.savez(views / "synth_00000.npz", keypoints_px=np.zeros((1, 2)))
    with pytest.raises(ViewFileError, match="missing field"):
        load_views(tmp_path)


# -------------------------------------------------- the room map, through the CLI
def test_synthesize_command_on_the_room_map(crossfire_map, tmp_path, capsys):
    from neural_reloc.synthesis.cli import add_parser

    map_dir, _ = crossfire_map
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    sets = ["synthesis.poses.poses_per_segment=2", "synthesis.poses.num_neighbors=1", "synthesis.filter.min_matches=5",
            "synthesis.contact_sheet_views=2"]
    data_dir = tmp_path / "data"
    _room_subset(crossfire_map[1], data_dir)

    def run(out, *extra):
        args = parser.parse_args(["synthesize", "--map", str(map_dir), "--data", str(data_dir), "--out", str(out),
                                  "--max-long-side", "80", "--quiet", "--device", "cpu", *extra, "--set", *sets])
        assert args.func(args) == 0
        return json.loads(capsys.readouterr().out)

    assert not run(tmp_path / "resumed", "--limit", "1")["complete"]  # stopped after one synthetic view
    printed = run(tmp_path / "resumed")
    assert printed["complete"] and printed["real"]["views"] == 3 and printed["synthetic"]["generated"] == 4
    assert printed["this_run"]["synthetic_views_processed"] == 3
    views = load_views(tmp_path / "resumed", synthetic=False)
    assert [v.width for v in views] == [80] * 3 and all(len(v) > 0 for v in views)
    assert (tmp_path / "resumed" / "contact_sheet.png").is_file()
    run(tmp_path / "whole")  # the same, uninterrupted: the same views, keypoints and points
    whole, resumed = _kept(tmp_path / "whole"), _kept(tmp_path / "resumed")
    assert sorted(whole) == sorted(resumed)
    for name, v in whole.items():
        assert np.array_equal(v.keypoints_px, resumed[name].keypoints_px)
        assert np.array_equal(v.xyz_world, resumed[name].xyz_world)
    from neural_reloc.config_io import ConfigError
    from neural_reloc.synthesis.cli import synthesis_config

    with pytest.raises(ConfigError, match="must start with 'synthesis.'"):
        synthesis_config(["filter.min_matches=3"])
    assert synthesis_config(["synthesis.filter.min_matches=3"]).filter.min_matches == 3


def _room_subset(dense: Path, out: Path) -> None:
    """Three consecutive frames of the room's mapping walk as a transforms.json dataset."""
    meta = json.loads((Path(dense) / "transforms.json").read_text())
    frames = meta["frames"][:3]
    meta = {k: v for k, v in meta.items() if k not in ("frames", "procedural_scene")}
    out.mkdir(parents=True)
    for f in frames:
        f["file_path"] = str((Path(dense) / f["file_path"]).resolve())
        f.pop("depth_file_path", None)
    (out / "transforms.json").write_text(json.dumps({**meta, "frames": frames}))
