"""``neural-reloc benchmark``: metrics and failure causes on hand-made records, the
configuration checks, the HTML report, and one tiny end-to-end run (a procedural scene,
a CROSSFIRE map built in seconds; accuracy does not matter there) with its rerun."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_reloc.cli import main
from neural_reloc.config_io import ConfigError
from neural_reloc.data.posed_images import PosedImages
from neural_reloc.eval.benchmark import (
    BenchmarkConfig,
    add_method_overrides,
    dataset_labels,
    parse_method_overrides,
    validate_config,
)
from neural_reloc.eval.benchmark_metrics import (
    CONVERGED_BUT_OFF,
    DID_NOT_CONVERGE,
    WRONG_PLACE,
    classify_failure,
    failures_by_cause,
    frame_rows,
    method_metrics,
    scene_scale,
)
from neural_reloc.device import machine_info
from neural_reloc.eval.benchmark_report import cdf_svg, format_markdown, machine_label, render_benchmark_html
from neural_reloc.geometry.camera import Camera


def rec(name, t=None, r=None, success=None, prior_t=0.3, prior_r=15.0, lat=None, reason=""):
    """A localize_dataset record with only what the benchmark reads."""
    success = t is not None if success is None else success
    return {
        "name": name, "success": success, "has_gt": True, "t_err_m": t, "r_err_deg": r,
        "latency_ms": lat or {"render": 10.0, "pnp": 5.0}, "num_inliers": 0, "prior_source": "given",
        "reason": reason or ("" if success else "too few matches"), "prior_t_err_m": prior_t, "prior_r_err_deg": prior_r,
    }


# ================================================================== failure causes
def test_failure_causes_of_hand_made_records():
    cfg = BenchmarkConfig(failure_t_m=0.05, failure_r_deg=5.0, basin_t_m=1.0, basin_r_deg=45.0)
    assert classify_failure(rec("good", 0.04, 4.0), cfg) is None
    assert classify_failure(rec("at the limit", 0.05, 5.0), cfg) is None
    # an estimate beyond either threshold, from a prior within the basin
    assert classify_failure(rec("far", 0.06, 1.0), cfg) == CONVERGED_BUT_OFF
    assert classify_failure(rec("turned", 0.01, 6.0), cfg) == CONVERGED_BUT_OFF
    # no estimate from a prior within the basin
    assert classify_failure(rec("lost", None, None, prior_t=0.9, prior_r=40.0), cfg) == DID_NOT_CONVERGE
    # a prior outside the basin (translation or rotation), with or without an estimate
    assert classify_failure(rec("elsewhere", None, None, prior_t=1.5), cfg) == WRONG_PLACE
    assert classify_failure(rec("backwards", 0.5, 20.0, prior_t=0.2, prior_r=170.0), cfg) == WRONG_PLACE
    # a far prior does not matter when the method found the pose anyway
    assert classify_failure(rec("recovered", 0.01, 1.0, prior_t=3.0), cfg) is None
    # a "success" without an error (no ground truth at that frame) is not localized
    assert classify_failure(rec("odd", None, None, success=True), cfg) == DID_NOT_CONVERGE
    assert classify_failure(dict(rec("no gt", None, None), has_gt=False), cfg) is None


def test_failure_thresholds_and_basin_are_configurable():
    r = rec("x", 0.3, 3.0, prior_t=1.5)
    assert classify_failure(r, BenchmarkConfig()) == WRONG_PLACE
    assert classify_failure(r, BenchmarkConfig(basin_t_m=2.0)) == CONVERGED_BUT_OFF
    assert classify_failure(r, BenchmarkConfig(failure_t_m=0.5)) is None


def test_failures_by_cause_counts_and_lists_frames():
    cfg = BenchmarkConfig()
    records = [
        rec("a", 0.01, 1.0), rec("b", None, None), rec("c", 0.2, 1.0), rec("d", None, None, prior_t=5.0),
        rec("e", None, None, prior_t=None, prior_r=None), rec("f", 0.3, 2.0, prior_r=90.0),
    ]
    f = failures_by_cause(records, cfg)
    assert f["counts"] == {WRONG_PLACE: 2, DID_NOT_CONVERGE: 2, CONVERGED_BUT_OFF: 1}
    assert f["frames"] == {WRONG_PLACE: ["d", "f"], DID_NOT_CONVERGE: ["b", "e"], CONVERGED_BUT_OFF: ["c"]}
    assert f["total"] == 5 and f["prior_unknown"] == 1
    assert f["threshold"] == [0.05, 5.0] and f["basin"] == [1.0, 45.0]


# ================================================================== metrics
def test_metrics_count_every_frame_and_use_the_scene_scale():
    cfg = BenchmarkConfig(recall_thresholds=((0.01, 1.0), (0.05, 5.0)), relative_recall_thresholds=((0.005, 1.0), (0.02, 5.0)))
    records = [
        rec("a", 0.004, 0.5, prior_t=0.2, prior_r=10.0, lat={"render": 10.0, "pnp": 1.0}),
        rec("b", 0.03, 2.0, prior_t=0.4, prior_r=20.0, lat={"render": 20.0, "pnp": 2.0}),
        rec("c", 0.5, 30.0, prior_t=0.6, prior_r=30.0, lat={"render": 30.0, "pnp": 3.0}),
        rec("d", None, None, prior_t=2.0, prior_r=50.0, lat={"render": 40.0}),
    ]
    scale = 2.0  # 0.5% of it: 1 cm; 2%: 4 cm
    m = method_metrics(records, scale, cfg)
    assert m["frames"] == 4 and m["success_rate"] == 0.75
    # medians over the 3 localized frames, recall over all 4
    assert m["median_t_err_m"] == pytest.approx(0.03) and m["median_r_err_deg"] == pytest.approx(2.0)
    assert m["median_t_err_rel"] == pytest.approx(0.015)
    assert m["recall"] == {"1cm/1deg": 0.25, "5cm/5deg": 0.5}
    assert m["recall_relative"] == {"0.5%/1deg": 0.25, "2%/5deg": 0.5}
    assert m["prior_median_t_err_m"] == pytest.approx(0.5) and m["prior_median_r_err_deg"] == pytest.approx(25.0)
    assert m["latency_ms"]["render"]["p50"] == pytest.approx(25.0)
    assert m["latency_ms"]["total"]["p50"] == pytest.approx(27.5)  # 11, 22, 33, 40
    assert m["failures"]["counts"] == {WRONG_PLACE: 1, DID_NOT_CONVERGE: 0, CONVERGED_BUT_OFF: 1}
    rows = frame_rows(records, scale, cfg)
    assert [r["t_err_rel"] for r in rows[:3]] == pytest.approx([0.002, 0.015, 0.25]) and rows[3]["t_err_rel"] is None
    assert [r["cause"] for r in rows] == [None, None, CONVERGED_BUT_OFF, WRONG_PLACE]
    # without a scale there is no relative recall, rather than a made-up one
    assert method_metrics(records, None, cfg)["recall_relative"] == {"0.5%/1deg": None, "2%/5deg": None}


def _look_at_origin(center: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world at ``center`` looking at the origin (the camera looks along -z)."""
    z = center / np.linalg.norm(center)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = center
    return T


