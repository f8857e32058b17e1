"""rosbag2 bags without ROS: dataset -> bag -> frames (and -> a dataset again),
simulated odometry, bad bags.

One small procedural scene (160x120, 24 frames: ~1.4 MB of images, so an MCAP bag of it
has two chunks and a cut in the second one leaves the first readable) is generated per
module. Ground truth is checked against the dataset's OpenGL camera-to-world poses with
the axis flips written out here, not through the project's frame functions.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neural_reloc.bags import (
    BagError,
    BagFrames,
    BagFromDatasetConfig,
    BagReadConfig,
    BagReader,
    BagTopics,
    BagTruncatedError,
    GroundTruthConfig,
    OdometryConfig,
    read_frames,
    simulate_odometry,
    write_bag_from_dataset,
)
from neural_reloc.bags import messages as m
from neural_reloc.data import DatasetError, detect_format, load_dataset
from neural_reloc.data.procedural import (
    ProceduralSceneConfig,
    generate_procedural_scene,
)
from neural_reloc.geometry.se3 import (
    invert_pose,
    make_pose,
    rotation_angle_deg,
    rotation_from_rotvec,
    rotvec_from_rotation,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FOX = REPO_ROOT.parent / "shared/data/fox"
SCENE = ProceduralSceneConfig(width=160, height=120, num_frames=24)
START_NS = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = generate_procedural_scene(tmp_path_factory.mktemp("scene"), SCENE)
    return load_dataset(path)


@pytest.fixture(scope="module")
def bags(dataset, tmp_path_factory):
    """One complete bag per storage, written with the default config."""
    root = tmp_path_factory.mktemp("bags")
    out = {}
    for storage in ("mcap", "sqlite3"):
        out[storage] = root / storage
        write_bag_from_dataset(dataset, out[storage], BagFromDatasetConfig(storage=storage))
    return out


def opencv_axes_c2w(c2w_opengl: np.ndarray) -> np.ndarray:
    """Camera optical frame (x right, y down, z forward) in world, written out: the OpenGL
    camera's y (up) and z (backward) axes flip, the centre stays."""
    T = np.array(c2w_opengl, dtype=np.float64)
    T[:3, 1] *= -1.0
    T[:3, 2] *= -1.0
    return T


