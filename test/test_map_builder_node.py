"""The map_builder node as its own process: from a dataset directory and from a bag.

Tiny builds (the plain ``nerf`` method, a few steps, small images) keep this fast; the
code path (config, dataset/bag loading, build_map, progress, exit status) is the one a
full CROSSFIRE build takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.requires_ros

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["method:=nerf", "steps:=4", "max_size:=48", "evaluate:=false", "progress_period_s:=0.1"]


def _run(env: dict, *params: str, timeout: float = 900.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO_ROOT / "nodes" / "map_builder"), "--ros-args",
           "--params-file", str(REPO_ROOT / "config" / "build_map.yaml")]
    for p in params:
        cmd += ["-p", p]
    # the timeout only guards against a hang: on a shared, loaded machine a niced build can crawl
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_builds_from_a_dataset_directory(procedural_scene, ros_env, tmp_path):
    out = tmp_path / "map_from_dataset"
    proc = _run(ros_env, f"data:={procedural_scene}", f"out:={out}", *TINY)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    man = _manifest(out)
    assert man["method"] == "nerf" and man["training"]["steps"] == 4
    assert len(man["reference_views"]["names"]) == 96  # the scene's train split
    assert "training: done 4/4 (100%)" in log and f"map written: {out}" in log
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["map"] == str(out)


def test_builds_from_a_bag_with_a_pose_topic(procedural_scene, ros_env, tmp_path):
    from neural_reloc.bags import BagFromDatasetConfig, write_bag_from_dataset
    from neural_reloc.data import load_dataset

    bag = tmp_path / "bag"
    write_bag_from_dataset(
        load_dataset(procedural_scene), bag, BagFromDatasetConfig(max_frames=12, max_image_size=96, split="train")
    )
    out = tmp_path / "map_from_bag"
    proc = _run(
        ros_env, f"bag:={bag}", f"out:={out}", "pose_topic:=/ground_truth/camera_pose", "every_nth:=2",
        "test_every:=3", *TINY,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    # 12 frames, every 2nd: 6 posed images, every 3rd of those held out: 4 train views
    assert f"bag {bag}" in _manifest(out)["training"]["dataset"]
    assert len(_manifest(out)["reference_views"]["names"]) == 4
    assert "6 posed images (2 held out), 0 skipped without a pose" in log


def test_bad_parameters_end_with_one_clear_error(procedural_scene, ros_env, tmp_path):
    proc = _run(ros_env, f"data:={procedural_scene}", f"bag:={tmp_path}", f"out:={tmp_path / 'm'}", *TINY)
    assert proc.returncode == 2
    assert "error: set exactly one of data (a dataset directory) and bag (a rosbag2)" in proc.stderr + proc.stdout
    proc = _run(ros_env, f"data:={tmp_path / 'nothing_here'}", f"out:={tmp_path / 'm'}", *TINY)
    assert proc.returncode == 2 and "error:" in proc.stderr + proc.stdout
    proc = _run(ros_env, f"data:={procedural_scene}", f"out:={tmp_path / 'm'}", "steps:=-1")
    assert proc.returncode == 2 and "steps" in proc.stderr + proc.stdout


def test_adds_methods_as_stages_after_the_build(procedural_scene, ros_env, tmp_path):
    # a 4-step field has no surfaces yet: the kscr stage runs (progress reported as a
    # stage of this node) and ends with kscr's clear error, after the field was written
    out = tmp_path / "map_with_kscr"
    kscr = ("kscr:image_long_side=32 kscr:synthesis.poses.num_neighbors=1 kscr:synthesis.poses.poses_per_segment=1 "
            "kscr:train.steps=5")
    proc = _run(ros_env, f"data:={procedural_scene}", f"out:={out}", *TINY, "add_methods:=kscr", f"add_overrides:={kscr}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log
    assert "stage: add-method kscr" in log and "synthetic views: done" in log
    assert "error: kscr: no training view has keypoints with 3D coordinates" in log
    assert _manifest(out)["method"] == "nerf"  # the built map stays


def test_add_overrides_must_name_an_added_method(procedural_scene, ros_env, tmp_path):
    proc = _run(ros_env, f"data:={procedural_scene}", f"out:={tmp_path / 'm'}", *TINY, "add_methods:=kscr",
                "add_overrides:=nerfmatch:train.steps=3")
    assert proc.returncode == 2
    assert "add_overrides: 'nerfmatch:train.steps=3' is for 'nerfmatch', which is not in add_methods" in proc.stderr + proc.stdout
    assert not (tmp_path / "m").exists()  # failed before the build