def _ring(tmp_path: Path, depth_m: float | None) -> PosedImages:
    """9 cameras on a circle of radius 3 around the origin, looking at it; 3 are queries."""
    angles = np.linspace(0, 2 * np.pi, 9, endpoint=False)
    poses = [_look_at_origin(np.array([3 * np.cos(a), 3 * np.sin(a), 0.0])) for a in angles]
    depth_paths = None
    if depth_m is not None:
        depth_paths = []
        for i in range(9):
            d = np.full((6, 8), depth_m + 0.1 * i, np.float32)
            d[0] = 0.0  # invalid pixels do not count
            np.save(tmp_path / f"d{i}.npy", d)
            depth_paths.append(tmp_path / f"d{i}.npy")
    return PosedImages(
        names=[f"f{i}" for i in range(9)], image_paths=[tmp_path / f"f{i}.png" for i in range(9)],
        cameras=[Camera(8, 6, 5.0, 5.0, 4.0, 3.0)] * 9, c2w_opengl=np.stack(poses),
        split={"train": [0, 1, 2, 3, 4, 5], "test": [6, 7, 8]}, depth_paths=depth_paths, source=str(tmp_path),
    )


def test_scene_scale_is_the_median_query_depth_else_the_distance_to_the_focus_point(tmp_path):
    scale, how = scene_scale(_ring(tmp_path, depth_m=2.0), [6, 7, 8])
    assert scale == pytest.approx(2.7) and "depth" in how  # the query frames' 2.6, 2.7, 2.8
    scale, how = scene_scale(_ring(tmp_path, depth_m=2.0), [6, 7, 8], max_frames=1)
    assert scale == pytest.approx(2.6)
    scale, how = scene_scale(_ring(tmp_path, depth_m=None), [6, 7, 8])
    assert scale == pytest.approx(3.0) and "focus point" in how