# ------------------------------------------------------------------ helpers
def rewrite_bag(src: Path, dst: Path, *, drop=(), retype: dict | None = None, extra=None, storage: str = "mcap") -> Path:
    """Copy a bag message by message (raw CDR), dropping topics, changing a topic's type
    (retype: topic -> (new type, msgdef, convert(raw) -> raw)) or adding messages
    (extra: list of (topic, type, msgdef, [(t_ns, raw)]); on a topic the bag has, its
    connection)."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    retype = retype or {}
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for c in reader.connections:
            if c.topic in drop:
                continue
            if c.topic in retype:
                msgtype, msgdef, _ = retype[c.topic]
                conns[c.id] = writer.add_connection(c.topic, msgtype, msgdef=msgdef, rihs01="RIHS01_" + "0" * 64)
            else:
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=m.typestore())
        for c, t, raw in reader.messages():
            if c.id not in conns:
                continue
            if c.topic in retype:
                raw = retype[c.topic][2](raw)
            writer.write(conns[c.id], t, raw)
        by_topic = {c.topic: conn for c in reader.connections if (conn := conns.get(c.id)) is not None}
        for topic, msgtype, msgdef, msgs in extra or []:
            conn = by_topic.get(topic) or writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01="RIHS01_" + "0" * 64)
            for t, raw in msgs:
                writer.write(conn, t, raw)
    return dst


def storage_file(bag: Path) -> Path:
    (f,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return f


# ================================================================== round trip
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_dataset_bag_frames(dataset, bags, storage):
    bag = bags[storage]
    assert storage_file(bag).suffix == {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    cfg = BagFromDatasetConfig()
    frames = list(read_frames(bag, ground_truth=GroundTruthConfig()))
    assert len(frames) == len(dataset) == SCENE.num_frames
    assert [f.name for f in frames] == dataset.names
    assert [f.stamp_ns for f in frames] == [START_NS + k * 100_000_000 for k in range(len(dataset))]

    base_from_optical = frames[0].frame.base_from_optical
    # REP-103 mount: optical z (forward) along base x, optical x (right) along base -y,
    # optical y (down) along base -z; the camera body 10 cm ahead, 20 cm up.
    np.testing.assert_allclose(base_from_optical[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(base_from_optical[:3, 3], [0.1, 0.0, 0.2], atol=1e-12)

    true_map_from_base = []
    for k, f in enumerate(frames):
        assert f.frame_id == "camera_optical_frame"
        np.testing.assert_array_equal(f.frame.image_rgb, dataset.image(k))
        assert f.frame.camera == dataset.camera(k)
        gt = opencv_axes_c2w(dataset.c2w_opengl[k])
        np.testing.assert_allclose(f.gt_map_from_optical, gt, atol=1e-9)
        true_map_from_base.append(gt @ invert_pose(base_from_optical))
        assert f.frame.stamp_ns == f.stamp_ns
    odom = np.array([f.frame.odom_from_base for f in frames])
    np.testing.assert_allclose(odom, simulate_odometry(np.array(true_map_from_base), cfg.odometry), atol=1e-9)
    np.testing.assert_allclose(odom[0], np.eye(4), atol=1e-12)
    # ground truth through TF (map -> gt camera) is the same as the pose topic
    via_tf = list(read_frames(bag, ground_truth=GroundTruthConfig(tf_parent="map", tf_child="gt_camera_optical_frame")))
    for a, b in zip(frames, via_tf):
        np.testing.assert_allclose(a.gt_map_from_optical, b.gt_map_from_optical, atol=1e-9)


def test_mcap_bag_is_read_by_the_mcap_package_too(bags, dataset):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(storage_file(bags["mcap"]), "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        images = [msg for _, _, _, msg in reader.iter_decoded_messages(topics=["/camera/image_raw"])]
        f.seek(0)
        infos = [msg for _, _, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(topics=["/camera/camera_info"])]
    assert len(images) == len(infos) == len(dataset)
    img = np.frombuffer(bytes(images[3].data), np.uint8).reshape(images[3].height, images[3].width, 3)
    assert images[3].encoding == "rgb8"
    np.testing.assert_array_equal(img, dataset.image(3))
    # ROS K: pixel centres at integer coordinates, half a pixel left/up of ours
    cam = dataset.camera(3)
    assert list(infos[3].k) == pytest.approx([cam.fx, 0, cam.cx - 0.5, 0, cam.fy, cam.cy - 0.5, 0, 0, 1])


def test_sqlite3_bag_has_the_rosbag2_tables(bags, dataset):
    con = sqlite3.connect(f"file:{storage_file(bags['sqlite3'])}?mode=ro", uri=True)
    counts = dict(
        con.execute("SELECT topics.name, COUNT(*) FROM messages JOIN topics ON messages.topic_id = topics.id GROUP BY topics.name")
    )
    types = dict(con.execute("SELECT name, type FROM topics"))
    con.close()
    n = len(dataset)
    assert counts == {
        "/camera/image_raw": n,
        "/camera/camera_info": n,
        "/tf": n,
        "/tf_static": 1,
        "/ground_truth/camera_pose": n,
    }
    assert types["/camera/image_raw"] == "sensor_msgs/msg/Image"
    assert types["/ground_truth/camera_pose"] == "geometry_msgs/msg/PoseStamped"


def test_test_split_in_dataset_order_and_options(dataset, tmp_path):
    cfg = BagFromDatasetConfig(split="test", rate_hz=4.0, max_image_size=80, start_time_s=100.0)
    summary = write_bag_from_dataset(dataset, tmp_path / "b", cfg)
    test_idx = sorted(dataset.indices("test"))
    assert summary["frames"] == len(test_idx) and summary["image_size"] == [80, 60]
    frames = list(read_frames(tmp_path / "b"))
    assert [f.name for f in frames] == [dataset.names[i] for i in test_idx]
    assert [f.stamp_ns for f in frames] == [100 * 10**9 + k * 250_000_000 for k in range(len(test_idx))]
    assert frames[0].frame.camera == dataset.camera(test_idx[0]).resized(80, 60)
    assert frames[0].gt_map_from_optical is None  # no ground truth asked for
    with pytest.raises(BagError, match="exists already"):
        write_bag_from_dataset(dataset, tmp_path / "b", cfg)
    write_bag_from_dataset(dataset, tmp_path / "b", BagFromDatasetConfig(split="test", max_frames=2), overwrite=True)
    assert len(list(read_frames(tmp_path / "b"))) == 2
    (tmp_path / "notabag").mkdir()
    with pytest.raises(BagError, match="not a rosbag2 directory"):
        write_bag_from_dataset(dataset, tmp_path / "notabag", cfg, overwrite=True)
    with pytest.raises(BagError, match="storage"):
        write_bag_from_dataset(dataset, tmp_path / "c", BagFromDatasetConfig(storage="rosbag1"))
    assert not (tmp_path / "c").exists()


# ================================================================== odometry
def _steps(odom_from_base: np.ndarray) -> np.ndarray:
    return np.array([invert_pose(a) @ b for a, b in zip(odom_from_base[:-1], odom_from_base[1:])])


def test_odometry_drift_is_exactly_the_configured_bias():
    # straight line along base x, 0.1 m per step
    n, step = 60, 0.1
    truth = np.array([make_pose(np.eye(3), [k * step, 0.0, 0.0]) for k in range(n)])
    cfg = OdometryConfig(
        drift_translation_per_m=0.05,
        drift_yaw_deg_per_m=2.0,
        noise_translation_m_per_sqrt_m=0.0,
        noise_rotation_deg_per_sqrt_m=0.0,
        noise_rotation_deg_per_sqrt_rad=0.0,
    )
    odom = simulate_odometry(truth, cfg)
    np.testing.assert_allclose(odom[0], np.eye(4))
    for s in _steps(odom):
        assert np.linalg.norm(s[:3, 3]) == pytest.approx(step * 1.05, rel=1e-12)
        np.testing.assert_allclose(rotvec_from_rotation(s[:3, :3]), [0, 0, np.radians(2.0 * step)], atol=1e-12)
    # heading drift accumulates linearly with distance: 2 deg/m over 5.9 m
    assert rotation_angle_deg(odom[-1][:3, :3]) == pytest.approx(2.0 * step * (n - 1), rel=1e-9)
    errors = [np.linalg.norm(o[:3, 3] - t[:3, 3]) for o, t in zip(odom, truth)]
    assert all(b > a for a, b in zip(errors[1:], errors[2:]))  # the position error only grows


def test_odometry_noise_statistics_match_the_config():
    rng = np.random.default_rng(7)
    n = 3000
    truth = [np.eye(4)]
    dists, angles = [], []
    for _ in range(n):
        d = rng.uniform(0.02, 0.3)
        rotvec = rng.normal(size=3) * 0.1
        direction = rng.normal(size=3)
        truth.append(truth[-1] @ make_pose(rotation_from_rotvec(rotvec), direction / np.linalg.norm(direction) * d))
        dists.append(d)
        angles.append(np.linalg.norm(rotvec))
    truth = np.array(truth)
    cfg = OdometryConfig(
        drift_translation_per_m=0.0,
        drift_yaw_deg_per_m=0.0,
        noise_translation_m_per_sqrt_m=0.02,
        noise_rotation_deg_per_sqrt_m=0.5,
        noise_rotation_deg_per_sqrt_rad=1.0,
        seed=11,
    )
    meas, true = _steps(simulate_odometry(truth, cfg)), _steps(truth)
    d, a = np.array(dists), np.array(angles)
    t_res = (meas[:, :3, 3] - true[:, :3, 3]) / np.sqrt(d)[:, None]
    r_res = np.array([rotvec_from_rotation(t[:3, :3].T @ mm[:3, :3]) for t, mm in zip(true, meas)])
    r_std = np.sqrt(np.radians(0.5) ** 2 * d + np.radians(1.0) ** 2 * a)
    r_res /= r_std[:, None]
    # 9000 samples: the std estimates are within ~1.5 %, the means within ~3 sigma/sqrt(n)
    assert np.std(t_res) == pytest.approx(0.02, rel=0.05)
    assert abs(np.mean(t_res)) < 4 * 0.02 / np.sqrt(t_res.size)
    assert np.std(r_res) == pytest.approx(1.0, rel=0.05)
    assert abs(np.mean(r_res)) < 4 / np.sqrt(r_res.size)
    # same seed, same odometry; another seed, another
    np.testing.assert_array_equal(simulate_odometry(truth[:50], cfg), simulate_odometry(truth[:50], cfg))
    other = OdometryConfig(**{**cfg.__dict__, "seed": 12})
    assert not np.allclose(simulate_odometry(truth[:50], cfg), simulate_odometry(truth[:50], other))


def test_rotation_in_place_gets_rotation_noise_only():
    truth = np.array([make_pose(rotation_from_rotvec([0, 0, 0.2 * k]), [1.0, 2.0, 0.0]) for k in range(400)])
    cfg = OdometryConfig(noise_rotation_deg_per_sqrt_rad=1.0, seed=3)
    meas, true = _steps(simulate_odometry(truth, cfg)), _steps(truth)
    np.testing.assert_allclose(meas[:, :3, 3], 0.0, atol=1e-12)  # no distance: no drift, no translation noise
    res = np.array([rotvec_from_rotation(t[:3, :3].T @ mm[:3, :3]) for t, mm in zip(true, meas)])
    assert np.std(res / np.sqrt(0.2)) == pytest.approx(np.radians(1.0), rel=0.1)


# ================================================================== bad bags
def test_missing_image_topic_names_it_and_the_alternatives(dataset, tmp_path):
    cfg = BagFromDatasetConfig(topics=BagTopics(image="/front/image", camera_info="/front/camera_info"), max_frames=3)
    write_bag_from_dataset(dataset, tmp_path / "b", cfg)
    with BagReader(tmp_path / "b") as r, pytest.raises(BagError) as e:
        BagFrames(r)
    assert "image topic '/camera/image_raw' is not in the bag" in str(e.value)
    assert "/front/image" in str(e.value)
    # named explicitly, it reads
    read_cfg = BagReadConfig(topics=BagTopics(image="/front/image", camera_info="/front/camera_info"))
    assert len(list(read_frames(tmp_path / "b", read_cfg))) == 3


def test_unknown_message_type_on_the_image_topic_is_named(bags, tmp_path):
    blob = ("my_msgs/msg/Blob", "uint8[] data\n", lambda raw: raw)
    bad = rewrite_bag(bags["mcap"], tmp_path / "bad", retype={"/camera/image_raw": blob})
    with BagReader(bad) as r, pytest.raises(BagError) as e:
        BagFrames(r)
    assert "'/camera/image_raw' has message type 'my_msgs/msg/Blob'" in str(e.value)
    assert "sensor_msgs/msg/Image" in str(e.value)
    # an unknown type on a topic nobody reads is no problem
    extra = [("/diagnostics_blob", "my_msgs/msg/Blob", "uint8[] data\n", [(START_NS, b"\x00\x01\x00\x00\x00\x00\x00\x00")])]
    ok = rewrite_bag(bags["mcap"], tmp_path / "ok", extra=extra)
    assert len(list(read_frames(ok, ground_truth=GroundTruthConfig()))) == SCENE.num_frames


def test_no_ground_truth_is_named(dataset, bags, tmp_path):
    cfg = BagFromDatasetConfig(write_ground_truth_topic=False, write_ground_truth_tf=False, max_frames=3)
    write_bag_from_dataset(dataset, tmp_path / "b", cfg)
    with BagReader(tmp_path / "b") as r:
        with pytest.raises(BagError, match=r"no ground truth: topic '/ground_truth/camera_pose' is not in the bag; pass --gt-topic"):
            BagFrames(r, ground_truth=GroundTruthConfig())
        with pytest.raises(BagError, match=r"no ground truth: frames 'map' and 'gt_camera_optical_frame' .* are not in the bag's TF"):
            BagFrames(r, ground_truth=GroundTruthConfig(tf_parent="map", tf_child="gt_camera_optical_frame"))
        assert len(list(BagFrames(r))) == 3  # without ground truth asked for, frames still read
    # a ground-truth topic of the wrong type
    with BagReader(bags["mcap"]) as r, pytest.raises(BagError, match="'/camera/camera_info' has message type"):
        BagFrames(r, ground_truth=GroundTruthConfig(topic="/camera/camera_info"))


def test_images_without_camera_info(bags, tmp_path):
    bad = rewrite_bag(bags["mcap"], tmp_path / "bad", drop={"/camera/camera_info"})
    with BagReader(bad) as r, pytest.raises(BagError) as e:
        BagFrames(r)
    msg = str(e.value)
    assert "images on '/camera/image_raw' have no sensor_msgs/msg/CameraInfo" in msg
    assert "'/camera/camera_info' is not in the bag" in msg


def test_unusable_transforms_are_skipped_once_per_edge_with_a_warning(bags, tmp_path):
    """As the node's /tf listener does: a transform that would close a loop (or names a
    frame its own parent) is left out, with one warning per edge; the rest is read."""
    bad_tfs = [
        m.tf_message([m.transform_stamped_msg(np.eye(4), START_NS + 1, "camera_optical_frame", "base_link")]),
        m.tf_message([m.transform_stamped_msg(np.eye(4), START_NS + 2, "camera_optical_frame", "base_link")]),
        m.tf_message([m.transform_stamped_msg(np.eye(4), START_NS + 3, "odom", "/odom")]),
    ]
    msgdef = m.typestore().generate_msgdef(m.TF_MESSAGE)[0]
    raws = [(START_NS + k + 1, bytes(m.serialize(msg, m.TF_MESSAGE))) for k, msg in enumerate(bad_tfs)]
    bad = rewrite_bag(bags["mcap"], tmp_path / "bad", extra=[("/tf", m.TF_MESSAGE, msgdef, raws)])
    with BagReader(bad) as r:
        source = BagFrames(r)
        frames = list(source)
    assert source.warnings == [
        "ignoring a transform on /tf: transform 'camera_optical_frame' -> 'base_link' would close a loop in the TF tree",
        "ignoring a transform on /tf: transform 'odom' -> 'odom': a frame cannot be its own parent",
    ]
    clean = list(read_frames(bags["mcap"]))
    assert len(frames) == len(clean) == SCENE.num_frames
    for a, b in zip(frames, clean):
        np.testing.assert_array_equal(a.frame.odom_from_base, b.frame.odom_from_base)
        np.testing.assert_array_equal(a.frame.base_from_optical, b.frame.base_from_optical)


def test_bag_directory_without_its_storage_file(bags, tmp_path):
    bag = tmp_path / "b"
    shutil.copytree(bags["sqlite3"], bag)
    storage_file(bag).unlink()
    with pytest.raises(BagError, match=r"cannot open the bag: .*missing.*sqlite3\.db3"):
        BagReader(bag)


def test_missing_file_and_not_a_bag(tmp_path):
    with pytest.raises(BagError, match="bag not found"):
        BagReader(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(BagError, match="not a bag"):
        BagReader(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        BagReader(tmp_path / "empty")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_delivers_frames_before_the_cut_then_names_the_damage(bags, dataset, tmp_path, storage):
    bag = tmp_path / "cut"
    shutil.copytree(bags[storage], bag)
    f = storage_file(bag)
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(int(size * 0.85))
    frames = []
    with BagReader(bag) as r:
        source = BagFrames(r, ground_truth=GroundTruthConfig())
        with pytest.raises(BagTruncatedError) as e:
            for fr in source:
                frames.append(fr)
    assert "ends early" in str(e.value) and str(f) in str(e.value)
    assert 0 < len(frames) < SCENE.num_frames
    assert [fr.index for fr in frames] == list(range(len(frames)))
    assert [fr.name for fr in frames] == dataset.names[: len(frames)]
    for fr in frames:
        np.testing.assert_array_equal(fr.frame.image_rgb, dataset.image(fr.index))
    # each image's ground truth follows it in the file: only the last one's may be cut off
    assert all(fr.gt_map_from_optical is not None for fr in frames[:-1])


def test_cut_before_any_image_is_a_truncation_error(bags, tmp_path):
    bag = tmp_path / "cut"
    shutil.copytree(bags["mcap"], bag)
    with open(storage_file(bag), "r+b") as fh:
        fh.truncate(4000)
    with BagReader(bag) as r, pytest.raises(BagTruncatedError, match="nothing of the image topic"):
        BagFrames(r)


def test_compressed_images_and_bgr_are_read_as_rgb(bags, dataset, tmp_path):
    import cv2

    def to_png(raw):
        img = m.deserialize(raw, m.IMAGE)
        rgb = m.rgb_from_image_msg(img)
        _, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        msg = m.msg_class(m.COMPRESSED_IMAGE)(header=img.header, format="png", data=np.frombuffer(png.tobytes(), np.uint8))
        return m.serialize(msg, m.COMPRESSED_IMAGE)

    msgdef = m.typestore().generate_msgdef(m.COMPRESSED_IMAGE, ros_version=2)[0]
    bag = rewrite_bag(bags["mcap"], tmp_path / "c", retype={"/camera/image_raw": (m.COMPRESSED_IMAGE, msgdef, to_png)})
    frames = list(read_frames(bag))
    np.testing.assert_array_equal(frames[5].frame.image_rgb, dataset.image(5))
    rgb = dataset.image(0)
    bgr_msg = m.image_msg(rgb, START_NS, "cam")
    bgr_msg.encoding, bgr_msg.data = "bgr8", rgb[:, :, ::-1].reshape(-1).copy()
    np.testing.assert_array_equal(m.rgb_from_image_msg(bgr_msg), rgb)
    bgr_msg.encoding = "16UC1"
    with pytest.raises(ValueError, match="encoding '16UC1' is not supported"):
        m.rgb_from_image_msg(bgr_msg)


# ================================================================== a bag as a dataset
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_loads_like_the_dataset_it_was_written_from(dataset, bags, storage, tmp_path, monkeypatch):
    """load_dataset on a bag (its directory or the bare storage file), options at their
    defaults: the source dataset's names, poses, intrinsics, images and the bag's stamps."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for path in (bags[storage], storage_file(bags[storage])):
        assert detect_format(path) == ("rosbag2", path)
        data = load_dataset(path)
        assert data.source == f"bag {path}"
        assert data.names == dataset.names
        np.testing.assert_allclose(data.c2w_opengl, dataset.c2w_opengl, atol=1e-9)
        assert data.cameras == [dataset.camera(k) for k in range(len(dataset))]
        for k in (0, 7, len(dataset) - 1):
            np.testing.assert_array_equal(data.image(k), dataset.image(k))
        assert list(data.timestamps_ns) == [START_NS + k * 100_000_000 for k in range(len(dataset))]
        assert data.split == {"train": list(range(len(dataset)))}
    # unpacked once per bag (and path) into the user's cache; a second load reuses the PNGs
    cached = sorted((tmp_path / "cache" / "neural_reloc" / "bag_images").iterdir())
    assert len(cached) == 2 and all(len(list(d.glob("*.png"))) == len(dataset) for d in cached)
    again = load_dataset(bags[storage])
    assert [str(p) for p in again.image_paths] == [str(p) for p in load_dataset(bags[storage]).image_paths]


