"""Flow stereo between mapping views (``neural_reloc.sfm.flow_stereo``): the ray-pair
triangulation, distances measured on a textured wall seen by a sideways walk, nothing on
a plain one, masks honoured, partners chosen by baseline, wide baselines followed through
the plane pre-warp, and the merge with the SIFT keypoints' depth."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from neural_reloc.data import load_dataset
from neural_reloc.nerf.sparse_depth import _merge_pixels
from neural_reloc.sfm.config import FlowStereoConfig
from neural_reloc.geometry.camera import Camera
from neural_reloc.sfm.flow_stereo import (
    flow_stereo_depth,
    plane_homography,
    stereo_neighbours,
    triangulate_ray_pairs,
)

W, H, F = 160, 120, 200.0
WALL_Z = 2.0  # metres in front of every camera
STEP_M = 0.08  # sideways step between views: F * STEP_M / WALL_Z = 8 px of disparity, 2.3 deg


def _wall_texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, size=(H, W + 200), dtype=np.uint8)
    # Blobs a few pixels wide: DIS follows them 16 px (finer noise it loses beyond ~10)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3.0), None, 0, 255, cv2.NORM_MINMAX)


def _write_walk(root: Path, n: int = 5, plain: bool = False, masks: bool = False, step_m: float = STEP_M) -> Path:
    """``n`` views of a fronto-parallel wall WALL_Z in front, each ``step_m`` to the right
    of the last (nerfstudio's OpenGL c2w: the camera looks along -z)."""
    tex = np.full((H, W + 200), 128, np.uint8) if plain else _wall_texture()
    shift = int(round(F * step_m / WALL_Z))
    assert shift * (n - 1) <= 200
    meta = {"fl_x": F, "fl_y": F, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "frames": []}
    (root / "images").mkdir(parents=True)
    for i in range(n):
        grey = tex[:, shift * i: shift * i + W]  # the camera moves right: the wall moves left
        assert cv2.imwrite(str(root / f"images/{i}.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
        c2w = np.eye(4)
        c2w[0, 3] = step_m * i
        fr = {"file_path": f"images/{i}.png", "transform_matrix": c2w.tolist()}
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            m = np.full((H, W), 255, np.uint8)
            m[:, W // 2:] = 0  # the right half of every view is ignored
            assert cv2.imwrite(str(root / f"masks/{i}.png"), m)
            fr["mask_path"] = f"masks/{i}.png"
        meta["frames"].append(fr)
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _true_distance(uv: np.ndarray) -> np.ndarray:
    """Distance along the ray through pixels ``uv`` to the wall."""
    x, y = (uv[:, 0] - W / 2) / F, (uv[:, 1] - H / 2) / F
    return WALL_Z * np.sqrt(1.0 + x * x + y * y)


def test_ray_pairs_meet_where_they_cross():
    c_a, c_b = np.zeros(3), np.array([1.0, 0.0, 0.0])
    target = np.array([[0.5, 0.2, 2.0], [-0.3, 0.1, 4.0]])
    d_a = target - c_a
    d_b = target - c_b
    t_a, t_b, angle = triangulate_ray_pairs(c_a, d_a / np.linalg.norm(d_a, axis=1, keepdims=True), c_b,
                                            d_b / np.linalg.norm(d_b, axis=1, keepdims=True))
    np.testing.assert_allclose(t_a, np.linalg.norm(d_a, axis=1), rtol=1e-9)
    np.testing.assert_allclose(t_b, np.linalg.norm(d_b, axis=1), rtol=1e-9)
    cos = np.einsum("ij,ij->i", d_a, d_b) / np.linalg.norm(d_a, axis=1) / np.linalg.norm(d_b, axis=1)
    np.testing.assert_allclose(angle, np.degrees(np.arccos(cos)), rtol=1e-9)
    parallel = triangulate_ray_pairs(c_a, np.array([[0.0, 0.0, 1.0]]), c_b, np.array([[0.0, 0.0, 1.0]]))
    assert np.isnan(parallel[0]).all() and np.isnan(parallel[1]).all()


def test_a_textured_wall_is_measured_where_the_views_agree(tmp_path):
    data = load_dataset(_write_walk(tmp_path / "walk"))
    fs = flow_stereo_depth(data, FlowStereoConfig(num_neighbors=2, min_agreeing_views=2))
    assert len(fs.uv) == len(data) == 5
    # Every view has two neighbours within reach (8-16 px of disparity, 2.3-4.6 deg).
    for i in range(len(data)):
        assert len(fs.uv[i]) > 0.2 * W * H, (i, len(fs.uv[i]))
        rel = np.abs(fs.distance[i] / _true_distance(fs.uv[i]) - 1.0)
        assert np.median(rel) < 0.005, (i, np.median(rel))
        assert np.percentile(rel, 99) < 0.02, (i, np.percentile(rel, 99))
    assert fs.stats["kept"] == fs.count


def test_agreement_and_angle_settings_bound_what_is_kept(tmp_path):
    data = load_dataset(_write_walk(tmp_path / "walk"))
    base = flow_stereo_depth(data, FlowStereoConfig(num_neighbors=2, min_agreeing_views=2)).stats["measured_pixels"]
    # One neighbour cannot agree with another: nothing is kept.
    assert flow_stereo_depth(data, FlowStereoConfig(num_neighbors=1, min_agreeing_views=2)).count == 0
    single = flow_stereo_depth(data, FlowStereoConfig(num_neighbors=1, min_agreeing_views=1))
    assert single.stats["measured_pixels"] > base
    # Nearest neighbours 2.3 deg apart: a 10 deg minimum angle leaves nothing.
    assert flow_stereo_depth(data, FlowStereoConfig(num_neighbors=2, min_agreeing_views=2, min_triangulation_angle_deg=10.0)).count == 0
    capped = flow_stereo_depth(data, FlowStereoConfig(num_neighbors=2, min_agreeing_views=2, max_points_per_view=100))
    assert all(len(uv) <= 100 for uv in capped.uv)


def test_partners_are_chosen_by_the_angle_their_baseline_sees_the_scene_at():
    """A dense sideways walk (2 cm steps, a wall 2 m away): the nearest views meet at
    ~0.6 deg; with the scene's distance known, the partners are those nearest the target
    angle, never under the minimum; unknown, the nearest views."""
    n, step = 40, 0.02
    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, 0, 3] = -step * np.arange(n)  # camera i at x = step * i, looking along +z (OpenCV)
    cfg = FlowStereoConfig(num_neighbors=2, target_triangulation_angle_deg=8.0, min_triangulation_angle_deg=2.0)
    chosen = stereo_neighbours(w2c, np.full(n, WALL_Z), cfg)
    want = np.degrees(2 * np.arctan(np.arange(n) * step / 2 / WALL_Z))  # angle to view i + k
    k_best = int(np.argmin(np.abs(want - 8.0)))
    assert sorted(abs(j - 20) for j in chosen[20]) == [k_best, k_best]
    for i, nbrs in enumerate(chosen):
        assert len(nbrs) == 2 and i not in nbrs
        assert all(abs(j - i) * step >= 2 * WALL_Z * np.tan(np.radians(1.0)) for j in nbrs)
    nearest = stereo_neighbours(w2c, None, cfg)
    assert sorted(nearest[20]) == [19, 21]
    assert stereo_neighbours(w2c, np.full(n, WALL_Z), FlowStereoConfig(num_neighbors=2, target_triangulation_angle_deg=0))[20] in ([19, 21], [21, 19])


def test_the_plane_homography_maps_the_plane_between_the_views():
    cam = Camera(width=W, height=H, fx=F, fy=F, cx=W / 2, cy=H / 2)
    rng = np.random.default_rng(1)
    w2c_a, w2c_b = np.eye(4), np.eye(4)
    rot = cv2.Rodrigues(np.array([0.02, -0.1, 0.03]))[0]
    w2c_b[:3, :3], w2c_b[:3, 3] = rot, [-0.3, 0.05, 0.1]
    uv_a = rng.uniform([0, 0], [W, H], size=(20, 2))
    x = cam.pixel_rays_opencv(uv_a)
    x = x / x[:, 2:] * WALL_Z  # on the plane z = WALL_Z of camera a
    uv_b, _ = cam.project(x @ rot.T + w2c_b[:3, 3])
    h = plane_homography(cam, cam, w2c_a, w2c_b, WALL_Z)
    p = np.c_[uv_a, np.ones(len(uv_a))] @ h.T
    np.testing.assert_allclose(p[:, :2] / p[:, 2:], uv_b, atol=1e-9)


def test_the_plane_prewarp_follows_a_wide_baseline(tmp_path):
    """Views 0.4 m apart at 2 m (40 px of disparity, 11 deg, beyond what DIS follows on
    its own): warped onto the plane at the scene's distance, the flow has only the
    parallax off that plane to find, and the wall is measured."""
    data = load_dataset(_write_walk(tmp_path / "wide", step_m=0.4))
    cfg = FlowStereoConfig(num_neighbors=2, min_agreeing_views=2)
    unknown = flow_stereo_depth(data, cfg)
    known = flow_stereo_depth(data, cfg, view_distance=np.full(len(data), 0.9 * WALL_Z))
    assert known.count > 5 * max(unknown.count, 1) and known.count > 0.2 * W * H
    for i in range(len(data)):
        if len(known.uv[i]):
            rel = np.abs(known.distance[i] / _true_distance(known.uv[i]) - 1.0)
            assert np.median(rel) < 0.005, (i, np.median(rel))


def test_a_plain_wall_and_masked_pixels_give_nothing(tmp_path):
    plain = load_dataset(_write_walk(tmp_path / "plain", plain=True))
    assert flow_stereo_depth(plain, FlowStereoConfig(num_neighbors=2, min_agreeing_views=2)).count == 0
    masked = load_dataset(_write_walk(tmp_path / "masked", masks=True))
    fs = flow_stereo_depth(masked, FlowStereoConfig(num_neighbors=2, min_agreeing_views=2))
    assert fs.count > 0
    for uv in fs.uv:
        assert (uv[:, 0] < W // 2).all()


def test_flow_stereo_pixels_replace_keypoints_in_the_pixels_they_share():
    sift_uv = np.array([[10.2, 5.7], [30.9, 8.1]], np.float32)
    sift_d = np.array([1.0, 2.0], np.float32)
    flow_uv = np.array([[10.5, 5.5], [50.5, 9.5]], np.float32)  # the first in sift's first pixel
    flow_d = np.array([1.5, 3.0], np.float32)
    uv, d = _merge_pixels(sift_uv, sift_d, flow_uv, flow_d, width=W)
    got = {(int(u), int(v)): x for (u, v), x in zip(uv, d)}
    assert got == {(10, 5): 1.5, (30, 8): 2.0, (50, 9): 3.0}


def test_rgb_only_keypoint_depth_carries_flow_stereo_pixels(tmp_path):
    """What an RGB-only map trains its depth on (``nerf.sparse_depth.keypoint_depth``):
    the SIFT keypoints, plus flow stereo's pixels when its settings are given."""
    from neural_reloc.nerf.sparse_depth import keypoint_depth

    data = load_dataset(_write_walk(tmp_path / "walk"))
    sift = keypoint_depth(data)
    both = keypoint_depth(data, flow_stereo=FlowStereoConfig(num_neighbors=2, min_agreeing_views=2))
    assert "flow_stereo_kept" not in sift.stats and both.stats["flow_stereo_kept"] > 0
    assert both.count > sift.count + 0.5 * both.stats["flow_stereo_kept"]
    for i in range(len(data)):
        rel = np.abs(both.distance[i] / _true_distance(both.uv[i]) - 1.0)
        assert np.median(rel) < 0.01, (i, np.median(rel))