# ================================================================== configuration
def test_method_overrides_parse_and_malformed_ones_name_the_problem():
    assert parse_method_overrides(["crossfire:map.train.steps=600", "classical:a.b=x:y", "crossfire:train.cnn_steps=1"]) == {
        "crossfire": ["map.train.steps=600", "train.cnn_steps=1"], "classical": ["a.b=x:y"]}
    # command-line items follow those of a config file
    cfg = add_method_overrides(BenchmarkConfig(map_overrides={"crossfire": ["train.cnn_steps=5"]}),
                               ["crossfire:train.cnn_steps=7"], ["crossfire:localization.max_iterations=1"])
    assert cfg.map_overrides == {"crossfire": ["train.cnn_steps=5", "train.cnn_steps=7"]}
    assert cfg.reloc_overrides == {"crossfire": ["localization.max_iterations=1"]}
    with pytest.raises(ConfigError, match="map_overrides: expected a mapping"):
        add_method_overrides(BenchmarkConfig(map_overrides=["crossfire:train.cnn_steps=5"]), [], [])
    for bad in ("map.train.steps=600", "crossfire:map.train.steps", ":a=1", "crossfire:=1", "a=b:c=d"):
        with pytest.raises(ConfigError, match=f"--reloc-set '{bad}': expected METHOD:key.path=value"):
            parse_method_overrides([bad], "--reloc-set")


def test_validate_config_refuses_what_cannot_be_benchmarked():
    validate_config(BenchmarkConfig(methods=("crossfire",), priors=("retrieval", "perturbed", "constant")))
    with pytest.raises(ConfigError, match="'nerf' builds maps but cannot relocalize; methods that relocalize: .*crossfire"):
        validate_config(BenchmarkConfig(methods=("crossfire", "nerf")))
    with pytest.raises(ConfigError, match="'nope' is not registered; available: .*crossfire"):
        validate_config(BenchmarkConfig(methods=("nope",)))
    with pytest.raises(ConfigError, match="prior 'oracle' is not one of retrieval, perturbed, constant"):
        validate_config(BenchmarkConfig(priors=("oracle",)))
    with pytest.raises(ConfigError, match="names method 'other', which is not benchmarked"):
        validate_config(BenchmarkConfig(map_overrides={"other": ["train.steps=1"]}))
    with pytest.raises(ConfigError, match="relocalizer override of method 'crossfire'.*localization.*unknown key.*max_iters"):
        validate_config(BenchmarkConfig(reloc_overrides={"crossfire": ["localization.max_iters=2"]}))
    with pytest.raises(ConfigError, match="basin_t_m: must be > 0"):
        validate_config(BenchmarkConfig(basin_t_m=0.0))
    with pytest.raises(ConfigError, match=r"relative_recall_thresholds\[1\]: expected \[translation, degrees\]"):
        validate_config(BenchmarkConfig(relative_recall_thresholds=((0.01, 2.0), (0.05,))))


def test_dataset_labels_are_folder_names_made_unique(tmp_path):
    (tmp_path / "a" / "room").mkdir(parents=True)
    (tmp_path / "b" / "room").mkdir(parents=True)
    (tmp_path / "b" / "room" / "transforms.json").write_text("{}")
    assert dataset_labels([tmp_path / "a" / "room", tmp_path / "b" / "room" / "transforms.json", tmp_path / "x y"]) == [
        "a_room", "b_room", "x_y"]
    # the same folder twice: a numbered suffix
    assert dataset_labels([tmp_path / "a" / "room", tmp_path / "a" / "room"]) == ["room", "room-2"]


