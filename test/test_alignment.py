"""Map alignment (map_from_world): the maths, the bundle entry and `neural-reloc align`."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_reloc.geometry import alignment as al
from neural_reloc.geometry.frames import (
    camera_center_from_opencv_w2c,
    opengl_c2w_from_opencv_c2w,
)
from neural_reloc.geometry.se3 import invert_pose, make_pose, rotation_from_rotvec
from neural_reloc.map_bundle import (
    MANIFEST_NAME,
    MapError,
    ReferenceViews,
    read_manifest,
    read_map,
    sha256_file,
    write_alignment,
    write_map,
)


def random_similarity(rng) -> al.Similarity:
    return al.Similarity(float(rng.uniform(0.2, 5.0)), rotation_from_rotvec(rng.normal(size=3)), rng.normal(size=3) * 3)


def test_similarity_points_poses_inverse():
    rng = np.random.default_rng(0)
    sim = random_similarity(rng)
    p = rng.normal(size=(10, 3))
    assert np.allclose(sim.inverse().apply_points(sim.apply_points(p)), p)
    assert np.allclose(sim.apply_points(p), (sim.matrix @ np.c_[p, np.ones(10)].T).T[:, :3])
    assert np.allclose(sim.compose(sim.inverse()).matrix, np.eye(4))
    # a camera: its centre is mapped as a point, its rotation composed, the pose stays rigid
    w2c = invert_pose(make_pose(rotation_from_rotvec(rng.normal(size=3)), rng.normal(size=3)))
    w2c_map = sim.apply_w2c_opencv(w2c)
    assert np.allclose(camera_center_from_opencv_w2c(w2c_map), sim.apply_points(camera_center_from_opencv_w2c(w2c)))
    assert np.allclose(w2c_map[:3, :3] @ w2c_map[:3, :3].T, np.eye(3))
    assert np.allclose(invert_pose(w2c_map)[:3, :3], sim.rotation @ invert_pose(w2c)[:3, :3])
    # a world point projects to the same pixel in both frames (same camera, same scene)
    x = rng.normal(size=3)
    cam_w = w2c[:3, :3] @ x + w2c[:3, 3]
    cam_m = w2c_map[:3, :3] @ sim.apply_points(x) + w2c_map[:3, 3]
    assert np.allclose(cam_m, sim.scale * cam_w)  # the same direction: the same pixel
    assert np.allclose(sim.inverse().apply_w2c_opencv(w2c_map), w2c)
    assert al.IDENTITY.is_identity and not sim.is_identity


def test_covariance_transform_matches_sampling():
    """Position block scaled by s^2 and rotated, rotation block rotated: checked against
    poses sampled from the covariance and mapped one by one."""
    rng = np.random.default_rng(1)
    sim = random_similarity(rng)
    c2w = make_pose(rotation_from_rotvec(rng.normal(size=3)), rng.normal(size=3))
    L = rng.normal(size=(6, 6)) * 0.01
    cov = L @ L.T
    samples = rng.multivariate_normal(np.zeros(6), cov, size=20000)
    mapped = sim.apply_c2w_opencv(c2w)
    deltas = []
    for d in samples:
        T = make_pose(rotation_from_rotvec(d[3:]) @ c2w[:3, :3], c2w[:3, 3] + d[:3])  # ROS: about fixed axes
        M = sim.apply_c2w_opencv(T)
        dr = M[:3, :3] @ mapped[:3, :3].T
        rotvec = np.array([dr[2, 1] - dr[1, 2], dr[0, 2] - dr[2, 0], dr[1, 0] - dr[0, 1]]) / 2
        deltas.append(np.r_[M[:3, 3] - mapped[:3, 3], rotvec])
    empirical = np.cov(np.array(deltas).T)
    predicted = sim.apply_covariance(cov)
    assert np.allclose(empirical, predicted, atol=0.03 * np.abs(predicted).max())
    assert np.allclose(np.trace(predicted[:3, :3]), sim.scale**2 * np.trace(cov[:3, :3]))


def test_umeyama_recovers_a_similarity_and_reports_residual():
    rng = np.random.default_rng(2)
    for _ in range(5):
        sim = random_similarity(rng)
        X = rng.normal(size=(8, 3)) * 4
        fit = al.similarity_from_point_pairs(X, sim.apply_points(X))
        assert fit.rms_residual < 1e-9
        assert math.isclose(fit.similarity.scale, sim.scale, rel_tol=1e-9)
        assert np.allclose(fit.similarity.rotation, sim.rotation) and np.allclose(fit.similarity.translation, sim.translation)
    noise = rng.normal(size=(8, 3)) * 0.01
    fit = al.similarity_from_point_pairs(X, sim.apply_points(X) + noise)
    assert 0.003 < fit.rms_residual < 0.02 and len(fit.residuals) == 8
    # three points are enough; two, or collinear ones, are not
    assert al.similarity_from_point_pairs(X[:3], sim.apply_points(X[:3])).rms_residual < 1e-9
    with pytest.raises(ValueError, match="at least 3"):
        al.similarity_from_point_pairs(X[:2], X[:2])
    line = np.outer(np.arange(5.0), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="collinear"):
        al.similarity_from_point_pairs(line, line + 1)
    with pytest.raises(ValueError, match="NaN"):
        al.similarity_from_point_pairs(np.r_[X[:3], [[np.nan, 0, 0]]], np.r_[X[:3], [[0, 0, 0]]])


def walk_c2w_opencv(rng, up_world, n=40, turns=True, pitch_deg=-20.0, roll_std_deg=2.0):
    """A handheld walk in a world whose up is ``up_world``: cameras level but for a
    little roll, pitched down by ``pitch_deg`` the whole walk, yaw following the path."""
    to_world = al.rotation_between([0.0, 0.0, 1.0], up_world)  # a z-up frame -> the world
    poses = []
    for i in range(n):
        yaw = (2 * math.pi * i / n) if turns else 0.3
        pos = np.array([3 * math.cos(yaw), 3 * math.sin(yaw), 1.5]) if turns else np.array([0.1 * i, 0.0, 1.5])
        # z-up body: camera looks along its heading; OpenCV axes x right, y down, z forward
        fwd = np.array([math.cos(yaw + math.pi / 2), math.sin(yaw + math.pi / 2), 0.0]) if turns else \
            np.array([math.cos(yaw), math.sin(yaw), 0.0])
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        R = np.c_[right, -np.array([0.0, 0.0, 1.0]), fwd]  # level camera
        R = R @ rotation_from_rotvec([math.radians(pitch_deg), 0, 0])  # pitch about its x
        R = R @ rotation_from_rotvec([0, 0, math.radians(rng.normal() * roll_std_deg)])  # roll about z
        poses.append(make_pose(to_world @ R, to_world @ pos))
    return np.array(poses)


@pytest.mark.parametrize("turns", [True, False])
def test_gravity_from_a_pitched_walk(turns):
    rng = np.random.default_rng(3)
    up = np.array([0.3, -0.8, 0.5])
    up /= np.linalg.norm(up)
    c2w = walk_c2w_opencv(rng, up, turns=turns)
    est = al.estimate_up(c2w)
    assert est.how == ("x_axes" if turns else "x_axes_and_travel")
    err = math.degrees(math.acos(np.clip(est.up_world @ up, -1, 1)))
    # the camera pitch (20 deg down the whole walk) does not bias the x-axes estimate
    assert err < 1.5, err
    assert 0.5 < est.rms_roll_deg < 4.0
    sim, _ = al.gravity_alignment(c2w, scale=0.5)
    assert np.allclose(sim.rotation @ est.up_world, [0, 0, 1]) and sim.scale == 0.5
    assert not sim.translation.any()
    with pytest.raises(ValueError, match="at least 2"):
        al.estimate_up(c2w[:1])
    if not turns:  # no travel either (a camera turning on the spot about nothing): mean up, pitch-biased
        still = c2w.copy()
        still[:, :3, 3] = still[0, :3, 3]
        assert al.estimate_up(still).how == "mean_up"
    assert math.isclose(al.scale_from_distance([0, 0, 0], [0, 3, 4], 10.0), 2.0)
    with pytest.raises(ValueError, match="coincide"):
        al.scale_from_distance([1, 1, 1], [1, 1, 1], 1.0)


def test_from_dict_names_the_problem():
    sim = random_similarity(np.random.default_rng(4))
    assert np.allclose(al.Similarity.from_dict(json.loads(json.dumps(sim.to_dict()))).matrix, sim.matrix)
    for bad, match in [({"scale": 1, "rotation": np.eye(3).tolist()}, "lacks translation"),
                       ({"scale": -1, "rotation": np.eye(3).tolist(), "translation": [0, 0, 0]}, "scale"),
                       ({"scale": 1, "rotation": (2 * np.eye(3)).tolist(), "translation": [0, 0, 0]}, "rotation"),
                       ({"scale": 1, "rotation": np.diag([1, 1, -1]).tolist(), "translation": [0, 0, 0]}, "proper"),
                       ({"scale": 1, "rotation": np.eye(3).tolist(), "translation": [0, 0]}, "translation"),
                       ({"scale": "x", "rotation": np.eye(3).tolist(), "translation": [0, 0, 0]}, "number")]:
        with pytest.raises(ValueError, match=match):
            al.Similarity.from_dict(bad)


def _small_map(path: Path, c2w_opencv: np.ndarray) -> Path:
    refs = ReferenceViews([f"{i}.png" for i in range(len(c2w_opencv))], [{"width": 4, "height": 3}] * len(c2w_opencv),
                          np.array([opengl_c2w_from_opencv_c2w(T) for T in c2w_opencv]))
    return write_map(path, method="crossfire", modules={"map": torch.nn.Linear(4, 3), "big": {"w": torch.ones(3)}},
                     config={"x": 1}, scene={"mode": "none"}, references=refs, fingerprint="abc",
                     field_config={"f": 2})


def _cli(*args) -> subprocess.CompletedProcess:
    """`neural-reloc ARGS` in this process (the CLI's main, as the console script runs it)."""
    import contextlib
    import io

    from neural_reloc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_bundle_roundtrip_align_info_checksums(tmp_path):
    rng = np.random.default_rng(5)
    up = np.array([0.0, -1.0, 0.0])  # an OpenGL-style y-up world
    m = _small_map(tmp_path / "m", walk_c2w_opencv(rng, up))
    files_before = {f.name: sha256_file(f) for f in m.iterdir() if f.name != MANIFEST_NAME}
    assert read_map(m).map_from_world.is_identity  # absent = identity

    # point pairs from a known similarity -> the map stores it
    sim = random_similarity(rng)
    X = rng.normal(size=(5, 3))
    Y = sim.apply_points(X)
    csv = tmp_path / "pairs.csv"
    csv.write_text("world_x,world_y,world_z,map_x,map_y,map_z\n" + "\n".join(
        ",".join(f"{v:.12f}" for v in np.r_[x, y]) for x, y in zip(X, Y)) + "\n")
    r = _cli("align", "--map", m, "--points", csv)
    assert r.returncode == 0, r.stderr
    assert "RMS residual" in r.stderr
    b = read_map(m)  # verifies every checksum
    assert np.allclose(b.map_from_world.matrix, sim.matrix, atol=1e-8)
    assert {f.name: sha256_file(f) for f in m.iterdir() if f.name != MANIFEST_NAME} == files_before
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]
    assert not [f for f in m.iterdir() if f.name.startswith(".")]
    info = json.loads(_cli("info", "--map", m).stdout)
    assert info["alignment"]["estimated_from"] == "points" and info["alignment"]["num_points"] == 5
    assert np.allclose(info["alignment"]["map_from_world"]["scale"], sim.scale)

    # gravity with a scale, to a copy: the original keeps its point alignment
    r = _cli("align", "--map", m, "--gravity", "--scale", "0.25", "--out", tmp_path / "m2")
    assert r.returncode == 0, r.stderr
    b2 = read_map(tmp_path / "m2")
    assert b2.map_from_world.scale == 0.25
    assert np.allclose(b2.map_from_world.rotation @ up, [0, 0, 1], atol=0.03)
    assert np.allclose(read_map(m).map_from_world.matrix, sim.matrix, atol=1e-8)
    r = _cli("align", "--map", m, "--gravity", "--distance", 0, 0, 0, 0, 3, 4, 10, "--out", tmp_path / "m3")
    assert r.returncode == 0, r.stderr
    assert math.isclose(read_map(tmp_path / "m3").map_from_world.scale, 2.0)

    # bad input: one error line naming the problem, the map untouched
    manifest_before = (m / MANIFEST_NAME).read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3,4,5,6\n1,2,3,4,5\n")
    for args, match in [(("--points", bad), "bad.csv:2"), (("--points", csv, "--scale", "2"), "--gravity"),
                        (("--gravity", "--scale", "-1"), "scale")]:
        r = _cli("align", "--map", m, *args)
        assert r.returncode == 2 and r.stderr.startswith("error:") and match in r.stderr, r.stderr
    line = tmp_path / "line.csv"
    line.write_text("".join(f"{i},{i},{i},{i},{i},{i}\n" for i in range(4)))
    r = _cli("align", "--map", m, "--points", line)
    assert r.returncode == 2 and "collinear" in r.stderr and "line.csv" in r.stderr
    assert (m / MANIFEST_NAME).read_text() == manifest_before

    # a damaged alignment entry is refused on read, naming the field
    man = json.loads(manifest_before)
    man["alignment"]["map_from_world"]["scale"] = 0
    (m / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(MapError, match="alignment.*scale"):
        read_manifest(m)
    (m / MANIFEST_NAME).write_text(manifest_before)
    with pytest.raises(MapError, match="alignment.*lacks rotation"):
        write_alignment(m, {"map_from_world": {"scale": 1}})
    assert (m / MANIFEST_NAME).read_text() == manifest_before
    write_alignment(m, None)  # removed: identity again, files untouched
    assert read_map(m).map_from_world.is_identity


def test_map_frame_relocalizer_converts_priors_in_and_results_out():
    """The node's one crossing (ros/map_frame.py, no rclpy): priors in map reach the
    relocalizer in world; its world results come back in map."""
    from neural_reloc.methods.base import (
        IterationRecord,
        LocalizationResult,
        PosePrior,
        Relocalizer,
    )
    from neural_reloc.ros.map_frame import MapFrameRelocalizer, in_map_frame

    rng = np.random.default_rng(6)
    sim = random_similarity(rng)
    w2c_world = invert_pose(make_pose(rotation_from_rotvec(rng.normal(size=3)), rng.normal(size=3)))
    cov = np.diag([1e-4] * 3 + [1e-6] * 3)
    seen = []

    class World(Relocalizer):
        method = "world"

        def localize(self, image_rgb, camera, prior):
            seen.append(prior)
            return LocalizationResult(True, self.method, prior, w2c_world, cov, 10, 9, 1,
                                      history=[IterationRecord(w2c_world, 10, 9, 0.5, 1.0)])

    reloc = in_map_frame(World(), sim)
    assert isinstance(reloc, MapFrameRelocalizer) and reloc.method == "world"
    prior_map = sim.apply_w2c_opencv(w2c_world)
    out = reloc.localize(None, None, PosePrior(prior_map, "initialpose", covariance=sim.apply_covariance(cov)))
    assert np.allclose(seen[-1].w2c_opencv, w2c_world) and np.allclose(seen[-1].covariance, cov)
    assert np.allclose(out.w2c_opencv, prior_map) and np.allclose(out.covariance, sim.apply_covariance(cov))
    assert np.allclose(out.prior.w2c_opencv, prior_map) and out.prior.source == "initialpose"
    assert np.allclose(out.history[0].w2c_opencv, prior_map) and math.isclose(out.history[0].pose_update_m, 0.5 * sim.scale)
    assert in_map_frame(World(), al.IDENTITY).__class__ is World


def test_gravity_of_the_room_walk(room_scene):
    """The furnished room's mapping walk (a z-up world, camera heights 1.2-1.7 m): up comes
    out within half a degree of +z (measured: 0.09 deg)."""
    from neural_reloc.data import load_dataset
    from neural_reloc.geometry.frames import opencv_c2w_from_opengl_c2w

    data = load_dataset(room_scene.dense)
    est = al.estimate_up(np.array([opencv_c2w_from_opengl_c2w(T) for T in data.c2w_opengl]))
    assert est.how == "x_axes"
    assert math.degrees(math.acos(min(1.0, est.up_world[2]))) < 0.5, est.up_world
