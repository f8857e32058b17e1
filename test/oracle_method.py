"""Test double for the node tests: a relocalizer that knows the answer.

Registered through ``NEURAL_RELOC_METHODS=oracle_method`` (the plugin route of
test/test_method_plugin.py), so the node process loads it from a map built with
``build-map --method oracle`` and runs its real code path around it, in milliseconds
and exactly, with no torch map.

A frame is recognized by its grey level: the test publishes uniformly grey images, and
``round(mean)`` of the RGB image the node hands over is the frame's id (a uniform grey
survives every image encoding: bayer, yuv422, 16-bit...). ``$NEURAL_RELOC_ORACLE_DIR/
poses.json`` maps ids to ``map_from_optical`` 4x4 poses (read at every call, so a test
can add frames as it goes); an id not in it fails. Every call is appended to
``calls.jsonl`` there (id, camera, prior, image shape) for the test to inspect.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neural_reloc.config_fields import setting
from neural_reloc.geometry.se3 import invert_pose
from neural_reloc.map_bundle import ReferenceViews
from neural_reloc.map_loading import map_method_config
from neural_reloc.methods.base import LocalizationResult, PosePrior, Relocalizer
from neural_reloc.methods.registry import BuiltMap, MethodSpec, register

ENV_DIR = "NEURAL_RELOC_ORACLE_DIR"


@dataclass
class OracleLocalization:
    delay_s: float = setting(0.0, "Seconds every call takes.", range=(0.0, 60.0))
    retrieval_delay_s: float = setting(0.0, "Extra seconds a call without a prior (retrieval) takes.",
                                       range=(0.0, 60.0))
    position_std_m: float = setting(0.01, "Position standard deviation reported with a fix.", range=(0.0, 10.0))
    no_covariance: bool = setting(False, "Report no covariance (unknown).")


@dataclass
class OracleConfig:
    localization: OracleLocalization = field(default_factory=OracleLocalization)


def build(data, cfg, device, work_dir, progress=None, log=print):
    refs = ReferenceViews(list(data.names), [data.camera(i).to_dict() for i in range(len(data))], data.c2w_opengl)
    return BuiltMap(modules={"oracle": {"oracle.unused": torch.zeros(1)}}, scene={"mode": "none"}, references=refs)


class OracleRelocalizer(Relocalizer):
    method = "oracle"

    def __init__(self, bundle, cfg):
        self.cfg = cfg
        self.dir = Path(os.environ[ENV_DIR])

    @property
    def reference_poses_w2c_opencv(self):
        return np.eye(4)[None]

    def localize(self, image_rgb, camera, prior):
        lc = self.cfg.localization
        frame_id = int(round(float(np.asarray(image_rgb, dtype=np.float64).mean())))
        time.sleep(lc.delay_s + (lc.retrieval_delay_s if prior is None else 0.0))
        poses = json.loads((self.dir / "poses.json").read_text()) if (self.dir / "poses.json").exists() else {}
        call = {
            "id": frame_id, "t": time.time(), "shape": list(np.shape(image_rgb)), "camera": camera.to_dict(),
            "prior": None if prior is None else invert_pose(prior.w2c_opencv).tolist(),
            "prior_source": None if prior is None else prior.source,
        }
        with open(self.dir / "calls.jsonl", "a") as f:
            f.write(json.dumps(call) + "\n")
        res = LocalizationResult(success=False, method=self.method, prior=prior, latency_ms={"oracle": 0.1})
        if str(frame_id) not in poses:
            res.reason = f"oracle: unknown frame {frame_id}"
            return res
        res.success, res.w2c_opencv = True, invert_pose(np.asarray(poses[str(frame_id)], dtype=np.float64))
        if prior is None:  # as a method with retrieval reports the view it started from
            res.prior = PosePrior(res.w2c_opencv, source="retrieval")
        res.covariance = None if lc.no_covariance else np.diag([lc.position_std_m**2] * 3 + [1e-4] * 3)
        res.num_matches, res.num_inliers, res.iterations = 100, 90, 1
        return res


def make_relocalizer(bundle, device, overrides=None, method="oracle"):
    return OracleRelocalizer(bundle, map_method_config(bundle.manifest, overrides, method=method))


register(MethodSpec(
    name="oracle", description="test: a relocalizer that knows the answer",
    config_factory=OracleConfig, build=build, relocalizer_factory=make_relocalizer,
    localization_config=OracleLocalization,
))