# ================================================================== report
def test_cdf_svg_counts_failures_as_misses():
    svg = cdf_svg([("m / p", [0.01, None, 0.1, None])], "error [m]", markers=(0.05,))
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "m / p" in svg
    # the curve ends at half height: 2 of 4 frames localized
    ys = [float(p.split(",")[1]) for p in svg.split("points='")[1].split("'")[0].split()]
    top, bottom = 12, 12 + 220
    assert ys[-1] == pytest.approx(bottom - 0.5 * (bottom - top))
    assert "no localized frames" in cdf_svg([("m", [None, None])], "error [m]")


# ================================================================== end to end
#: A CROSSFIRE map in seconds (nothing localizes with it; this checks the plumbing).
TINY_CROSSFIRE = [
    "map.train.steps=20", "map.train.max_image_size=48", "map.train.rays_per_batch=256", "map.train.virtual_patches=2",
    "map.sampler.grid_resolution=16", "map.sampler.num_coarse=16", "map.sampler.num_fine=8",
    "map.sampler.grid_warmup_steps=4", "map.field.encoding.dense_resolutions=[8,16]",
    "descriptor.encoding.plane_resolutions=[16,32]", "loss.image_long_side=32", "train.cnn_crop_long_side=16",
    "train.min_correspondences=8", "train.cnn_steps=5", "train.field_steps=5", "train.field_batch=256",
    "train.surface_samples=4", "localization.retrieval_long_side=16", "localization.render_samples=4",
    "localization.render_coarse_samples=16", "localization.match_long_side=32", "localization.match_short_side=24",
]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    out = tmp_path_factory.mktemp("bench") / "scene"
    generate_procedural_scene(out, ProceduralSceneConfig(width=160, height=120, num_frames=30))
    return out


