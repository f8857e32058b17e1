"""A new method touches its own folder and one registration line, nothing else.

This test writes a throwaway method (``nearest_view``: the mapping view whose thumbnail
is closest to the query, with a config shaped unlike any built-in method's) into a
temporary module that registers itself, and runs it through ``build-map``,
``localize``, ``eval-bag`` and the relocalization node (``eval-bag --live``) without
editing any file outside ``test/``: the module reaches every process through
``NEURAL_RELOC_METHODS`` (installed packages use the ``neural_reloc.methods`` entry
point). Its localization settings are the node's parameters under its name and the
CLI's ``localization.*`` overrides, like every method's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE = "nearest_view_method"

PLUGIN = textwrap.dedent('''
    """Throwaway method of test_method_plugin.py: the nearest mapping view by thumbnail."""
    from dataclasses import dataclass, field

    import cv2
    import numpy as np
    import torch

    from neural_reloc.config_fields import setting
    from neural_reloc.geometry.frames import opencv_w2c_from_opengl_c2w
    from neural_reloc.map_bundle import ReferenceViews
    from neural_reloc.map_loading import map_method_config
    from neural_reloc.methods.base import LocalizationResult, Relocalizer
    from neural_reloc.methods.registry import BuiltMap, MethodSpec, register


    @dataclass
    class Thumbnails:
        side: int = 12


    @dataclass
    class NearestViewLocalization:  # no PnP, no inliers: shaped unlike the built-in ones
        max_difference: float = setting(0.2, "A query further than this (mean absolute grey level, 0-1) "
                                        "from every thumbnail fails.", range=(0.0, 1.0))
        position_std_m: float = setting(0.05, "Position standard deviation reported with a fix.",
                                        range=(0.0, 10.0))


    @dataclass
    class NearestViewConfig:
        thumbnails: Thumbnails = field(default_factory=Thumbnails)
        localization: NearestViewLocalization = field(default_factory=NearestViewLocalization)


    def thumbnail(image_rgb, side):
        grey = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


    def build(data, cfg, device, work_dir, progress=None, log=print):
        thumbs = np.stack([thumbnail(data.image(i), cfg.thumbnails.side) for i in range(len(data))])
        refs = ReferenceViews(list(data.names), [data.camera(i).to_dict() for i in range(len(data))], data.c2w_opengl)
        return BuiltMap(modules={"nearest_view": {"thumbnails": torch.from_numpy(thumbs)}},
                        scene={"mode": "none"}, references=refs)


    class NearestViewRelocalizer(Relocalizer):
        method = "nearest_view"

        def __init__(self, bundle, cfg):
            self.cfg = cfg
            self.thumbs = bundle.module_state("nearest_view")["thumbnails"].numpy()
            self.w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in bundle.references.c2w_opengl])

        @property
        def reference_poses_w2c_opencv(self):
            return self.w2c

        def localize(self, image_rgb, camera, prior):
            lc = self.cfg.localization
            diff = np.abs(self.thumbs - thumbnail(image_rgb, self.cfg.thumbnails.side)).mean(axis=(1, 2))
            i = int(np.argmin(diff))
            res = LocalizationResult(success=False, method=self.method, prior=prior, latency_ms={"match": 0.1})
            if diff[i] > lc.max_difference:
                res.reason = f"nearest view differs by {diff[i]:.3f} > max_difference={lc.max_difference}"
                return res
            res.success, res.w2c_opencv = True, self.w2c[i]
            res.covariance = np.diag([lc.position_std_m ** 2] * 3 + [1e-4] * 3)
            res.num_matches = res.num_inliers = 100
            return res


    def make_relocalizer(bundle, device, overrides=None, method="nearest_view"):
        return NearestViewRelocalizer(bundle, map_method_config(bundle.manifest, overrides, method=method))


    register(MethodSpec(  # the one registration line
        name="nearest_view", description="test: nearest mapping view by thumbnail",
        config_factory=NearestViewConfig, build=build, relocalizer_factory=make_relocalizer,
        localization_config=NearestViewLocalization,
    ))
''')


@pytest.fixture
def plugin_env(tmp_path, ros_env) -> dict[str, str]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{MODULE}.py").write_text(PLUGIN)
    env = dict(ros_env)
    env["PYTHONPATH"] = f"{plugins}:{env['PYTHONPATH']}"
    env["NEURAL_RELOC_METHODS"] = MODULE
    return env


def _cli(env, *args, timeout=900) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "neural_reloc.cli", *map(str, args)], env=env, capture_output=True,
                         text=True, timeout=timeout, cwd=REPO_ROOT)
    assert run.returncode == 0, f"{args[0]} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def test_registered_method_is_a_node_parameter_section_in_process(tmp_path, monkeypatch):
    """Registered in this process, the method's settings become node parameters (unset,
    described, ranged) and a CLI method choice, with no file of the package edited."""
    from neural_reloc.methods import registry
    from neural_reloc.ros import params

    (tmp_path / f"{MODULE}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module(MODULE)
    try:
        assert "nearest_view" in registry.relocalizing_methods()
        by_name = {s.name: s for s in params.node_parameter_specs()}
        spec = by_name["nearest_view.position_std_m"]
        assert spec.unset and spec.read_only and spec.range == (0.0, 10.0) and "standard deviation" in spec.description
        assert "nearest_view.side" not in by_name and "nearest_view.thumbnails.side" not in by_name  # build settings
    finally:
        registry.unregister("nearest_view")
        sys.modules.pop(MODULE, None)


@pytest.mark.requires_ros
def test_throwaway_method_runs_through_localize_eval_bag_and_the_node(tmp_path, plugin_env):
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    scene = tmp_path / "scene"
    generate_procedural_scene(scene, ProceduralSceneConfig(width=64, height=48, num_frames=12))
    m = tmp_path / "map"
    _cli(plugin_env, "build-map", "--method", "nearest_view", "--data", scene, "--out", m)
    info = json.loads(_cli(plugin_env, "info", "--map", m).stdout)
    assert list(info["components"]) == ["nearest_view"] and info["field"] is None

    # localize: the mapping views themselves come back exactly, with the method's setting
    out = tmp_path / "loc.json"
    _cli(plugin_env, "localize", "--map", m, "--data", scene, "--split", "train", "--out", out,
         "--set", "localization.max_difference=0.05")
    frames = json.loads(out.read_text())["frames"]
    assert frames and all(f["success"] and f["t_err_m"] < 1e-6 for f in frames)
    run = subprocess.run([sys.executable, "-m", "neural_reloc.cli", "localize", "--map", str(m), "--data", str(scene),
                          "--split", "train", "--set", "localization.max_difference=-1"],
                         env=plugin_env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert run.returncode == 2 and "localization.max_difference=-1" in run.stderr, run.stderr[-2000:]  # range checked

    # eval-bag offline and --live (the node, in its own process, loads the same plugin)
    _cli(plugin_env, "bag-from-dataset", "--data", scene, "--out", tmp_path / "bag", "--split", "train")
    ev = tmp_path / "ev"
    _cli(plugin_env, "eval-bag", "--bag", tmp_path / "bag", "--map", m, "--out", ev, "--device", "cpu", "--live",
         "--reloc-set", "localization.position_std_m=0.02", timeout=1200)
    offline = json.loads((ev / "results.json").read_text())
    live = json.loads((ev / "live" / "results.json").read_text())
    assert offline["summary"]["accepted"] == offline["summary"]["frames"] > 0
    assert live["status"] == "ok" and live["summary"]["accepted"] == offline["summary"]["accepted"]
    node_log = (ev / "live" / "node.log").read_text()
    assert "method nearest_view" in node_log and "'position_std_m': 0.02" in node_log, node_log[-2000:]
