"""Scoring a live run: the node's recorded outputs, evaluated like ``eval-bag``, and
compared frame by frame with the offline run on the same bag.

The live run (:mod:`neural_reloc.ros.bag_replay`) records the node's
``RelocalizationStatus`` messages into a bag. Here each status becomes a frame record
(:func:`neural_reloc.eval.metrics.frame_record` conventions) against the ground truth
of the *input* bag at the status stamp (= the image stamp). A status's ``success`` is
the node's: the result was *accepted* (passed the tracking thresholds), and only then
does it carry a pose; its record therefore has ``success == accepted``. The offline
records are compared on ``accepted``.

ROS-free: reads bags with rosbags; the status type comes from msg/ through
:func:`neural_reloc.bags.messages.typestore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..bags import messages as m
from ..bags.errors import BagError
from ..bags.reader import BagFrames, BagReader
from ..geometry.frames import opencv_w2c_from_map_from_optical
from ..geometry.se3 import pose_error, pose_from_xyz_quat_xyzw
from ..methods.base import LocalizationResult
from .metrics import frame_record

DEFAULT_STATUS_TOPIC = "/relocalization_node/status"


@dataclass
class AgreementConfig:
    #: estimates agree when their camera centres are this close (metres) ...
    max_translation_diff_m: float = 1e-3
    #: ... and their orientations this close (degrees)
    max_rotation_diff_deg: float = 0.05
    #: inlier and match counts may differ by this many (0: identical)
    max_inlier_diff: int = 0


def read_statuses(recorded_bag: str | Path, status_topic: str = DEFAULT_STATUS_TOPIC) -> dict[int, list]:
    """Status messages of a recorded bag by header stamp (ns), in recording order."""
    out: dict[int, list] = {}
    with BagReader(recorded_bag) as reader:
        reader.require_topic(status_topic, (m.RELOCALIZATION_STATUS,), "relocalization status")
        for msg in reader.messages([status_topic]):
            st = m.deserialize(msg.raw, msg.msgtype)
            out.setdefault(m.stamp_to_ns(st.header.stamp), []).append(st)
    return out


def status_record(
    name: str, stamp_ns: int, status, gt_map_from_optical, base_from_optical=None, base_frame: str = "base_link"
) -> dict:
    """A frame record from a RelocalizationStatus (see the module docstring).

    The status pose is of ``status.child_frame_id`` in the map: the camera optical frame,
    or ``base_frame`` (the node's ``pose_of: base``), which ``base_from_optical`` turns
    into the camera pose.
    """
    w2c = None
    if status.success:
        p, q = status.pose.pose.position, status.pose.pose.orientation
        map_from_child = pose_from_xyz_quat_xyzw([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])
        map_from_optical = map_from_child
        if status.child_frame_id == base_frame:
            if base_from_optical is None:
                raise BagError(
                    f"the node reported {base_frame} poses but there is no camera extrinsic to turn them into camera poses"
                )
            map_from_optical = map_from_child @ base_from_optical
        w2c = opencv_w2c_from_map_from_optical(map_from_optical)
    result = LocalizationResult(
        success=bool(status.success),
        method=status.method,
        prior=None,
        w2c_opencv=w2c,
        num_matches=int(status.num_matches),
        num_inliers=int(status.num_inliers),
        iterations=int(status.iterations),
        latency_ms={str(k): float(v) for k, v in zip(status.stage_names, status.stage_latency_ms)},
        reason=status.reason,
    )
    gt_w2c = None if gt_map_from_optical is None else opencv_w2c_from_map_from_optical(gt_map_from_optical)
    rec = frame_record(name, result, gt_w2c, stamp_ns=stamp_ns, accepted=bool(status.success))
    rec["prior_source"] = status.prior_source or None
    rec["method"] = status.method
    return rec


def live_records(
    recorded_bag, input_frames: BagFrames, status_topic: str = DEFAULT_STATUS_TOPIC, max_frames: int = 0
) -> tuple[list[dict], list[str]]:
    """One record per image of the input bag (the first ``max_frames``; 0: all), from
    the status with its stamp; images without a status get a failed record ("no status
    from the node"). Returns the records and warnings (several statuses for one image,
    statuses of no image)."""
    statuses = read_statuses(recorded_bag, status_topic)
    base_frame = input_frames.config.frames.base
    records, warnings, seen = [], [], set()
    for bf in input_frames:
        if max_frames and bf.index >= max_frames:
            break
        seen.add(bf.stamp_ns)
        got = statuses.get(bf.stamp_ns, [])
        gt_w2c = None if bf.gt_map_from_optical is None else opencv_w2c_from_map_from_optical(bf.gt_map_from_optical)
        if len(got) > 1:
            warnings.append(f"{len(got)} statuses for the image at {bf.stamp_ns / 1e9:.3f} s: the last one is used")
        if got:
            rec = status_record(bf.name, bf.stamp_ns, got[-1], bf.gt_map_from_optical, bf.frame.base_from_optical, base_frame)
        else:
            result = LocalizationResult(False, "", None, reason="no status from the node")
            rec = frame_record(bf.name, result, gt_w2c, stamp_ns=bf.stamp_ns, accepted=False)
        rec["index"] = bf.index
        records.append(rec)
    stray = sorted(set(statuses) - seen)
    if stray:
        warnings.append(f"{len(stray)} statuses match no image stamp (e.g. {stray[0] / 1e9:.3f} s)")
    return records, warnings


def _pose_of(rec: dict):
    if rec.get("est_xyz") is None or rec.get("est_quat_xyzw") is None:
        return None
    return pose_from_xyz_quat_xyzw(rec["est_xyz"], rec["est_quat_xyzw"])


def compare_runs(offline: list[dict], live: list[dict], config: AgreementConfig | None = None) -> dict:
    """Frame-by-frame agreement of two runs on the same bag (records matched by stamp).

    Per frame: the same acceptance, the same prior source, inlier and match counts
    within ``max_inlier_diff``, and (accepted frames) estimates within the pose
    tolerances.
    """
    cfg = config or AgreementConfig()
    live_by_stamp = {r["stamp_ns"]: r for r in live}
    frames, mismatches = [], []
    max_dt = max_dr = 0.0
    for off in offline:
        lv = live_by_stamp.get(off["stamp_ns"])
        row = {"name": off["name"], "stamp_ns": off["stamp_ns"]}
        problems = []
        if lv is None:
            problems.append("no live record")
        else:
            off_acc = bool(off.get("accepted", off["success"]))
            if off_acc != bool(lv["success"]):
                problems.append(f"accepted offline={off_acc} live={bool(lv['success'])}")
            if off.get("prior_source") != lv.get("prior_source"):
                problems.append(f"prior offline={off.get('prior_source')} live={lv.get('prior_source')}")
            for key in ("num_inliers", "num_matches"):
                if abs(int(off.get(key, 0)) - int(lv.get(key, 0))) > cfg.max_inlier_diff:
                    problems.append(f"{key.removeprefix('num_')} offline={off.get(key)} live={lv.get(key)}")
            a, b = _pose_of(off), _pose_of(lv)
            if off_acc and a is not None and b is not None:
                dt, dr = pose_error(a, b)
                row["translation_diff_m"], row["rotation_diff_deg"] = dt, dr
                max_dt, max_dr = max(max_dt, dt), max(max_dr, dr)
                if dt > cfg.max_translation_diff_m or dr > cfg.max_rotation_diff_deg:
                    problems.append(f"poses differ by {dt:.2e} m, {dr:.2e} deg")
        row["agree"] = not problems
        row["problems"] = problems
        frames.append(row)
        if problems:
            mismatches.append(row)
    extra = sorted(set(live_by_stamp) - {r["stamp_ns"] for r in offline})
    return {
        "agree": not mismatches and not extra,
        "frames_compared": len(offline),
        "mismatches": len(mismatches),
        "live_frames_without_offline": len(extra),
        "max_translation_diff_m": max_dt,
        "max_rotation_diff_deg": max_dr,
        "tolerances": {
            "translation_m": cfg.max_translation_diff_m,
            "rotation_deg": cfg.max_rotation_diff_deg,
            "inliers": cfg.max_inlier_diff,
        },
        "frames": frames,
    }

