"""Evaluation: metrics on hand-made numbers, ground truth by timestamp, the bag
evaluator with a stand-in relocalizer, the HTML report, and (with the crossfire_map
fixture of conftest.py) the real relocalizer on a bag of the room's query walks.

The stand-in (:class:`GroundTruthPlusNoise`) is a test double of the Relocalizer
interface: it recognizes each image of the dataset by its bytes and returns the true
pose moved by exactly ``t_noise_m`` and rotated by exactly ``r_noise_deg``, and fails
on every ``fail_every``-th image, so every number of the evaluation is known.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil

import numpy as np
import pytest

from neural_reloc.bags import (
    BagFromDatasetConfig,
    BagTruncatedError,
    GroundTruthConfig,
    read_frames,
    write_bag_from_dataset,
)
from neural_reloc.data import load_dataset
from neural_reloc.data.procedural import (
    ProceduralSceneConfig,
    generate_procedural_scene,
)
from neural_reloc.eval.eval_bag import EvalBagConfig, evaluate_bag
from neural_reloc.eval.metrics import (
    DEFAULT_RECALL_THRESHOLDS,
    frame_record,
    summarize,
    threshold_label,
)
from neural_reloc.eval.report import FIGURES, write_report
from neural_reloc.geometry.se3 import (
    interpolate_pose,
    invert_pose,
    make_pose,
    perturb_pose,
    quat_xyzw_from_rotation,
    rotation_from_quat_xyzw,
    rotation_from_rotvec,
)
from neural_reloc.geometry.trajectory import PoseTrack
from neural_reloc.methods.base import LocalizationResult, PosePrior, Relocalizer
from neural_reloc.tracking import TrackingConfig

SCENE = ProceduralSceneConfig(width=96, height=72, num_frames=16)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class GroundTruthPlusNoise(Relocalizer):
    method = "gt-plus-noise"

    def __init__(self, data, t_noise_m=0.03, r_noise_deg=1.0, fail_every=5):
        self.truth = {hashlib.sha1(data.image(i).tobytes()).hexdigest(): (i, data.w2c_opencv(i)) for i in range(len(data))}
        self.t, self.r, self.fail_every = t_noise_m, r_noise_deg, fail_every
        self.rng = np.random.default_rng(0)
        self.priors: list[PosePrior | None] = []

    def localize(self, image_rgb, camera, prior):
        self.priors.append(prior)
        i, w2c = self.truth[hashlib.sha1(image_rgb.tobytes()).hexdigest()]
        if self.fail_every and i % self.fail_every == 0:
            return LocalizationResult(False, self.method, prior, num_matches=12, num_inliers=4, reason="too few inliers", latency_ms={"match": 4.0})
        c2w = perturb_pose(invert_pose(w2c), self.t, self.r, self.rng)
        return LocalizationResult(
            True,
            self.method,
            prior,
            w2c_opencv=invert_pose(c2w),
            covariance=np.eye(6) * 1e-4,
            num_matches=300,
            num_inliers=200 + i,
            iterations=2,
            latency_ms={"render": 20.0 + i, "match": 4.0, "pnp": 1.0},
        )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_dataset(generate_procedural_scene(tmp_path_factory.mktemp("scene"), SCENE))


@pytest.fixture(scope="module")
def bag(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("bag") / "scene"
    write_bag_from_dataset(dataset, path, BagFromDatasetConfig())
    return path


# ================================================================== metrics
def rec(t, r, success=True, has_gt=True, lat=None, reason=""):
    return {
        "name": "x",
        "success": success,
        "has_gt": has_gt,
        "t_err_m": t,
        "r_err_deg": r,
        "latency_ms": lat or {},
        "num_inliers": 0,
        "prior_source": None,
        "reason": reason,
    }


def test_summary_of_hand_made_records():
    records = [
        rec(0.01, 0.5, lat={"render": 1.0, "pnp": 10.0}),
        rec(0.04, 4.0, lat={"render": 2.0, "pnp": 10.0}),
        rec(0.20, 1.5, lat={"render": 3.0, "pnp": 10.0}),
        rec(0.60, 20.0, lat={"render": 4.0, "pnp": 10.0}),
        rec(None, None, success=False, lat={"render": 100.0}, reason="too few inliers"),
        rec(None, None, success=True, has_gt=False, lat={"render": 5.0}),  # not scored
    ]
    s = summarize(records)
    assert s["frames"] == 6 and s["frames_with_gt"] == 5 and s["successes"] == 5
    assert s["success_rate"] == pytest.approx(5 / 6)
    assert s["median_t_err_m"] == pytest.approx(0.12)  # median of 0.01 0.04 0.20 0.60
    assert s["median_r_err_deg"] == pytest.approx(2.75)  # of 0.5 1.5 4 20
    # recall over the 5 frames with ground truth; the failure is a miss
    assert s["recall"]["2cm/2deg"] == pytest.approx(1 / 5)
    assert s["recall"]["5cm/5deg"] == pytest.approx(2 / 5)
    assert s["recall"]["25cm/2deg"] == pytest.approx(2 / 5)  # 0.20 m with 1.5 deg, 0.01 with 0.5
    assert s["recall"]["1m/10deg"] == pytest.approx(3 / 5)  # 20 deg is out
    # latency: numpy's linear percentiles, per stage and of the per-frame sum
    render = [1.0, 2.0, 3.0, 4.0, 100.0, 5.0]
    assert s["latency_ms"]["render"]["p50"] == pytest.approx(3.5)
    assert s["latency_ms"]["render"]["p95"] == pytest.approx(np.percentile(render, 95))
    assert s["latency_ms"]["render"]["max"] == 100.0
    assert s["latency_ms"]["pnp"]["count"] == 4
    assert s["latency_ms"]["total"]["max"] == 100.0 and s["latency_ms"]["total"]["p50"] == pytest.approx(12.5)
    assert s["failure_reasons"] == {"too few inliers": 1}
    assert s["prior_sources"] == {"none": 6}
    json.dumps(s, allow_nan=False)


def test_summary_of_nothing_and_of_failures_only():
    s = summarize([])
    assert s["frames"] == 0 and s["success_rate"] is None and s["median_t_err_m"] is None
    assert all(v is None for v in s["recall"].values())
    s = summarize([rec(None, None, success=False)] * 3)
    assert s["success_rate"] == 0.0 and s["median_t_err_m"] is None
    assert all(v == 0.0 for v in s["recall"].values())


def test_threshold_labels_and_defaults():
    assert threshold_label(0.05, 5) == "5cm/5deg" and threshold_label(1.0, 10) == "1m/10deg"
    assert threshold_label(0.25, 2) == "25cm/2deg"
    assert len({threshold_label(*t) for t in DEFAULT_RECALL_THRESHOLDS}) == len(DEFAULT_RECALL_THRESHOLDS)


def test_frame_record_errors_are_camera_centre_distance_and_rotation_angle():
    gt_c2w = make_pose(rotation_from_rotvec([0.3, -0.2, 1.0]), [1.0, 2.0, 0.5])
    # rotate the camera by 10 deg about its own centre: no translation error, although
    # the world-to-camera translation changes
    rotated = gt_c2w.copy()
    rotated[:3, :3] = rotated[:3, :3] @ rotation_from_rotvec([0, np.radians(10.0), 0])
    est_w2c, gt_w2c = invert_pose(rotated), invert_pose(gt_c2w)
    assert np.linalg.norm(est_w2c[:3, 3] - gt_w2c[:3, 3]) > 0.1
    r = frame_record("f", LocalizationResult(True, "m", None, w2c_opencv=est_w2c), gt_w2c, stamp_ns=5)
    assert r["t_err_m"] == pytest.approx(0.0, abs=1e-12) and r["r_err_deg"] == pytest.approx(10.0)
    assert r["est_xyz"] == pytest.approx([1.0, 2.0, 0.5]) and r["stamp_ns"] == 5
    # move the centre 0.25 m along world x
    moved = gt_c2w.copy()
    moved[0, 3] += 0.25
    prior = PosePrior(invert_pose(moved), source="odometry")
    r = frame_record("f", LocalizationResult(True, "m", prior, w2c_opencv=invert_pose(moved)), gt_w2c, accepted=True)
    assert r["t_err_m"] == pytest.approx(0.25) and r["r_err_deg"] == pytest.approx(0.0, abs=1e-6)
    assert r["prior_t_err_m"] == pytest.approx(0.25) and r["prior_source"] == "odometry" and r["accepted"] is True
    # a failure or no ground truth: no errors
    r = frame_record("f", LocalizationResult(False, "m", None, w2c_opencv=est_w2c, reason="r"), gt_w2c)
    assert r["t_err_m"] is None and r["success"] is False and r["has_gt"] is True
    r = frame_record("f", LocalizationResult(True, "m", None, w2c_opencv=est_w2c), None)
    assert r["t_err_m"] is None and r["has_gt"] is False and r["gt_xyz"] is None


def test_frame_record_nees_is_the_squared_mahalanobis_distance_under_the_covariance():
    gt_c2w = make_pose(rotation_from_rotvec([0.3, -0.2, 1.0]), [1.0, 2.0, 0.5])
    moved = gt_c2w.copy()
    moved[0, 3] += 0.03  # 3 cm along world x
    moved[:3, :3] = rotation_from_rotvec([0.0, 0.0, np.radians(0.2)]) @ moved[:3, :3]  # 0.2 deg about world z
    # per-axis sigmas: x 1 cm (others 5 cm), rot_z 0.1 deg (others 1 deg): a camera-axis
    # rotation error or a swapped axis would give another NEES
    cov = np.diag([0.01**2, 0.05**2, 0.05**2, np.radians(1.0) ** 2, np.radians(1.0) ** 2, np.radians(0.1) ** 2])
    res = LocalizationResult(True, "m", None, w2c_opencv=invert_pose(moved), covariance=cov)
    r = frame_record("f", res, invert_pose(gt_c2w))
    assert r["nees"] == pytest.approx(3.0**2 + 2.0**2, rel=1e-6)
    # a singular covariance, no pose, no ground truth: no NEES
    res.covariance = np.zeros((6, 6))
    assert frame_record("f", res, invert_pose(gt_c2w))["nees"] is None
    res.covariance = cov
    assert frame_record("f", LocalizationResult(False, "m", None, reason="r"), invert_pose(gt_c2w))["nees"] is None
    assert frame_record("f", res, None)["nees"] is None
    records = [dict(rec(0.01, 0.1), nees=v) for v in (1.0, 4.0, 30.0)] + [rec(None, None, success=False)]
    s = summarize(records)
    assert s["covariance"] == {"frames": 3, "nees_median": 4.0, "beyond_chi2_99": pytest.approx(1 / 3)}


# ================================================================== time matching
def test_pose_track_interpolates_slerp_and_respects_gaps():
    a = make_pose(np.eye(3), [0.0, 0.0, 0.0])
    b = make_pose(rotation_from_rotvec([0, 0, np.pi / 2]), [1.0, 0.0, 2.0])
    track = PoseTrack([1_000_000_000, 2_000_000_000], [a, b])
    mid = track.at(1_250_000_000)
    np.testing.assert_allclose(mid[:3, 3], [0.25, 0.0, 0.5])
    np.testing.assert_allclose(mid[:3, :3], rotation_from_rotvec([0, 0, np.pi / 8]), atol=1e-12)
    np.testing.assert_allclose(track.at(2_000_000_000), b)
    assert track.at(2_000_000_001) is None and track.at(999_999_999) is None
    np.testing.assert_allclose(track.at(2_005_000_000, tolerance_ns=10_000_000), b)
    # a gap longer than max_gap_ns: only stamps near a sample get one
    assert track.at(1_500_000_000, max_gap_ns=500_000_000) is None
    np.testing.assert_allclose(track.at(1_001_000_000, max_gap_ns=500_000_000, tolerance_ns=2_000_000), a)
    # unsorted input, duplicate stamps: sorted, the later sample wins
    t2 = PoseTrack([3, 1, 3], [a, a, b])
    assert t2.stamps_ns == [1, 3]
    np.testing.assert_allclose(t2.at(3), b)


def test_ground_truth_is_interpolated_at_image_stamps(dataset, bag, tmp_path):
    """Ground truth at 5 Hz, images at 10 Hz: the frames between samples get the slerp
    of their neighbours' poses (camera-to-world, so the centre moves on a line)."""
    from rosbags.rosbag2 import Reader, Writer

    from neural_reloc.bags import messages as msgs

    thin = tmp_path / "thin"
    with Reader(bag) as r, Writer(thin, version=9) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=msgs.typestore()) for c in r.connections}
        k = 0
        for c, t, raw in r.messages():
            if c.topic == "/ground_truth/camera_pose":
                k += 1
                if (k - 1) % 2:
                    continue
            w.write(conns[c.id], t, raw)
    frames = list(read_frames(thin, ground_truth=GroundTruthConfig(max_gap_s=0.25)))
    full = list(read_frames(bag, ground_truth=GroundTruthConfig()))
    for i in range(1, len(frames) - 1, 2):
        expect = interpolate_pose(full[i - 1].gt_map_from_optical, full[i + 1].gt_map_from_optical, 0.5)
        np.testing.assert_allclose(frames[i].gt_map_from_optical, expect, atol=1e-12)
        assert not np.allclose(frames[i].gt_map_from_optical, full[i].gt_map_from_optical, atol=1e-4)
    for i in range(0, len(frames) - 1, 2):
        np.testing.assert_allclose(frames[i].gt_map_from_optical, full[i].gt_map_from_optical, atol=1e-12)
    # with an even number of frames the last one is after the last kept sample
    assert len(frames) % 2 == 0 and frames[-1].gt_map_from_optical is None
    # samples 0.2 s apart are not bridged when max_gap_s is shorter
    assert all(f.gt_map_from_optical is None for f in list(read_frames(thin, ground_truth=GroundTruthConfig(max_gap_s=0.15)))[1:-1:2])


