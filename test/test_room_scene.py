"""The furnished rooms (realistic test bed): determinism, walks off the mapping path,
clearance, the sparse variant, depth and window rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neural_reloc.data import load_dataset
from neural_reloc.data.procedural import render_procedural_view
from neural_reloc.data.procedural.room import RoomSceneConfig, build_room_scene, generate_room_scene
from neural_reloc.geometry.se3 import invert_pose, pose_error

#: Small images and fewer views: the tests check geometry, not texture detail.
SMALL = RoomSceneConfig(width=96, height=72, num_mapping_views=40, num_query_views=12, sparse_every=4)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return generate_room_scene(tmp_path_factory.mktemp("room"), SMALL)


@pytest.mark.parametrize("seed", range(6))
def test_rooms_of_several_seeds_build_with_clearance(seed):
    cfg = RoomSceneConfig(seed=seed)
    scene = build_room_scene(cfg)
    assert len(scene.split["train"]) == cfg.num_mapping_views and len(scene.split["test"]) == cfg.num_query_views
    kinds = {o.name.split("/")[0].rstrip("0123456789") for o in scene.objects}
    assert {"bookshelf", "coffee_table", "radiator"} <= kinds and len(kinds) >= 5, kinds
    for T in scene.c2w_opengl:
        assert scene.min_clearance(T[:3, 3]) >= cfg.min_clearance_m - 1e-9
    # a window on one wall
    assert scene.outside is not None and float(scene.atlas[..., 3].max()) > 0.99


@pytest.mark.parametrize("seed", range(3))
def test_queries_are_off_the_mapping_walk(seed):
    cfg = RoomSceneConfig(seed=seed)
    scene = build_room_scene(cfg)
    C = scene.c2w_opengl
    mapping = C[scene.split["train"]]
    gaps, heights, angles = [], [], []
    for T in C[scene.split["test"]]:
        d = np.linalg.norm(mapping[:, :3, 3] - T[:3, 3], axis=1)
        j = int(np.argmin(d))
        gaps.append(np.linalg.norm(mapping[j, :2, 3] - T[:2, 3]))
        heights.append(abs(mapping[j, 2, 3] - T[2, 3]))
        angles.append(pose_error(T, mapping[j])[1])
    lo, hi = cfg.query_offset_m
    # horizontally 10-50 cm off the walk (the walk's own curvature allows a little slack)
    assert min(gaps) >= lo * 0.8 and max(gaps) <= hi * 1.1, (min(gaps), max(gaps))
    assert np.median(heights) > 0.1
    assert np.median(angles) > 20.0 and max(angles) > 45.0  # other look directions


def test_generation_is_deterministic_and_cached(tmp_path, datasets):
    again = generate_room_scene(tmp_path / "again", SMALL)
    for sub in ("dense", "sparse"):
        a, b = getattr(datasets, sub), getattr(again, sub)
        for img in sorted((a / "images").glob("*.png")):
            assert img.read_bytes() == (b / "images" / img.name).read_bytes(), img
    stamp = datasets.dense / ".procedural_stamp.json"
    mtime = stamp.stat().st_mtime_ns
    generate_room_scene(datasets.dense.parent, SMALL)
    assert stamp.stat().st_mtime_ns == mtime  # the rerun skipped all work


def test_dense_and_sparse_datasets_load(datasets):
    dense, sparse = load_dataset(datasets.dense), load_dataset(datasets.sparse)
    assert len(dense.indices("train")) == SMALL.num_mapping_views
    assert len(sparse.indices("train")) == SMALL.num_mapping_views // SMALL.sparse_every
    assert dense.names[: SMALL.num_mapping_views : SMALL.sparse_every] == [sparse.names[i] for i in sparse.indices("train")]
    assert [dense.names[i] for i in dense.indices("test")] == [sparse.names[i] for i in sparse.indices("test")]
    assert dense.depth_paths is not None and sparse.depth_paths is not None
    meta = json.loads((datasets.dense / "transforms.json").read_text())
    assert meta["frames"][0]["depth_file_path"].startswith("depth/")
    assert set(meta["procedural_scene"]["walks"]) == {"mapping", "inside", "outside"}


def test_depth_is_consistent_between_views(datasets):
    """A pixel's depth, back-projected from one view, lands where the other view's
    depth says the surface is."""
    data = load_dataset(datasets.dense)
    i, j = 0, 1
    cam = data.camera(i)
    d_i, d_j = data.depth(i), data.depth(j)
    uv = cam.pixel_centers().reshape(-1, 2)
    rays = cam.pixel_rays_opencv(uv)
    pts_cam = rays / rays[:, 2:3] * d_i.reshape(-1, 1)
    c2w_i = invert_pose(data.w2c_opencv(i))
    pts_w = pts_cam @ c2w_i[:3, :3].T + c2w_i[:3, 3]
    w2c_j = data.w2c_opencv(j)
    pc = pts_w @ w2c_j[:3, :3].T + w2c_j[:3, 3]
    uvj, _ = cam.project(pc)
    inside = cam.in_image(uvj) & (pc[:, 2] > 0)
    col, row = np.floor(uvj[inside]).astype(int).T
    visible = np.abs(d_j[row, col] - pc[inside, 2]) < 0.02
    assert inside.sum() > 0.3 * len(uv)
    assert visible.mean() > 0.8  # the rest is occluded or on depth edges


def test_window_shows_the_outside_view_dependent():
    """Glass pixels change colour with the viewing direction; walls do not."""
    cfg = RoomSceneConfig(seed=0, width=64, height=48)
    scene = build_room_scene(cfg)
    from neural_reloc.data.procedural.scene import ProceduralScene

    assert isinstance(scene, ProceduralScene)
    dirs = np.array([[1.0, 0.0, 0.05], [0.0, 1.0, 0.3], [-1.0, 0.0, -0.2]], np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    cols = scene.outside.color(dirs[:, 0], dirs[:, 1], dirs[:, 2])
    assert cols.shape == (3, 3) and np.ptp(cols, axis=0).max() > 0.05
    rgb, depth = render_procedural_view(scene, scene.camera, scene.c2w_opengl[0])
    assert rgb.shape == (48, 64, 3) and np.all(depth > 0)
