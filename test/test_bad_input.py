"""Bad input, tried as a careful new user and a security reviewer would: every kind ends
with exit status 2 and one ``error: ...`` line naming the culprit (file, field, option),
no traceback, and nothing written before is touched.

One row per kind (``CASES``), across maps, datasets, bags, config and outputs; each
row builds its broken input from a small classical map, dataset and bag made once per
module (seconds), runs the CLI in-process and checks the outcome. The node's topics
have their own rejection tests (test_relocalization_node.py, test_ros_conversions.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from neural_reloc.cli import main

#: A sentinel every case leaves in its output folder: it must survive the failed run.
SENTINEL = "precious earlier result\n"


@dataclass
class Env:
    root: Path  # a fresh folder of this case
    map: Path  # a good classical map (a copy of it, this case's to break)
    data: Path  # a good dataset (a copy, this case's to break)
    bag: Path  # a good bag of the dataset (shared, read-only)
    out: Path  # a folder holding SENTINEL in keep.txt

    def manifest(self) -> dict:
        return json.loads((self.map / "manifest.json").read_text())

    def write_manifest(self, m: dict) -> None:
        (self.map / "manifest.json").write_text(json.dumps(m))

    def transforms(self) -> dict:
        return json.loads((self.data / "transforms.json").read_text())

    def write_transforms(self, t: dict) -> None:
        (self.data / "transforms.json").write_text(json.dumps(t))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(map, dataset, bag): a tiny scene, its classical map and a bag of it."""
    from neural_reloc.bags import BagFromDatasetConfig, write_bag_from_dataset
    from neural_reloc.data import load_dataset
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene
    from neural_reloc.mapping import build_map

    root = tmp_path_factory.mktemp("good")
    generate_procedural_scene(root / "scene", ProceduralSceneConfig(width=160, height=120, num_frames=16))
    data = load_dataset(root / "scene")
    build_map(data, root / "map", method="classical", log=lambda s: None)
    write_bag_from_dataset(data, root / "bag", BagFromDatasetConfig(split="test"))
    return root / "map", root / "scene", root / "bag"


def _loc(e: Env, *extra: str) -> list[str]:
    return ["localize", "--map", str(e.map), "--data", str(e.data), "--out", str(e.out / "r.json"), *extra]


def _build(e: Env, *extra: str) -> list[str]:
    return ["build-map", "--method", "classical", "--data", str(e.data), "--out", str(e.out / "m"), *extra]


def _evalbag(e: Env, *extra: str) -> list[str]:
    return ["eval-bag", "--bag", str(e.bag), "--map", str(e.map), "--out", str(e.out / "ev"), "--no-report", *extra]


def _flip_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-20] ^= 0xFF
    p.write_bytes(bytes(b))


def _set(d: dict, path: str, value) -> dict:
    node = d
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return d


def _first_image(e: Env) -> Path:
    return e.data / e.transforms()["frames"][0]["file_path"]


def _pickle_weights(e: Env) -> list[str]:
    import hashlib
    import pickle

    m = e.manifest()
    name = next(iter(m["files"]))
    payload = pickle.dumps({"x": 1})
    (e.map / name).write_bytes(payload)
    m["files"][name] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    e.write_manifest(m)
    return _loc(e)


def _tiny_image_big_intrinsics(e: Env) -> list[str]:
    t = e.transforms()
    for k in ("w", "h"):
        t.pop(k, None)
    e.write_transforms(t)
    for f in t["frames"]:
        cv2.imwrite(str(e.data / f["file_path"]), np.zeros((1, 1, 3), np.uint8))
    return _loc(e)


def _fifo_bag(e: Env) -> list[str]:
    fifo = e.root / "pipe.mcap"
    os.mkfifo(fifo)
    return ["eval-bag", "--bag", str(fifo), "--map", str(e.map), "--out", str(e.out / "ev")]


