"""Map bundles: atomic writes, verified loads, clear errors; build resume; CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_reloc.map_bundle import (
    FIELD_FILE,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    MapError,
    ReferenceViews,
    read_manifest,
    read_map,
    write_map,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BOUNDED = {"mode": "bounded", "aabb_min": [0.0, 0.0, 0.0], "aabb_max": [1.0, 1.0, 1.0], "near": 0.05}


def _write(path: Path, method: str = "crossfire", value: float = 1.0) -> Path:
    """A field (``map.*``) and, unless the method is the field-only "nerf", the
    method's component (``big.*``, a head ``map.field.heads.*``)."""
    mod = torch.nn.Linear(4, 3)
    with torch.no_grad():
        mod.weight.fill_(value)
    refs = ReferenceViews(["a.png"], [{"width": 4, "height": 3}], np.eye(4)[None])
    big = {"grid": torch.full((1 << 20,), value)}  # stored as fp16
    head = {"weight": torch.full((2, 2), value)}
    modules = {"map": mod} if method == "nerf" else {"map": mod, "big": big, "map.field.heads.h": head}
    return write_map(
        path, method=method, modules=modules, config={"x": 1}, scene=BOUNDED,
        references=refs, fingerprint="abc", field_config={"f": 2}, component=method != "nerf",
    )


def test_roundtrip_and_half_precision(tmp_path):
    p = _write(tmp_path / "m", value=0.5)
    b = read_map(p)
    assert b.method == "crossfire" and b.references.names == ["a.png"]
    assert torch.all(b.module_state("map")["weight"] == 0.5)
    assert b.tensors["big.grid"].dtype == torch.float32  # fp16 on disk, float in memory
    # one file for the field, one per component, each listed with its checksum
    assert sorted(f.name for f in p.iterdir()) == ["crossfire.safetensors", FIELD_FILE, MANIFEST_NAME]
    assert set(b.manifest["files"]) == {"crossfire.safetensors", FIELD_FILE}
    assert b.manifest["field"]["config"] == {"f": 2} and list(b.components) == ["crossfire"]
    from neural_reloc.map_bundle import component_tensors, field_tensors

    assert set(field_tensors(b)) == {"map.weight", "map.bias"}
    assert set(component_tensors(b, "crossfire")) == {"big.grid", "map.field.heads.h.weight"}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")], "no temp dirs left behind"


def test_rewrite_replaces_atomically(tmp_path):
    p = _write(tmp_path / "m", value=1.0)
    _write(p, value=2.0)
    assert torch.all(read_map(p).module_state("map")["weight"] == 2.0)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m"]


def test_interrupted_write_leaves_old_map_intact(tmp_path, monkeypatch):
    p = _write(tmp_path / "m", value=1.0)
    import neural_reloc.map_bundle as mb

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mb, "sha256_file", boom)  # dies after weights, before manifest
    with pytest.raises(KeyboardInterrupt):
        _write(p, value=3.0)
    monkeypatch.undo()
    assert torch.all(read_map(p).module_state("map")["weight"] == 1.0)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m"]


def test_missing_map_and_file_instead_of_dir(tmp_path):
    with pytest.raises(MapError, match="not found"):
        read_map(tmp_path / "nope")
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(MapError, match="directory"):
        read_map(f)


def test_truncated_weights_named(tmp_path):
    p = _write(tmp_path / "m")
    w = p / "crossfire.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(MapError, match=r"crossfire.safetensors.*truncated"):
        read_map(p)


def test_corrupt_weights_checksum(tmp_path):
    p = _write(tmp_path / "m")
    w = p / FIELD_FILE
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(MapError, match="checksum"):
        read_map(p)


