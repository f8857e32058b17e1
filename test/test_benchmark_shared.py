"""``neural-reloc benchmark --shared-field``, method variants (NAME=METHOD), ``global:``
priors and ``--map-every``.

Throwaway methods registered in this process keep it fast: ``probe`` and ``anchor``
can be added to a map (a one-number component; ``probe`` refines the prior it is given,
``anchor`` needs none), ``solo`` only builds its own map. The one real training is the
shared field (a ``nerf`` map of a few steps at 48 px); accuracy does not matter here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_reloc.cli import main
from neural_reloc.config_fields import setting
from neural_reloc.config_io import ConfigError
from neural_reloc.data.posed_images import PosedImages
from neural_reloc.eval.benchmark import BenchmarkConfig, validate_config
from neural_reloc.eval.benchmark_maps import mapping_data, shared_plan
from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import opencv_w2c_from_opengl_c2w
from neural_reloc.map_bundle import FIELD_FILE, ReferenceViews, read_manifest
from neural_reloc.methods.base import LocalizationResult, PosePrior, Relocalizer
from neural_reloc.methods.registry import BuiltMap, MethodSpec, register, unregister

#: add_to_map calls per method (a component trained), and own-map builds.
TRAINED: Counter = Counter()


@dataclass
class ThrowawayTrain:
    value: float = setting(1.0, "The component's one number.", range=(0.0, 100.0))


@dataclass
class ThrowawayLocalization:
    position_std_m: float = setting(0.05, "Position standard deviation reported with a fix.", range=(0.0, 10.0))


@dataclass
class ThrowawayConfig:
    train: ThrowawayTrain = field(default_factory=ThrowawayTrain)
    localization: ThrowawayLocalization = field(default_factory=ThrowawayLocalization)


def _references(data) -> ReferenceViews:
    return ReferenceViews(list(data.names), [data.camera(i).to_dict() for i in range(len(data))], data.c2w_opengl)


def _build(name):
    def build(data, cfg, device, work_dir, progress=None, log=print):
        TRAINED[f"build {name}"] += 1
        return BuiltMap(modules={name: {"w": torch.full((1,), cfg.train.value)}}, scene={"mode": "none"},
                        references=_references(data))
    return build


def _add_to_map(name):
    def add_to_map(bundle, data, cfg, device, work_dir, progress=None, log=print):
        TRAINED[name] += 1
        return {name: {"w": torch.full((1,), cfg.train.value)}}, {"value": cfg.train.value}
    return add_to_map


class ThrowawayRelocalizer(Relocalizer):
    """With a prior: returns it (a refining method that converged in place); without:
    the first (``probe``, ``solo``: "retrieval") or last (``anchor``) mapping view."""

    def __init__(self, bundle, method):
        self.method = method
        self.w2c = np.stack([opencv_w2c_from_opengl_c2w(T) for T in bundle.references.c2w_opengl])

    @property
    def reference_poses_w2c_opencv(self):
        return self.w2c

    def localize(self, image_rgb, camera, prior):
        if prior is None:
            prior = PosePrior(self.w2c[-1 if self.method == "anchor" else 0], source="retrieval")
        res = LocalizationResult(success=True, method=self.method, prior=prior, latency_ms={"match": 0.1})
        res.w2c_opencv = prior.w2c_opencv
        return res


def _relocalizer(bundle, device, overrides=None, method=""):
    return ThrowawayRelocalizer(bundle, method)


@pytest.fixture(scope="module", autouse=True)
def throwaway_methods():
    for name, addable in (("probe", True), ("anchor", True), ("solo", False)):
        register(MethodSpec(name=name, description=f"test: throwaway {name}", config_factory=ThrowawayConfig,
                            build=_build(name), relocalizer_factory=_relocalizer,
                            localization_config=ThrowawayLocalization,
                            add_to_map=_add_to_map(name) if addable else None))
    yield
    for name in ("probe", "anchor", "solo"):
        unregister(name)


# ================================================================== configuration
def test_entries_priors_and_field_overrides_are_checked_before_any_work():
    ok = BenchmarkConfig(methods=("kscr", "kscr_real=kscr", "crossfire"), priors=("retrieval", "global:kscr"),
                         shared_field=True, map_overrides={"kscr_real": ["train.use_synthetic=false"],
                                                          "field": ["map.train.steps=600"]})
    validate_config(ok)
    for cfg, problem in (
        (BenchmarkConfig(methods=("kscr", "crossfire"), priors=("global:kscr",)), "'global:kscr' needs --shared-field"),
        (BenchmarkConfig(methods=("crossfire",), priors=("global:kscr",), shared_field=True),
         "method 'kscr' is not benchmarked"),
        (BenchmarkConfig(methods=("classical", "crossfire"), priors=("global:classical",), shared_field=True),
         "'classical' cannot be added to a shared field"),
        (BenchmarkConfig(priors=("global",)), "prior 'global' is not one of retrieval, perturbed, constant or global"),
        (BenchmarkConfig(methods=("crossfire=kscr",)), "'crossfire' is a registered method"),
        (BenchmarkConfig(methods=("field=kscr",)), "none of field, shared, maps"),
        (BenchmarkConfig(methods=("my run=kscr",)), "the name must be a letter"),
        (BenchmarkConfig(methods=("x=nope",)), "method 'nope' is not registered"),
        (BenchmarkConfig(methods=("x=",)), "expected METHOD or NAME=METHOD"),
        (BenchmarkConfig(methods=("kscr", "kscr")), "name 'kscr' is listed twice"),
        (BenchmarkConfig(methods=("kscr", "kscr=kscr")), "name 'kscr' is listed twice"),
        (BenchmarkConfig(methods=("kscr",), map_overrides={"field": ["map.train.steps=3"]}), "it needs --shared-field"),
        (BenchmarkConfig(methods=("kscr",), shared_field=True, map_overrides={"field": ["map.train.stepz=3"]}),
         "map override of the shared field"),
        (BenchmarkConfig(methods=("crossfire",), shared_field=True, map_overrides={"crossfire": ["map.train.steps=3"]}),
         "set it as field:map.train.steps=3"),
        (BenchmarkConfig(methods=("kscr_real=kscr",), map_overrides={"kscr_real": ["train.nope=1"]}),
         "map override of 'kscr_real' (method 'kscr')"),
        (BenchmarkConfig(methods=("kscr_real=kscr",), reloc_overrides={"kscr": ["localization.x=1"]}),
         "names method 'kscr', which is not benchmarked"),
        (BenchmarkConfig(map_every=0), "map_every: must be > 0"),
    ):
        with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            validate_config(cfg)
    # a method's own map keeps its map overrides without a shared field
    validate_config(BenchmarkConfig(methods=("crossfire",), map_overrides={"crossfire": ["map.train.steps=3"]}))


def test_shared_plan_puts_each_method_once_in_the_shared_bundle():
    cfg = BenchmarkConfig(map_overrides={"probe_b": ["train.value=2"], "probe_c": ["localization.position_std_m=1"]})
    entries = {"probe_b": "probe", "probe": "probe", "probe_c": "probe", "anchor_x": "anchor", "solo": "solo"}
    # the plain entry owns "shared" even when listed after a variant; localization
    # settings are not component settings; a variant alone owns it
    assert shared_plan(entries, cfg) == {"probe_b": "probe_b", "probe": "shared", "probe_c": "shared",
                                         "anchor_x": "shared", "solo": ""}


def _posed(tmp_path: Path) -> PosedImages:
    """10 frames: test 0, 2, 4; train 1, 3, 5, 6, 7, 8, 9."""
    return PosedImages(names=[f"f{i}" for i in range(10)], image_paths=[tmp_path / f"f{i}.png" for i in range(10)],
                       cameras=[Camera(8, 6, 5.0, 5.0, 4.0, 3.0)] * 10, c2w_opengl=np.stack([np.eye(4)] * 10),
                       split={"test": [0, 2, 4], "train": [1, 3, 5, 6, 7, 8, 9]}, source=str(tmp_path))


def test_map_every_keeps_every_nth_mapping_frame_and_all_others(tmp_path):
    data = _posed(tmp_path)
    thin = mapping_data(data, BenchmarkConfig(map_every=3))
    assert thin.names == ["f0", "f1", "f2", "f4", "f6", "f9"]
    assert [thin.names[i] for i in thin.split["train"]] == ["f1", "f6", "f9"]
    assert [thin.names[i] for i in thin.split["test"]] == ["f0", "f2", "f4"]
    assert mapping_data(data, BenchmarkConfig()) is data
    no_split = PosedImages(names=data.names, image_paths=data.image_paths, cameras=data.cameras,
                           c2w_opengl=data.c2w_opengl, source=data.source)
    assert mapping_data(no_split, BenchmarkConfig(map_every=4)).names == ["f0", "f4", "f8"]


# ================================================================== end to end
#: The shared field in seconds.
TINY_FIELD = [
    "map.train.steps=10", "map.train.max_image_size=48", "map.train.rays_per_batch=256",
    "map.sampler.grid_resolution=16", "map.sampler.num_coarse=16", "map.sampler.num_fine=8",
    "map.sampler.grid_warmup_steps=4", "map.field.encoding.dense_resolutions=[8,16]",
]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    out = tmp_path_factory.mktemp("bench_shared") / "scene"
    generate_procedural_scene(out, ProceduralSceneConfig(width=64, height=48, num_frames=16))
    return out


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _bench(scene: Path, out: Path, methods: str, priors: str, *extra: str) -> list[str]:
    return ["benchmark", "--data", str(scene), "--methods", methods, "--out", str(out), "--device", "cpu",
            "--priors", priors, "--limit", "2", "--bench-set", "evaluate_maps=false", "--shared-field",
            "--set", *(f"field:{o}" for o in TINY_FIELD), *extra]


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*.json"))}


def _field_sha(map_dir: Path) -> str:
    return read_manifest(map_dir)["files"][FIELD_FILE]["sha256"]


def test_shared_field_variants_and_global_prior_end_to_end(tiny_scene, tmp_path, capsys, one_thread):
    out = tmp_path / "bench"
    root = out / "scene"
    TRAINED.clear()
    # 1. one method on the field, and a method with its own map
    assert main(_bench(tiny_scene, out, "probe,solo", "retrieval")) == 0
    assert TRAINED == {"probe": 1, "build solo": 1}
    assert list(read_manifest(root / "maps" / "shared")["components"]) == ["probe"]
    first = _mtimes(root)

    # 2. more entries: another method added to the same bundle (the field is not trained
    # again), a variant with other component settings in its own bundle, one with other
    # relocalizer settings only in the shared one, a global prior
    methods = "probe,anchor,probe_b=probe,probe_fast=probe,solo"
    sets = ["--set", "probe_b:train.value=2", "--reloc-set", "probe_fast:localization.position_std_m=1"]
    capsys.readouterr()
    assert main(_bench(tiny_scene, out, methods, "retrieval,global:anchor", *sets)) == 0
    printed = capsys.readouterr()
    assert TRAINED == {"probe": 2, "anchor": 1, "build solo": 1}  # + anchor in shared, + probe_b's probe
    maps = root / "maps"
    assert _field_sha(maps / "field") == _field_sha(maps / "shared") == _field_sha(maps / "probe_b")
    assert sorted(read_manifest(maps / "shared")["components"]) == ["anchor", "probe"]
    variant = read_manifest(maps / "probe_b")
    assert sorted(variant["components"]) == ["anchor", "probe"]  # the global prior's component, copied
    assert variant["components"]["probe"]["config"]["train"]["value"] == 2.0
    shared = read_manifest(maps / "shared")
    assert variant["files"]["anchor.safetensors"] == shared["files"]["anchor.safetensors"]
    assert not (maps / "probe").exists() and not (maps / "probe_fast").exists() and (maps / "solo").is_dir()
    # the field is the first run's; results already there for the bundle's probe
    # component are not localized again
    second = _mtimes(root)
    assert second["maps/field/manifest.json"] == first["maps/field/manifest.json"]
    assert second["probe/retrieval.json"] == first["probe/retrieval.json"]
    assert "probe/retrieval.json is up to date" in printed.err

    summary = json.loads((out / "benchmark.json").read_text())
    ds = summary["datasets"][0]
    assert set(ds["results"]) == {"probe", "anchor", "probe_b", "probe_fast", "solo"}
    assert set(ds["results"]["probe_b"]) == {"retrieval", "global:anchor"}
    assert set(ds["results"]["anchor"]) == set(ds["results"]["solo"]) == {"retrieval"}
    assert {(s["name"], s["prior"]) for s in ds["skipped"]} == {("anchor", "global:anchor"), ("solo", "global:anchor")}
    for name in ("probe", "probe_b", "probe_fast"):
        assert (root / name / "global-anchor.json").is_file()
        run = json.loads((root / name / "global-anchor.json").read_text())
        assert run["name"] == name and run["method"] == "probe" and run["prior"] == "global:anchor"
        assert {f["prior_source"] for f in run["frames"]} == {"regressor"}  # the anchor's pose started probe
        assert run["identity"]["localize"]["prior"] == "retrieval" and run["identity"]["map"]["global_prior"] == "anchor"
    fast = json.loads((root / "probe_fast" / "retrieval.json").read_text())
    assert fast["identity"]["reloc_overrides"] == {"localization": {"position_std_m": 1}} and fast["map"] == str(maps / "shared")
    # build times: the field's, and each component's add-method wall time
    assert ds["field"]["build_s"] > 0 and ds["field"]["build_s_source"] == "benchmark wall time"
    for name in ("probe", "anchor", "probe_b"):
        info = ds["maps"][name]
        assert info["component"] in ("probe", "anchor") and info["build_s_source"] == "benchmark wall time (add-method)"
        assert info["size_mb"] > 0 and info["field_build_s"] == ds["field"]["build_s"]
    assert ds["maps"]["solo"]["build_s_source"] == "benchmark wall time" and "component" not in ds["maps"]["solo"]
    assert "| probe_b | global:anchor | 2 |" in printed.out and "Shared field" in printed.out
    assert "Not run: solo / global:anchor" in printed.out
    page = (out / "report.html").read_text()
    assert "probe_b (probe) on the shared field" in page and "shared field" in page

    # 3. the same run again: nothing trained, built, copied or localized
    before = _mtimes(root)
    assert main(_bench(tiny_scene, out, methods, "retrieval,global:anchor", *sets)) == 0
    assert TRAINED == {"probe": 2, "anchor": 1, "build solo": 1}
    assert _mtimes(root) == before
    assert capsys.readouterr().err.count("skipping the localization") == 8

    # 4. another field rebuilds the bundles on it, from the field
    assert main(_bench(tiny_scene, out, "probe,solo", "retrieval", "--set", "field:map.train.steps=11")) == 0
    assert TRAINED == {"probe": 3, "anchor": 1, "build solo": 1}
    assert _field_sha(maps / "field") == _field_sha(maps / "shared") != variant["files"][FIELD_FILE]["sha256"]
    assert list(read_manifest(maps / "shared")["components"]) == ["probe"]


def test_map_every_builds_from_fewer_frames_in_its_own_folder(tiny_scene, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(tiny_scene), "--methods", "solo", "--out", str(out), "--limit", "1",
            "--bench-set", "evaluate_maps=false"]
    assert main(args) == 0
    assert main([*args, "--map-every", "3"]) == 0
    full = read_manifest(out / "scene" / "maps" / "solo")["reference_views"]["names"]
    thin = read_manifest(out / "scene@every3" / "maps" / "solo")["reference_views"]["names"]
    assert thin == full[::3] and len(thin) < len(full)
    ds = json.loads((out / "benchmark.json").read_text())["datasets"][0]
    assert ds["label"] == "scene@every3" and ds["map_every"] == 3 and ds["mapping_frames"] == len(thin)
    assert ds["query_frames"] == 1
    assert main(["benchmark", "--data", str(tiny_scene), "--methods", "solo", "--out", str(out),
                 "--map-every", "0"]) == 2
    assert "map_every: must be > 0" in capsys.readouterr().err