# ================================================================== the evaluator
def png_figures(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def test_evaluate_bag_with_known_errors_writes_results_and_report(dataset, bag, tmp_path):
    reloc = GroundTruthPlusNoise(dataset, t_noise_m=0.03, r_noise_deg=1.0, fail_every=5)
    results = evaluate_bag(bag, tmp_path / "ev", relocalizer=reloc)
    on_disk = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["error"] is None and on_disk["method"] == "gt-plus-noise"
    assert on_disk["summary"] == json.loads(json.dumps(results["summary"]))
    frames, s = on_disk["frames"], on_disk["summary"]
    n = SCENE.num_frames
    fails = [i for i in range(n) if i % 5 == 0]
    assert [f["name"] for f in frames] == dataset.names
    assert [f["success"] for f in frames] == [i not in fails for i in range(n)]
    assert s["success_rate"] == pytest.approx((n - len(fails)) / n)
    assert s["median_t_err_m"] == pytest.approx(0.03, abs=1e-9)
    assert s["median_r_err_deg"] == pytest.approx(1.0, abs=1e-6)
    assert s["recall"]["5cm/5deg"] == pytest.approx((n - len(fails)) / n)
    assert s["recall"]["2cm/2deg"] == 0.0
    assert s["latency_ms"]["render"]["max"] == pytest.approx(20.0 + max(i for i in range(n) if i not in fails))
    # the node's prior logic: retrieval (None) until the first fix, then odometry
    assert [f["prior_source"] for f in frames[:3]] == [None, None, "odometry"]
    assert all(f["prior_source"] == "odometry" for f in frames[2:])
    assert all(f["accepted"] == f["success"] for f in frames)
    assert on_disk["input"]["odometry"] == "odom -> base_link"
    html = (tmp_path / "ev" / "report.html").read_text()
    figs = png_figures(html)
    assert len(figs) == len(FIGURES) == 4 and all(f.startswith(PNG_MAGIC) and len(f) > 5000 for f in figs)
    assert "0.0300" in html  # the median translation error in the summary table


def test_odometry_prior_follows_the_bag_odometry(dataset, bag, tmp_path):
    """After the first fix the prior is map_from_odom @ odom_from_base @ base_from_optical:
    its error is the odometry drift since the fix plus the fix's own error."""
    reloc = GroundTruthPlusNoise(dataset, t_noise_m=0.0, r_noise_deg=0.0, fail_every=0)
    results = evaluate_bag(bag, tmp_path / "ev", EvalBagConfig(report=False), relocalizer=reloc)
    frames = results["frames"]
    assert frames[0]["prior_source"] is None and all(f["prior_source"] == "odometry" for f in frames[1:])
    # exact fixes every frame: the prior error is one step of simulated odometry error
    errs = [f["prior_t_err_m"] for f in frames[1:]]
    assert 0 < max(errs) < 0.1
    assert not (tmp_path / "ev" / "report.html").exists()
    # without odometry the session starts from the last fix ("given")
    cfg = EvalBagConfig(report=False)
    cfg.bag.use_odometry = False
    results = evaluate_bag(bag, tmp_path / "ev2", cfg, relocalizer=GroundTruthPlusNoise(dataset, 0.0, 0.0, 0))
    assert [f["prior_source"] for f in results["frames"][:3]] == [None, "given", "given"]
    assert results["input"]["odometry"] is None
    # lost after failures: retrieval again
    cfg = EvalBagConfig(report=False, tracking=TrackingConfig(lost_after_failures=1))
    results = evaluate_bag(bag, tmp_path / "ev3", cfg, relocalizer=GroundTruthPlusNoise(dataset, 0.0, 0.0, fail_every=5))
    src = [f["prior_source"] for f in results["frames"]]
    assert src[6] is None and src[7] == "odometry"  # frame 5 failed -> frame 6 uses retrieval


def test_truncated_bag_keeps_partial_results(dataset, bag, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(bag, cut)
    (db,) = cut.glob("*.mcap")
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(int(size * 0.7))  # a single-chunk MCAP: every message is lost
    with pytest.raises(BagTruncatedError):
        evaluate_bag(cut, tmp_path / "ev0", relocalizer=GroundTruthPlusNoise(dataset))
    out = json.loads((tmp_path / "ev0" / "results.json").read_text())
    assert out["status"] == "error" and "ends early" in out["error"] and out["frames"] == []
    assert len(png_figures((tmp_path / "ev0" / "report.html").read_text())) == 4
    # a sqlite3 bag cut in the middle: the frames before the cut are scored and kept
    sq = tmp_path / "sq"
    write_bag_from_dataset(dataset, sq, BagFromDatasetConfig(storage="sqlite3"))
    (db,) = sq.glob("*.db3")
    with open(db, "r+b") as f:
        f.truncate(int(db.stat().st_size * 0.6))
    with pytest.raises(BagTruncatedError, match="ends early"):
        evaluate_bag(sq, tmp_path / "ev", relocalizer=GroundTruthPlusNoise(dataset))
    out = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert out["status"] == "error" and "ends early" in out["error"]
    assert 0 < len(out["frames"]) < SCENE.num_frames
    assert out["summary"]["frames"] == len(out["frames"])
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "Run status: error" in html and len(png_figures(html)) == 4


def test_bad_bag_error_is_written_before_anything_runs(bag, tmp_path):
    class NeverCalled(Relocalizer):
        method = "never"

        def localize(self, image_rgb, camera, prior):  # pragma: no cover - must not run
            raise AssertionError("localize must not be called")

    cfg = EvalBagConfig(ground_truth=GroundTruthConfig(topic="/mocap/pose"))
    with pytest.raises(ValueError, match="no ground truth: topic '/mocap/pose'"):
        evaluate_bag(bag, tmp_path / "ev", cfg, relocalizer=NeverCalled())
    out = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert out["status"] == "error" and "/mocap/pose" in out["error"] and out["summary"]["frames"] == 0


def test_report_from_results_with_missing_stamps(tmp_path):
    results = {"status": "ok", "frames": [rec(0.1 * i, 1.0 * i) | {"stamp_ns": None} for i in range(1, 6)]}
    results["summary"] = summarize(results["frames"])
    path = write_report(results, tmp_path / "r" / "report.html")
    assert len(png_figures(path.read_text())) == 4


# ================================================================== real relocalizer
def test_eval_bag_with_the_crossfire_map(crossfire_map, tmp_path):
    """The real relocalizer through the CLI on the held-out frames of the map's scene."""
    from neural_reloc.cli import main

    map_path, data_dir = crossfire_map
    data = load_dataset(data_dir)
    write_bag_from_dataset(data, tmp_path / "bag", BagFromDatasetConfig(split="test"))
    rc = main(["eval-bag", "--bag", str(tmp_path / "bag"), "--map", str(map_path), "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert rc == 0
    out = json.loads((tmp_path / "ev" / "results.json").read_text())
    s = out["summary"]
    assert out["status"] == "ok" and s["frames"] == len(data.indices("test"))
    assert s["success_rate"] >= 0.7, s
    assert s["median_t_err_m"] < 0.1 and s["median_r_err_deg"] < 3.0, s
    assert {"odometry"} <= set(s["prior_sources"]), s
    assert all(v["p50"] is not None for v in s["latency_ms"].values())
    assert len(png_figures((tmp_path / "ev" / "report.html").read_text())) == 4


# ================================================================== live scoring (ROS-free)
def make_status(stamp_ns, success, xyz=(0.0, 0.0, 0.0), quat=(0.0, 0.0, 0.0, 1.0), child="camera_optical_frame", **kw):
    from neural_reloc.bags import messages as msgs

    st = msgs.msg_class(msgs.RELOCALIZATION_STATUS)(
        header=msgs.header(stamp_ns, "map"),
        success=success,
        method="crossfire",
        child_frame_id=child,
        pose=msgs.msg_class("geometry_msgs/msg/PoseWithCovariance")(
            pose=msgs.pose_msg(make_pose(rotation_from_quat_xyzw(quat), xyz)), covariance=np.zeros(36)
        ),
        num_matches=kw.get("num_matches", 300),
        num_inliers=kw.get("num_inliers", 200),
        inlier_ratio=0.5,
        iterations=2,
        stage_names=["render", "pnp"],
        stage_latency_ms=np.array([10.0, 2.0], dtype=np.float32),
        total_latency_ms=12.0,
        prior_source=kw.get("prior_source", "odometry"),
        prior_translation_delta_m=0.0,
        prior_rotation_delta_deg=0.0,
        reason="" if success else "too few inliers",
    )
    # what the status topic carries: a CDR round trip
    return msgs.deserialize(msgs.serialize(st, msgs.RELOCALIZATION_STATUS), msgs.RELOCALIZATION_STATUS)


def test_status_records_and_frame_by_frame_agreement():
    from neural_reloc.eval.live import AgreementConfig, compare_runs, status_record

    gt = make_pose(rotation_from_rotvec([0.1, 0.2, 0.3]), [1.0, 2.0, 1.5])
    q = list(quat_xyzw_from_rotation(gt[:3, :3]))
    # the node reports the camera 5 cm off along x
    live_ok = status_record("a", 10, make_status(10, True, xyz=gt[:3, 3] + [0.05, 0, 0], quat=q), gt)
    assert live_ok["success"] and live_ok["accepted"] and live_ok["prior_source"] == "odometry"
    assert live_ok["t_err_m"] == pytest.approx(0.05) and live_ok["r_err_deg"] == pytest.approx(0.0, abs=1e-5)
    assert live_ok["latency_ms"] == {"render": 10.0, "pnp": 2.0}
    # a base_link pose becomes the camera pose through the extrinsic
    base_from_optical = make_pose(rotation_from_rotvec([-np.pi / 2, 0, -np.pi / 2]), [0.1, 0.0, 0.2])
    map_from_base = gt @ invert_pose(base_from_optical)
    qb = list(quat_xyzw_from_rotation(map_from_base[:3, :3]))
    rb = status_record("a", 10, make_status(10, True, xyz=map_from_base[:3, 3], quat=qb, child="base_link"), gt, base_from_optical)
    assert rb["t_err_m"] == pytest.approx(0.0, abs=1e-9) and rb["r_err_deg"] == pytest.approx(0.0, abs=1e-5)
    live_fail = status_record("b", 20, make_status(20, False, prior_source="retrieval"), gt)
    assert not live_fail["success"] and live_fail["est_xyz"] is None and live_fail["reason"] == "too few inliers"

    offline = [dict(live_ok), dict(live_fail)]
    live = [dict(live_ok), dict(live_fail)]
    assert compare_runs(offline, live)["agree"]
    # a pose 2 mm away, another prior, another acceptance: each is a named mismatch
    moved = dict(live_ok, est_xyz=[v + (0.002 if i == 0 else 0) for i, v in enumerate(live_ok["est_xyz"])])
    out = compare_runs(offline, [moved, dict(live_fail, prior_source="odometry")])
    assert not out["agree"] and out["mismatches"] == 2
    assert "poses differ" in out["frames"][0]["problems"][0] and out["max_translation_diff_m"] == pytest.approx(0.002)
    assert "prior offline=retrieval live=odometry" in out["frames"][1]["problems"]
    assert compare_runs(offline, [moved, live_fail], AgreementConfig(max_translation_diff_m=0.01))["agree"]
    out = compare_runs(offline, [dict(live_ok, success=False, accepted=False), live_fail])
    assert out["frames"][0]["problems"] == ["accepted offline=True live=False"]
    out = compare_runs(offline, [live_ok])
    assert out["frames"][1]["problems"] == ["no live record"]


def test_node_parameter_file_gives_the_evaluation_the_nodes_settings(tmp_path):
    import yaml

    from neural_reloc.cli import _apply_node_params

    params = {
        "relocalization_node": {
            "ros__parameters": {
                "image_topic": "front/image",  # a node's relative name: the bag's /front/image
                "odom_frame": "",
                "tracking": {"lost_after_failures": 7, "accept_min_inliers": 50},
                "method": "crossfire",
                "crossfire": {"max_iterations": 4, "pnp": {"seed": 3}},
                "classical": {"min_inliers": 99},  # another method's settings: not taken
            }
        }
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    cfg = EvalBagConfig()
    overrides = _apply_node_params(cfg, str(tmp_path / "p.yaml"), ["localization.max_iterations=2"], "unused")
    assert cfg.tracking == TrackingConfig(lost_after_failures=7, accept_min_inliers=50)
    assert cfg.bag.topics.image == "/front/image" and cfg.bag.use_odometry is False
    assert overrides == {"localization": {"max_iterations": 2, "pnp": {"seed": 3}}}  # --reloc-set wins
    (tmp_path / "q.yaml").write_text("tracking: {}\n")
    with pytest.raises(ValueError, match="not a ROS parameter file"):
        _apply_node_params(EvalBagConfig(), str(tmp_path / "q.yaml"), None, "unused")


def test_localize_summary_per_iteration_hand_case():
    """Table-2 style per-iteration figures: a frame that stopped early keeps its last
    estimate, a failed iteration is an infinite error (the all-frame median) and is
    left out of the with-estimate median; recall at 5 cm / 5 deg over all frames."""
    from neural_reloc.localization import summarize_records

    def rec(errs):
        return {"success": errs[-1] is not None, "t_err_m": errs[-1], "r_err_deg": None if errs[-1] is None else 1.0,
                "iterations": len(errs), "num_inliers": 10,
                "per_iteration": [{"t_err_m": e, "r_err_deg": None if e is None else 1.0} for e in errs]}

    recs = [rec([0.10, 0.02]), rec([None]), rec([0.50, 0.04, 0.01])]
    per_it = summarize_records(recs)["per_iteration"]
    assert [p["frames_with_estimate"] for p in per_it] == [2, 2, 2]
    assert per_it[0]["median_t_err_m"] == pytest.approx(0.50)  # of 0.10, inf, 0.50
    assert per_it[0]["median_t_err_m_with_estimate"] == pytest.approx(0.30)
    assert per_it[1]["median_t_err_m_with_estimate"] == pytest.approx(0.03)  # 0.02 (kept), 0.04
    assert per_it[2]["median_t_err_m_with_estimate"] == pytest.approx(0.015)  # 0.02, 0.01
    assert [p["recall"] for p in per_it] == pytest.approx([0.0, 2 / 3, 2 / 3])


def test_localize_summary_keeps_rounds_and_refinement_steps_apart():
    """Frames with different numbers of correspondence rounds: entry k is every frame's
    k-th round (or its last), then "refined" is each frame's last estimate of all."""
    from neural_reloc.localization import summarize_records

    def h(e, stage):
        return {"t_err_m": e, "r_err_deg": 1.0, "stage": stage}

    recs = [
        {"success": True, "t_err_m": 0.01, "r_err_deg": 1.0, "iterations": 4, "num_inliers": 10, "verified_by": "refinement",
         "per_iteration": [h(0.3, "match"), h(0.2, "match"), h(0.02, "flow"), h(0.01, "flow")]},
        {"success": True, "t_err_m": 0.03, "r_err_deg": 1.0, "iterations": 4, "num_inliers": 10, "verified_by": "match",
         "per_iteration": [h(0.5, "match"), h(0.1, "match"), h(0.4, "match"), h(0.03, "flow")]},
    ]
    s = summarize_records(recs)
    per_it = s["per_iteration"]
    assert [p["iteration"] for p in per_it] == [1, 2, 3, "refined"]
    assert [p["median_t_err_m"] for p in per_it] == pytest.approx([0.4, 0.15, 0.3, 0.02])
    assert s["verified_by_refinement"] == 1
    # a final round found and not adopted (the frame refused) is no estimate of the frame
    recs[1]["per_iteration"].append(h(0.001, "flow_final_contradicts"))
    assert summarize_records(recs)["per_iteration"][-1]["median_t_err_m"] == pytest.approx(0.02)