def test_corrupt_manifest_named(tmp_path):
    p = _write(tmp_path / "m")
    (p / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(MapError, match=rf"{MANIFEST_NAME}.*not valid JSON"):
        read_map(p)
    (p / MANIFEST_NAME).unlink()
    with pytest.raises(MapError, match="missing"):
        read_map(p)


def test_wrong_version_and_method(tmp_path):
    p = _write(tmp_path / "m", method="nerf")
    with pytest.raises(MapError, match="this map has nerf, expected 'crossfire'"):
        read_map(p, expected_method="crossfire")
    man = json.loads((p / MANIFEST_NAME).read_text())
    man["format_version"] = 99
    (p / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(MapError, match="version 99"):
        read_manifest(p)


def test_weights_load_without_executing_code(tmp_path):
    """The weights are safetensors: a pickle payload there is rejected, never run."""
    p = _write(tmp_path / "m")
    marker = tmp_path / "pwned"
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Evil())
    (p / FIELD_FILE).write_bytes(payload)
    man = json.loads((p / MANIFEST_NAME).read_text())
    man["files"][FIELD_FILE] = {"bytes": len(payload), "sha256": __import__("hashlib").sha256(payload).hexdigest()}
    (p / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(MapError, match="safetensors"):
        read_map(p)
    assert not marker.exists()


def test_version_1_map_reads_as_field_plus_component(tmp_path):
    """A map written before components existed (one weights.safetensors, format 1)
    loads as its field plus its method's component, with the same tensors."""
    from safetensors.torch import save_file

    from neural_reloc.map_bundle import component_tensors, field_tensors, sha256_file

    p = tmp_path / "v1"
    p.mkdir()
    save_file({"map.w": torch.ones(2), "map.field.heads.descriptor.w": torch.ones(3), "cnn.w": torch.ones(4)},
              str(p / WEIGHTS_NAME))
    (p / MANIFEST_NAME).write_text(json.dumps({
        "format_version": 1, "method": "crossfire", "config": {"map": {"a": 1}}, "map_config": {"a": 1},
        "scene": BOUNDED, "reference_views": {"names": [], "cameras": [], "c2w_opengl": []},
        "files": {WEIGHTS_NAME: {"bytes": (p / WEIGHTS_NAME).stat().st_size, "sha256": sha256_file(p / WEIGHTS_NAME)}},
    }))
    b = read_map(p)
    assert b.manifest["field"]["config"] == {"a": 1} and list(b.components) == ["crossfire"]
    assert set(field_tensors(b)) == {"map.w"}
    assert set(component_tensors(b, "crossfire")) == {"map.field.heads.descriptor.w", "cnn.w"}


def test_every_file_a_map_uses_is_listed_and_inside_it(tmp_path):
    p = _write(tmp_path / "m")
    man = json.loads((p / MANIFEST_NAME).read_text())
    bypass = {**man, "files": {}}  # dropping the checksums must not skip the check
    (p / MANIFEST_NAME).write_text(json.dumps(bypass))
    with pytest.raises(MapError, match="not listed"):
        read_map(p)
    outside = {**man, "files": {**man["files"], "../../etc/hostname": {"bytes": 1, "sha256": "0"}}}
    (p / MANIFEST_NAME).write_text(json.dumps(outside))
    with pytest.raises(MapError, match="not a plain file name inside the map"):
        read_map(p)


# ------------------------------------------------------------ build, resume, CLI
def _tiny_dataset(tmp_path: Path) -> Path:
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    cfg = ProceduralSceneConfig(width=64, height=48, num_frames=10)
    generate_procedural_scene(tmp_path / "scene", cfg)
    return tmp_path / "scene"


TINY = [
    "train.steps=6", "train.rays_per_batch=256", "train.checkpoint_every=3", "train.max_image_size=64",
    "sampler.grid_resolution=16", "sampler.num_coarse=16", "sampler.num_fine=8", "sampler.grid_warmup_steps=2",
    "sampler.grid_update_every=2", "field.encoding.dense_resolutions=[8,16]", "train.virtual_patches=2",
]


def test_build_resumes_from_checkpoint_and_skips_when_done(tmp_path):
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.mapping import build_map, partial_dir
    from neural_reloc.nerf.config import NeuralMapConfig

    data = load_dataset(_tiny_dataset(tmp_path))
    cfg = merge(NeuralMapConfig(), parse_dotted(TINY))
    out = tmp_path / "map"
    logs: list[str] = []
    # Interrupt after the step-3 checkpoint: the map must not exist, the checkpoint must.
    cfg_stop = merge(cfg, {"train": {"time_budget_s": 1e-9}})
    from neural_reloc.nerf.train import NeuralMapTrainer

    tr = NeuralMapTrainer(data.subset("train"), cfg, torch.device("cpu"), partial_dir(out), log=logs.append)
    for s in range(3):
        tr.train_step(s)
        tr.state.step = s + 1
    tr.save_checkpoint()
    assert not out.exists()
    build_map(data, out, config=cfg, log=logs.append, evaluate=False)
    assert any("resumed" in m and "step 3" in m for m in logs), logs
    assert read_manifest(out)["training"]["steps"] == 6
    assert not partial_dir(out).exists()
    logs.clear()
    build_map(data, out, config=cfg, log=logs.append, evaluate=False)
    assert any("up to date" in m for m in logs)
    del cfg_stop


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "neural_reloc.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_cli_errors_name_the_problem(tmp_path):
    r = _cli("build-map", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "error:" in r.stderr and "missing" in r.stderr
    scene = _tiny_dataset(tmp_path)
    tj = json.loads((scene / "transforms.json").read_text())
    tj["frames"][0]["transform_matrix"][0][0] = 5.0  # not a rotation
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transforms.json").write_text(json.dumps(tj))
    os.symlink(scene / "images", bad / "images")
    r = _cli("build-map", "--data", str(bad), "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "rotation" in r.stderr, r.stderr
    r = _cli("info", "--map", str(tmp_path / "nomap"))
    assert r.returncode == 2 and "map not found" in r.stderr
    r = _cli("build-map", "--data", str(scene), "--out", str(tmp_path / "m"), "--set", "train.nonsense=1")
    assert r.returncode == 2 and "nonsense" in r.stderr


def test_cli_build_info_render(tmp_path):
    scene = _tiny_dataset(tmp_path)
    out = tmp_path / "m"
    r = _cli("build-map", "--data", str(scene), "--out", str(out), "--device", "cpu", "--set", *TINY)
    assert r.returncode == 0, r.stderr
    info = json.loads(_cli("info", "--map", str(out)).stdout)
    assert info["method"] == "nerf" and info["size_mb"] > 0
    r = _cli("render", "--map", str(out), "--out", str(tmp_path / "r"), "--data", str(scene), "--limit", "2")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r" / "render_report.json").read_text())
    assert len(rep) == 2 and all("psnr" in x for x in rep)


def test_crossfire_staged_descriptor_training_runs_and_skips_finished_stages(tmp_path):
    """The staged schedule end to end on a tiny map: both stages run and write their
    results; a rerun in the same work directory resumes after the field and reuses the
    finished stages (same config and data) instead of training again."""
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.methods.crossfire import CrossfireConfig
    from neural_reloc.methods.crossfire.trainer import DESCRIPTOR_HEAD, CrossfireTrainer

    data = load_dataset(_tiny_dataset(tmp_path)).subset("train")
    overrides = [f"map.{o}" for o in TINY] + [
        "loss.image_long_side=32", "train.cnn_crop_long_side=16", "train.min_correspondences=8",
        "train.cnn_steps=3", "train.field_steps=3", "train.field_batch=256", "train.surface_samples=4",
        "localization.retrieval_long_side=16",
    ]
    cfg = merge(CrossfireConfig(), parse_dotted(overrides))
    work = tmp_path / "work"
    logs: list[str] = []
    tr = CrossfireTrainer(data, cfg, torch.device("cpu"), work, log=logs.append)
    tr.fit()
    assert (work / "crossfire_cnn.pt").is_file() and (work / "crossfire_descriptor_field.pt").is_file()
    assert any(m.startswith("descriptor field: 3 steps") for m in logs), logs
    head_state = {k: v.clone() for k, v in tr.model.field.heads[DESCRIPTOR_HEAD].state_dict().items()}
    logs.clear()
    tr2 = CrossfireTrainer(data, cfg, torch.device("cpu"), work, log=logs.append)
    tr2.fit()
    assert any("stage cnn: done in a previous run" in m for m in logs), logs
    assert any("stage descriptor_field: done in a previous run" in m for m in logs), logs
    assert not any(m.startswith("descriptor field:") for m in logs)
    for k, v in tr2.model.field.heads[DESCRIPTOR_HEAD].state_dict().items():
        torch.testing.assert_close(v, head_state[k])


def test_crossfire_descriptor_stages_stop_at_their_time_budgets(tmp_path):
    """train.cnn_time_budget_s / field_time_budget_s end a stage before its steps (a
    build that must fit a GPU lease or a CPU budget), and the summary says so."""
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.methods.crossfire import CrossfireConfig
    from neural_reloc.methods.crossfire.trainer import CrossfireTrainer

    data = load_dataset(_tiny_dataset(tmp_path)).subset("train")
    overrides = [f"map.{o}" for o in TINY] + [
        "loss.image_long_side=32", "train.cnn_crop_long_side=16", "train.min_correspondences=8",
        "train.cnn_steps=1000", "train.field_steps=1000", "train.field_batch=256", "train.surface_samples=4",
        "localization.retrieval_long_side=16", "train.cnn_time_budget_s=1e-9", "train.field_time_budget_s=1e-9",
    ]
    cfg = merge(CrossfireConfig(), parse_dotted(overrides))
    logs: list[str] = []
    CrossfireTrainer(data, cfg, torch.device("cpu"), tmp_path / "work", log=logs.append).fit()
    assert any(m.startswith("CNN on correspondences: time budget 0s reached at step 0") for m in logs), logs
    assert any(m.startswith("descriptor field: time budget 0s reached at step 0") for m in logs), logs
    assert any(m.startswith("descriptor field: 0 steps") for m in logs), logs


def test_add_method_trains_components_on_the_frozen_field(tmp_path):
    """One map, many methods: add-method puts CROSSFIRE and NeRFMatch on a map built with
    --method nerf; the field's file stays byte for byte, every component loads, and a
    rerun with the same settings does nothing."""
    from neural_reloc.config_io import load_method_config, merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.map_bundle import FIELD_FILE, sha256_file
    from neural_reloc.map_loading import describe_map, load_relocalizer
    from neural_reloc.mapping import add_method, build_map
    from neural_reloc.methods.base import PosePrior
    from neural_reloc.nerf.config import NeuralMapConfig

    data = load_dataset(_tiny_dataset(tmp_path))
    m = build_map(data, tmp_path / "map", method="nerf", config=merge(NeuralMapConfig(), parse_dotted(TINY)),
                  log=lambda s: None, evaluate=False)
    field_sha = sha256_file(m / FIELD_FILE)
    assert describe_map(m)["components"] == {}
    with pytest.raises(ValueError, match="no relocalization method"):
        load_relocalizer(m)
    crossfire = load_method_config("crossfire", None, [
        "train.cnn_steps=2", "train.field_steps=2", "train.max_cached_views=3", "train.surface_samples=2",
        "localization.retrieval_extra_yaw_deg=[]"])
    add_method(m, "crossfire", data, crossfire, log=lambda s: None)
    nerfmatch = load_method_config("nerfmatch", None, [
        "train.steps=2", "train.jitter_renders=0", "train.image_long_side=64", "encoder.channels=[8,8,8]",
        "encoder.dim=8", "encoder.nerf_hidden=8", "localization.retrieval_extra_yaw_deg=[]"])
    add_method(m, "nerfmatch", data, nerfmatch, log=lambda s: None)
    _check_nerfmatch_keyframes(m, data)
    info = describe_map(m)
    assert list(info["components"]) == ["crossfire", "nerfmatch"] and info["default_method"] == "crossfire"
    assert sha256_file(m / FIELD_FILE) == field_sha  # the field is used as it is
    assert sorted(p.name for p in m.iterdir()) == ["crossfire.safetensors", FIELD_FILE, "manifest.json",
                                                   "nerfmatch.safetensors"]
    for method in ("crossfire", "nerfmatch"):
        reloc = load_relocalizer(m, "cpu", method=method)
        assert reloc.method == method
        i = data.indices("test")[0]
        res = reloc.localize(data.image(i), data.camera(i), None)  # runs; a 2-step model need not localize
        assert res.method == method and (res.success or res.reason)
        flat = np.full_like(data.image(i), 127)  # no texture: no cell may match, even with the true pose given
        res = reloc.localize(flat, data.camera(i), PosePrior(data.w2c_opencv(i)))
        assert not res.success and res.reason.startswith("iteration 1: 0 matches"), (method, res.reason)
    logs: list[str] = []
    add_method(m, "nerfmatch", data, nerfmatch, log=logs.append)
    assert any("nothing to do" in s for s in logs)
    _an_index_without_keyframes_is_rebuilt_not_retrained(m, data, nerfmatch, tmp_path)
    for method, cfg in (("crossfire", crossfire), ("nerfmatch", nerfmatch)):
        _an_index_of_other_views_is_rebuilt_not_retrained(m, data, method, cfg, tmp_path)


def _check_nerfmatch_keyframes(m, data):
    """NeRFMatch's retrieval index holds a keyframe per indexed view: unit (or zero)
    projected NeRF features and 3D points at the centres of keyframe_stride x
    keyframe_stride patch blocks of the encoder camera, so each opaque block's point
    projects back onto its block centre from the view's pose."""
    import numpy as np
    import torch

    from neural_reloc.map_bundle import read_map
    from neural_reloc.map_loading import map_method_config
    from neural_reloc.methods.nerfmatch.encoder import STRIDE
    from neural_reloc.methods.nerfmatch.nerf_features import encoder_camera
    from neural_reloc.methods.nerfmatch.trainer import RETRIEVAL

    bundle = read_map(m)
    cfg = map_method_config(bundle.manifest, None, method="nerfmatch")
    state = bundle.module_state(RETRIEVAL)
    kd, kp = state["keyframe_descriptors"].float(), state["keyframe_points"].float()
    cam = encoder_camera(data.camera(0), cfg.train.image_long_side)
    s = cfg.localization.keyframe_stride
    centres = cam.pixel_centers(stride=STRIDE * s).reshape(-1, 2)
    assert kd.shape == (len(state["descriptors"]), len(centres), cfg.encoder.dim) and kp.shape[:2] == kd.shape[:2]
    norms = kd.norm(dim=-1)
    opaque = norms > 0.5
    assert torch.allclose(norms[opaque], torch.ones_like(norms[opaque]), atol=1e-2) and opaque.any()
    for row in range(len(kd)):
        w2c = state["w2c_opencv"][row].double().numpy()
        pc = kp[row].double().numpy() @ w2c[:3, :3].T + w2c[:3, 3]
        uv, _ = cam.project(pc)
        ok = opaque[row].numpy()
        np.testing.assert_allclose(uv[ok], centres[ok], atol=0.5)  # float16 points; a patch off would be 8 px


def _an_index_without_keyframes_is_rebuilt_not_retrained(m, data, nerfmatch, tmp_path):
    """A NeRFMatch component whose index predates keyframes (same build settings):
    add-method rebuilds the index from the component's trained matcher, weights kept."""
    import torch

    from neural_reloc.map_bundle import component_file, read_map, write_bundle
    from neural_reloc.mapping import _current_files, add_method
    from neural_reloc.methods.nerfmatch.trainer import ENCODER, RETRIEVAL

    bundle = read_map(m)
    files = _current_files(bundle)
    comp = {k: v for k, v in bundle.tensors.items() if k.startswith("nerfmatch_")}
    n = comp[f"{RETRIEVAL}.descriptors"].shape[0]
    comp[f"{RETRIEVAL}.keyframe_descriptors"] = torch.zeros(n, 0, 0)
    comp[f"{RETRIEVAL}.keyframe_points"] = torch.zeros(n, 0, 3)
    files[component_file("nerfmatch")] = comp
    old = tmp_path / "map_old_index"
    write_bundle(old, {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}, files)
    assert read_map(old).module_state(RETRIEVAL)["keyframe_descriptors"].shape[1] == 0
    logs: list[str] = []
    add_method(old, "nerfmatch", data, nerfmatch, log=logs.append)
    assert any("its retrieval index has no keyframes: rebuilding it from its trained weights" in s for s in logs), logs
    again = read_map(old)
    assert again.module_state(RETRIEVAL)["keyframe_descriptors"].shape == \
        bundle.module_state(RETRIEVAL)["keyframe_descriptors"].shape
    for k, v in bundle.module_state(ENCODER).items():  # the matcher as it was, not retrained
        assert torch.equal(again.module_state(ENCODER)[k], v), k
    logs.clear()
    add_method(old, "nerfmatch", data, nerfmatch, log=logs.append)
    assert any("nothing to do" in s for s in logs)


def _an_index_of_other_views_is_rebuilt_not_retrained(m, data, method, cfg, tmp_path):
    """Settings that place other index views than a component's index holds (a map built
    before the poses between sparse views; here a pan added): add-method rebuilds the
    index with them, from the component's trained weights, and then has nothing to do."""
    import dataclasses
    import shutil

    import torch

    from neural_reloc.map_bundle import read_map
    from neural_reloc.mapping import add_method
    from neural_reloc.methods.common.retrieval import index_poses
    from neural_reloc.nerf.scene import SceneNormalization

    prefix = "retrieval" if method == "crossfire" else f"{method}_retrieval"
    m2 = tmp_path / f"map_{method}_views"
    shutil.copytree(m, m2)
    before = read_map(m2)
    panned = dataclasses.replace(cfg, localization=dataclasses.replace(cfg.localization, retrieval_extra_yaw_deg=(-20.0,)))
    extent = SceneNormalization.from_dict(before.manifest["scene"]).extent
    want = len(index_poses(before.references.c2w_opengl, panned.localization, extent))
    assert before.module_state(prefix)["descriptors"].shape[0] != want
    logs: list[str] = []
    add_method(m2, method, data, panned, log=logs.append)
    assert any("its retrieval index holds" in s and "rebuilding it from its trained weights" in s for s in logs), logs
    after = read_map(m2)
    assert after.module_state(prefix)["descriptors"].shape[0] == want
    trained = [k for k in before.tensors if k.startswith(f"{method}_") and not k.startswith(prefix + ".")] \
        if method == "nerfmatch" else [k for k in before.tensors if k.startswith(("cnn.", "map.field.heads."))]
    assert trained
    for k in trained:  # the CNN and head (or the matcher) as they were, not retrained
        assert torch.equal(after.tensors[k], before.tensors[k]), k
    logs.clear()
    add_method(m2, method, data, panned, log=logs.append)
    assert any("nothing to do" in s for s in logs), logs


def test_add_method_on_an_rgb_only_map_does_not_triangulate_for_the_frozen_field(tmp_path):
    """Keypoint depth supervises a field being trained; add-method trains none, so it must
    not spend minutes triangulating SIFT tracks for it (a real capture: ~7 min)."""
    from neural_reloc.config_io import load_method_config, merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.mapping import add_method, build_map
    from neural_reloc.nerf.config import NeuralMapConfig

    data = load_dataset(_tiny_dataset(tmp_path))
    build_logs: list[str] = []
    cfg = merge(NeuralMapConfig(), parse_dotted([*TINY, "train.use_depth=false", "train.keypoint_depth=true"]))
    m = build_map(data, tmp_path / "map", method="nerf", config=cfg, log=build_logs.append, evaluate=False)
    assert any("keypoint depth" in s for s in build_logs), build_logs  # the build's field did ask for it
    logs: list[str] = []
    crossfire = load_method_config("crossfire", None, [
        "train.cnn_steps=2", "train.field_steps=2", "train.max_cached_views=3", "train.surface_samples=2",
        "localization.retrieval_extra_yaw_deg=[]"])
    add_method(m, "crossfire", data, crossfire, log=logs.append)
    assert logs and not any("keypoint depth" in s or "triangulated" in s for s in logs), logs


def test_a_component_with_settings_this_version_lacks_names_the_map_and_the_versions():
    """A map from a newer neural_reloc stores settings this one does not know: the error
    says so, with both versions, instead of a bare unknown-key list."""
    from neural_reloc import __version__
    from neural_reloc.config_io import ConfigError
    from neural_reloc.map_loading import map_method_config

    manifest = {"method": "crossfire", "neural_reloc_version": "9.9.9",
                "components": {"crossfire": {"method": "crossfire", "config": {"localization": {"from_the_future": 1}}}}}
    with pytest.raises(ConfigError, match=r"the map's crossfire component: .*from_the_future.*written by neural_reloc "
                                          rf"9\.9\.9, this is {__version__}"):
        map_method_config(manifest)
    manifest["components"]["crossfire"]["config"] = {"localization": {"min_inliers": 15}}
    assert map_method_config(manifest).localization.min_inliers == 15