def test_bag_dataset_options_and_errors(dataset, bags, tmp_path):
    own = tmp_path / "pngs"
    data = load_dataset(bags["mcap"], images_dir=own, every_nth=2, test_every=3, pose_topic="/ground_truth/camera_pose")
    assert data.names == dataset.names[::2] and data.image_paths[1] == own / "000002.png"
    assert data.split == {"train": [0, 2, 3, 5, 6, 8, 9, 11], "test": [1, 4, 7, 10]}
    assert data.extras["bag"] == {"images_dir": str(own), "used": 12, "held_out": 4, "skipped_without_pose": 0}
    # the poses from the TF pair instead: the same
    via_tf = load_dataset(bags["mcap"], images_dir=own, tf_parent="map", tf_child="gt_camera_optical_frame")
    np.testing.assert_allclose(via_tf.c2w_opengl, dataset.c2w_opengl, atol=1e-9)
    # another bag unpacked into the same folder replaces the PNGs (smaller images here)
    write_bag_from_dataset(dataset, tmp_path / "small", BagFromDatasetConfig(max_image_size=80, max_frames=5))
    small = load_dataset(tmp_path / "small", images_dir=own)
    assert small.camera(4) == dataset.camera(4).resized(80, 60)
    np.testing.assert_array_equal(small.image(4), dataset.with_max_size(80).image(4))
    with pytest.raises(DatasetError, match="unknown bag option.*pose_topc"):
        load_dataset(bags["mcap"], pose_topc="/x")
    with pytest.raises(ValueError, match="tf_parent and tf_child must be set together"):
        load_dataset(bags["mcap"], tf_parent="map")
    with pytest.raises(BagError, match="no ground truth: topic '/pose' is not in the bag"):
        load_dataset(bags["mcap"], images_dir=own, pose_topic="/pose")