@pytest.fixture
def one_thread():
    """torch on one thread: on this shared 2-core machine another busy process makes two
    OpenMP threads wait on each other (10x slower); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _bench(scene: Path, out: Path, *extra: str) -> list[str]:
    return ["benchmark", "--data", str(scene), "--methods", "crossfire", "--out", str(out), "--device", "cpu",
            "--priors", "retrieval,perturbed", "--limit", "2", "--bench-set", "evaluate_maps=false",
            "--set", *(f"crossfire:{o}" for o in TINY_CROSSFIRE), *extra]


def _stamps(out: Path) -> dict[str, int]:
    files = [out / "scene" / "maps" / "crossfire" / "manifest.json", *sorted((out / "scene" / "crossfire").glob("*.json"))]
    return {f.name: f.stat().st_mtime_ns for f in files}


def test_benchmark_end_to_end_and_rerun_skips_finished_work(tiny_scene, tmp_path, capsys, one_thread):
    out = tmp_path / "bench"
    assert main(_bench(tiny_scene, out)) == 0
    printed = capsys.readouterr()
    assert "| crossfire | retrieval | 2 |" in printed.out and "| crossfire | perturbed | 2 |" in printed.out
    for f in ("benchmark.json", "report.html", "scene/maps/crossfire/manifest.json", "scene/maps/crossfire.build.json",
              "scene/crossfire/retrieval.json", "scene/crossfire/perturbed.json"):
        assert (out / f).is_file(), f
    summary = json.loads((out / "benchmark.json").read_text())
    ds = summary["datasets"][0]
    assert ds["label"] == "scene" and ds["query_frames"] == 2 and ds["scale"] > 0 and "depth" in ds["scale_source"]
    info = ds["maps"]["crossfire"]
    assert info["size_mb"] > 0 and info["build_s"] > 0 and info["build_s_source"] == "benchmark wall time"
    # what measured the times: the build, each localization and the run name this machine
    machine = summary["machine"]
    assert machine == machine_info("cpu") and info["build_machine"] == machine
    assert all(m["machine"] == machine for m in ds["results"]["crossfire"].values())
    for prior in ("retrieval", "perturbed"):
        m = ds["results"]["crossfire"][prior]
        assert m["frames"] == 2 and len(m["per_frame"]) == 2 and m["latency_ms"]["total"]["count"] == 2
        assert sum(m["failures"]["counts"].values()) == m["failures"]["total"] == 2 - round(2 * m["recall"]["5cm/5deg"])
    perturbed = ds["results"]["crossfire"]["perturbed"]
    assert perturbed["prior_median_t_err_m"] == pytest.approx(0.3) and perturbed["prior_median_r_err_deg"] == pytest.approx(15.0)
    page = (out / "report.html").read_text()
    assert "<svg" in page and "Failures by cause" in page and "images/" in page
    assert f"Machine: {html.escape(machine_label(machine))}." in page
    assert "src=" not in page and "href=" not in page  # self-contained
    assert format_markdown(summary) in printed.out

    # a rerun finds the map and both localizations
    before = _stamps(out)
    assert main(_bench(tiny_scene, out)) == 0
    assert capsys.readouterr().err.count("skipping the localization") == 2
    assert _stamps(out) == before

    # a relocalizer override relocalizes without rebuilding the map
    assert main(_bench(tiny_scene, out, "--reloc-set", "crossfire:localization.max_iterations=1")) == 0
    after = _stamps(out)
    assert after["manifest.json"] == before["manifest.json"]
    assert after["retrieval.json"] != before["retrieval.json"] and after["perturbed.json"] != before["perturbed.json"]
    ident = json.loads((out / "scene" / "crossfire" / "retrieval.json").read_text())["identity"]
    assert ident["reloc_overrides"] == {"localization": {"max_iterations": 1}}


def test_benchmark_cli_errors_are_one_line(tiny_scene, tmp_path, capsys):
    for args, problem in (
        (["--methods", "nerf"], "'nerf' builds maps but cannot relocalize"),
        (["--methods", "crossfire", "--set", "crossfire.map.train.steps=3"], "--set 'crossfire.map.train.steps=3': expected METHOD:"),
        (["--methods", "crossfire", "--set", "crossfire:map.train.stepz=3"], "map override of method 'crossfire'"),
        (["--methods", "crossfire", "--split", "val"], "no split named 'val'"),
    ):
        assert main(["benchmark", "--data", str(tiny_scene), "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and problem in err[0], err
    assert not (tmp_path / "o").exists()


def test_report_renders_a_hand_made_summary():
    cfg = BenchmarkConfig()
    records = [rec("a", 0.01, 1.0), rec("b", None, None, prior_t=3.0)]
    entry = method_metrics(records, 2.0, cfg) | {"file": "x.json", "per_frame": frame_rows(records, 2.0, cfg)}
    from neural_reloc.config_io import to_dict

    summary = {"config": to_dict(cfg), "datasets": [{
        "label": "room", "data": "/d/room", "query_split": "test", "query_frames": 2, "scale": 2.0, "scale_source": "depth",
        "maps": {"crossfire": {"size_mb": 1.5, "build_s": 12.0, "build_s_source": "benchmark wall time", "map_quality": {}}},
        "results": {"crossfire": {"retrieval": entry}}}]}
    page = render_benchmark_html(summary)
    assert "wrong place (prior outside the basin)" in page and "<svg" in page
    assert "Machine: unknown." in page  # a summary written before machines were recorded

    # a result reused from an earlier run on another machine names that machine beside its latency
    here = {"cpu": "CPU A", "cpu_flags": ["avx2"], "cpu_count": 2, "torch_threads": 2, "torch": "2", "device": "cpu"}
    there = here | {"cpu": "CPU B", "cpu_flags": ["amx_bf16", "avx512f", "avx2"]}
    summary["machine"] = here
    summary["datasets"][0]["results"]["crossfire"]["retrieval"] = entry | {"machine": there}
    page = render_benchmark_html(summary)
    assert "Machine: CPU A (avx2), 2 torch threads." in page
    assert html.escape(machine_label(there)) in page and machine_label(there) == "CPU B (amx_bf16, avx512f, avx2), 2 torch threads"
    table = format_markdown(summary)
    assert "| crossfire | retrieval | 2 | 50.0% | 1.00 | 1.00 |" in table and "| 1.5 | 12 |" in table
    assert table.rstrip().endswith("| 1 / 0 / 0 |\n\nLatency and build times measured on: CPU A (avx2), 2 torch threads.")
    assert not math.isnan(entry["success_rate"])


def test_machine_info_names_the_cpu_and_its_speed_flags():
    info = machine_info("cpu")
    assert info["device"] == "cpu" and info["cpu"] and info["cpu_count"] >= 1 and info["torch_threads"] >= 1
    assert set(info["cpu_flags"]) <= {"amx_bf16", "avx512_bf16", "avx512f", "avx2"}
    assert "gpu" not in info and json.loads(json.dumps(info)) == info