def _text(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def _binary(p: Path) -> Path:
    p.write_bytes(bytes(range(256)) * 4)
    return p


#: (kind, builds the broken input and returns the CLI arguments, what the message names)
CASES: list[tuple[str, Callable[[Env], list[str]], str]] = [
    # -- maps ------------------------------------------------------------------------
    ("map missing", lambda e: _loc(e) if shutil.rmtree(e.map) is None else [], "map not found"),
    ("map is a file", lambda e: ["localize", "--map", str(_text(e.root / "f", "x")), "--data", str(e.data)],
     "a map is a directory"),
    ("map without manifest", lambda e: _loc(e) if (e.map / "manifest.json").unlink() is None else [],
     "manifest.json: missing"),
    ("manifest not JSON", lambda e: _loc(e) if _text(e.map / "manifest.json", "{oops") else [], "not valid JSON"),
    ("manifest without format_version", lambda e: (e.write_manifest({k: v for k, v in e.manifest().items()
                                                                     if k != "format_version"}), _loc(e))[1],
     "no format_version"),
    ("format_version a string", lambda e: (e.write_manifest(_set(e.manifest(), "format_version", "2")), _loc(e))[1],
     "format_version must be a whole number"),
    ("format_version from the future", lambda e: (e.write_manifest(_set(e.manifest(), "format_version", 99)),
                                                  _loc(e))[1], "map format version 99"),
    ("files entry not an object", lambda e: (e.write_manifest(_set(e.manifest(), "files", {"x.safetensors": 3})),
                                             _loc(e))[1], "files entry 'x.safetensors'"),
    ("files emptied (checksums bypassed)", lambda e: (e.write_manifest(_set(e.manifest(), "files", {})), _loc(e))[1],
     "not listed"),
    ("files entry outside the map", lambda e: (e.write_manifest(_set(e.manifest(), "files", {
        **e.manifest()["files"], "../../../../etc/hostname": {"bytes": 1, "sha256": "0"}})), _loc(e))[1],
     "not a plain file name inside the map"),
    ("weights truncated", lambda e: (lambda p: (p.write_bytes(p.read_bytes()[:100]), _loc(e))[1])(
        e.map / "classical.safetensors"), "truncated"),
    ("weights byte flipped", lambda e: (_flip_byte(e.map / "classical.safetensors"), _loc(e))[1], "checksum mismatch"),
    ("weights are a pickle", _pickle_weights, "cannot be read as safetensors"),
    ("scene empty", lambda e: (e.write_manifest(_set(e.manifest(), "scene", {})), _loc(e))[1], "'scene' must have a mode"),
    ("reference_views without names", lambda e: (e.write_manifest(_set(e.manifest(), "reference_views", {
        "cameras": [], "c2w_opengl": []})), _loc(e))[1], "'reference_views' must have lists"),
    ("unknown method", lambda e: (e.write_manifest(_set(_set(e.manifest(), "method", "nosuch"),
                                                       "components.classical.method", "nosuch")), _loc(e))[1],
     "unknown method 'nosuch'"),
    ("map without a relocalization method", lambda e: (e.write_manifest(_set(e.manifest(), "components", {})),
                                                       _loc(e))[1], "no relocalization method"),
    # -- datasets --------------------------------------------------------------------
    ("data missing", lambda e: (shutil.rmtree(e.data), _loc(e))[1], "dataset path does not exist"),
    ("data an empty folder", lambda e: (shutil.rmtree(e.data), e.data.mkdir(), _loc(e))[2], "scene"),
    ("transforms.json not JSON", lambda e: (_text(e.data / "transforms.json", "{"), _loc(e))[1], "transforms.json"),
    ("no frames", lambda e: (e.write_transforms(_set(e.transforms(), "frames", [])), _loc(e))[1], "frames"),
    ("image missing", lambda e: (_first_image(e).unlink(), _loc(e, "--split", "all"))[1], "missing"),
    ("image not decodable", lambda e: (_binary(_first_image(e)), _loc(e, "--split", "all"))[1], "cannot decode image"),
    ("image size differs from the camera", lambda e: (cv2.imwrite(str(_first_image(e)), np.zeros((10, 10, 3), np.uint8)),
                                                      _loc(e, "--split", "all"))[1], "but its camera says"),
    ("1x1 images with 160x120 intrinsics", _tiny_image_big_intrinsics, "principal point"),
    ("pose with NaN", lambda e: (e.write_transforms(_set(e.transforms(), "frames", [
        {**f, "transform_matrix": [[float("nan")] * 4] * 4} if i == 0 else f
        for i, f in enumerate(e.transforms()["frames"])])), _loc(e))[1], "transform_matrix: contains NaN"),
    ("pose with a scale", lambda e: (e.write_transforms(_set(e.transforms(), "frames", [
        {**f, "transform_matrix": (2 * np.eye(4)).tolist()} if i == 0 else f
        for i, f in enumerate(e.transforms()["frames"])])), _loc(e))[1], "transform_matrix: last row"),
    ("split without frames", lambda e: _loc(e, "--split", "nosuchsplit"), "nosuchsplit"),
    # -- config ----------------------------------------------------------------------
    ("--set without =", lambda e: _loc(e, "--set", "localization.min_inliers"), "is not of the form key.path=value"),
    ("--set value not YAML", lambda e: _loc(e, "--set", "localization.min_inliers=[1"), "not valid YAML"),
    ("--set python tag", lambda e: _loc(e, "--set", "localization.min_inliers=!!python/object/apply:os.system [ls]"),
     "not valid YAML"),
    ("--set a section and its key", lambda e: _build(e, "--set", "features=1", "features.max_num_features=20"),
     "features is set to a value"),
    ("--set unknown key", lambda e: _loc(e, "--set", "localization.min_inlier=3"), "unknown key"),
    ("--set wrong type", lambda e: _loc(e, "--set", "localization.min_inliers=many"), "min_inliers"),
    ("--set negative count", lambda e: _loc(e, "--set", "localization.min_inliers=-1"), "localization.min_inliers=-1"),
    ("--set ratio above 1", lambda e: _loc(e, "--set", "localization.min_inlier_ratio=2"), "min_inlier_ratio=2"),
    ("--set a build setting out of range", lambda e: _build(e, "--set", "localization.pnp.min_points=1"),
     "localization.pnp: invalid PnPConfig: min_points=1"),
    ("--config missing", lambda e: _build(e, "--config", str(e.root / "nope.yaml")), "nope.yaml"),
    ("--config binary", lambda e: _build(e, "--config", str(_binary(e.root / "c.yaml"))), "c.yaml"),
    ("--config mixed key types", lambda e: _build(e, "--config", str(_text(e.root / "c.yaml", "1: a\nfoo: b\n"))),
     "key 1 is not a name"),
    ("--config a list", lambda e: _build(e, "--config", str(_text(e.root / "c.yaml", "- 1\n- 2\n"))),
     "top level must be a mapping"),
    ("--limit negative", lambda e: _loc(e, "--limit", "-1"), "--limit"),
    # -- outputs ---------------------------------------------------------------------
    ("localize --out a directory", lambda e: ["localize", "--map", str(e.map), "--data", str(e.data), "--out", str(e.out)],
     "is a directory"),
    ("localize --out under a file", lambda e: ["localize", "--map", str(e.map), "--data", str(e.data),
                                               "--out", str(e.out / "keep.txt" / "r.json")], "is a file, not a folder"),
    ("build-map --out a folder that is not a map", lambda e: ["build-map", "--method", "classical", "--data", str(e.data),
                                                              "--out", str(e.out)], "refusing to replace it"),
    ("build-map --out a file", lambda e: ["build-map", "--method", "classical", "--data", str(e.data),
                                          "--out", str(e.out / "keep.txt")], "is a file"),
    ("eval-bag --out a file", lambda e: ["eval-bag", "--bag", str(e.bag), "--map", str(e.map),
                                         "--out", str(e.out / "keep.txt")], "is a file"),
    # -- bags ------------------------------------------------------------------------
    ("bag missing", lambda e: ["eval-bag", "--bag", str(e.root / "nobag"), "--map", str(e.map), "--out", str(e.out / "ev")],
     "bag not found"),
    ("bag is a FIFO", _fifo_bag, "not a regular file or directory"),
    ("bag is garbage", lambda e: ["eval-bag", "--bag", str(_binary(e.root / "x.mcap")), "--map", str(e.map),
                                  "--out", str(e.out / "ev")], "x.mcap"),
    ("bag folder without metadata", lambda e: ["eval-bag", "--bag", str((e.root / "b").mkdir() or e.root / "b"),
                                               "--map", str(e.map), "--out", str(e.out / "ev")], "b"),
    ("bag without the image topic", lambda e: _evalbag(e, "--image-topic", "/no/such/image"), "/no/such/image"),
    ("bag without the ground-truth topic", lambda e: _evalbag(e, "--gt-topic", "/no/such/pose"), "/no/such/pose"),
]


def test_the_sweep_covers_at_least_forty_kinds():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("kind, make, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly_and_loses_nothing(kind, make, names, good, tmp_path, capsys):
    good_map, good_data, good_bag = good
    e = Env(tmp_path, tmp_path / "map", tmp_path / "data", good_bag, tmp_path / "out")
    shutil.copytree(good_map, e.map)
    shutil.copytree(good_data, e.data)
    e.out.mkdir()
    (e.out / "keep.txt").write_text(SENTINEL)
    (e.out / "r.json").write_text(SENTINEL)
    before = sorted(p.name for p in e.out.iterdir())
    argv = make(e)
    try:
        code = main(argv)
    except SystemExit as ex:  # argparse's own usage errors
        code = ex.code
    err = capsys.readouterr().err
    assert code == 2, f"{kind}: exit {code}\n{err[-2000:]}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "neural-reloc: error:")) or ": error:" in ln]
    assert len(lines) == 1, f"{kind}: expected one error line, got:\n{err}"
    assert names in lines[0], f"{kind}: the message does not name {names!r}: {lines[0]}"
    # what was there is untouched; a failed run may only add beside it (x.failed.json, its own new folder)
    assert (e.out / "keep.txt").read_text() == SENTINEL and (e.out / "r.json").read_text() == SENTINEL
    added = sorted(set(p.name for p in e.out.iterdir()) - set(before))
    assert all(".failed." in n or n == "ev" for n in added), f"{kind}: unexpected output {added}"


def test_a_failed_localize_writes_beside_a_good_result(good, tmp_path, capsys):
    good_map, good_data, _ = good
    out = tmp_path / "r.json"
    assert main(["localize", "--map", str(good_map), "--data", str(good_data), "--out", str(out), "--limit", "2"]) == 0
    first = out.read_text()
    assert json.loads(first)["status"] == "ok"
    assert json.loads(first)["machine"]["device"] == "cpu"  # what the latencies were measured on
    broken = tmp_path / "data"
    shutil.copytree(good_data, broken)
    t = json.loads((broken / "transforms.json").read_text())
    test_frames = [f for f in t["frames"] if "test" in json.dumps(f)] or t["frames"]
    for f in t["frames"][1:]:  # the first query decodes, a later one does not
        (broken / f["file_path"]).write_bytes(b"not an image")
    del test_frames
    code = main(["localize", "--map", str(good_map), "--data", str(broken), "--out", str(out), "--split", "all"])
    assert code == 2 and "cannot decode image" in capsys.readouterr().err
    assert out.read_text() == first  # the earlier result is untouched
    failed = json.loads((tmp_path / "r.failed.json").read_text())
    assert failed["status"] == "error" and "cannot decode image" in failed["error"]


def test_a_failed_eval_bag_keeps_the_earlier_results(good, tmp_path, capsys):
    good_map, _, good_bag = good
    out = tmp_path / "ev"
    assert main(["eval-bag", "--bag", str(good_bag), "--map", str(good_map), "--out", str(out)]) == 0
    results, report = (out / "results.json").read_text(), (out / "report.html").read_bytes()
    code = main(["eval-bag", "--bag", str(good_bag), "--map", str(good_map), "--out", str(out),
                 "--image-topic", "/no/such/image"])
    assert code == 2
    assert (out / "results.json").read_text() == results and (out / "report.html").read_bytes() == report
    assert json.loads((out / "results.failed.json").read_text())["status"] == "error"


def test_build_map_refuses_a_folder_that_is_not_a_map_and_keeps_its_files(good, tmp_path):
    _, good_data, _ = good
    out = tmp_path / "X"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("precious")
    assert main(["build-map", "--method", "classical", "--data", str(good_data), "--out", str(out)]) == 2
    assert (out / "keep.txt").read_text() == "precious" and (out / "sub").is_dir()
    # a map built from other settings is replaced only with --overwrite
    m = tmp_path / "M"
    assert main(["build-map", "--method", "classical", "--data", str(good_data), "--out", str(m)]) == 0
    args = ["build-map", "--method", "classical", "--data", str(good_data), "--out", str(m),
            "--set", "retrieval.top_k=2"]
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0


def test_map_files_get_the_umask_mode_like_any_file(good):
    """safetensors writes 0600; a node running as another user must be able to read a map."""
    good_map, _, _ = good
    mask = os.umask(0o022)
    os.umask(mask)
    for f in good_map.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f"{f.name}: mode {oct(f.stat().st_mode & 0o777)}"


def test_unreadable_map_files_are_named_not_a_traceback(good, tmp_path, monkeypatch, capsys):
    """PermissionError (root ignores modes, so it is injected): one line naming the file."""
    import neural_reloc.map_bundle as mb

    good_map, good_data, _ = good
    real = Path.read_text

    def denied_manifest(self, *a, **k):
        if self.name == "manifest.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied_manifest)
    assert main(["localize", "--map", str(good_map), "--data", str(good_data)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json: permission denied" in err and "Traceback" not in err
    monkeypatch.undo()

    def denied_weights(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(mb, "sha256_file", denied_weights)
    assert main(["localize", "--map", str(good_map), "--data", str(good_data)]) == 2
    err = capsys.readouterr().err
    assert "classical.safetensors: permission denied" in err and "Traceback" not in err