# ================================================================== executables
def test_cli_bag_from_dataset(dataset, tmp_path, capsys):
    from neural_reloc.cli import main

    src = Path(dataset.source)
    src = src if src.is_dir() else src.parent
    rc = main(["bag-from-dataset", "--data", str(src), "--out", str(tmp_path / "b"), "--split", "test", "--storage", "sqlite3", "--seed", "5"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["storage"] == "sqlite3" and summary["frames"] == len(dataset.indices("test"))
    with BagReader(tmp_path / "b") as r:
        assert r.storage == "sqlite3"
    rc = main(["bag-from-dataset", "--data", str(src), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and "exists already" in err[-1]


def test_evaluate_bag_executable_is_installed_as_a_thin_wrapper(tmp_path):
    exe = REPO_ROOT / "nodes" / "evaluate_bag"
    assert exe.is_file() and exe.stat().st_mode & stat.S_IXUSR
    assert exe.read_text().startswith("#!/usr/bin/env python3\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, str(exe), "--bag", str(tmp_path / "missing"), "--map", "m", "--out", str(tmp_path / "o"), "--ros-args", "-r", "__node:=x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: bag not found: {tmp_path / 'missing'}"
    assert json.loads((tmp_path / "o" / "results.json").read_text())["status"] == "error"


# ================================================================== real data
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason="shared fox data not present")
def test_fox_held_out_frames_in_order(tmp_path):
    fox = load_dataset(FOX)
    test_idx = sorted(fox.indices("test"))
    write_bag_from_dataset(fox, tmp_path / "fox", BagFromDatasetConfig(split="test", max_image_size=240, max_frames=5))
    frames = list(read_frames(tmp_path / "fox", ground_truth=GroundTruthConfig()))
    assert [f.name for f in frames] == [fox.names[i] for i in test_idx[:5]]
    small = fox.with_max_size(240)
    for f, i in zip(frames, test_idx):
        cam = small.camera(i)
        assert f.frame.camera == cam and cam.is_distorted  # k1 k2 p1 p2 survive CameraInfo
        np.testing.assert_allclose(f.gt_map_from_optical, opencv_axes_c2w(fox.c2w_opengl[i]), atol=1e-9)
        assert f.frame.image_rgb.shape == (cam.height, cam.width, 3)
