"""A method's config fitted to its mapping data (``MethodSpec.fit_config``) is what the
build uses and what the map's manifest stores, for ``build-map`` and ``add-method``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from neural_reloc.data.posed_images import PosedImages
from neural_reloc.geometry.camera import Camera
from neural_reloc.map_bundle import ReferenceViews
from neural_reloc.mapping import build_map
from neural_reloc.methods.registry import BuiltMap, MethodSpec, register, unregister


@dataclass
class ProbeGrid:
    cells: int = 160
    newer: int = 1  # a setting younger than some maps


@dataclass
class ProbeConfig:
    grid: ProbeGrid = field(default_factory=ProbeGrid)


SEEN: list[int] = []


def _fit(cfg: ProbeConfig, data, log=print) -> ProbeConfig:
    width = min(data.camera(i).width for i in range(len(data)))
    return dataclasses.replace(cfg, grid=dataclasses.replace(cfg.grid, cells=min(cfg.grid.cells, width // 4)))


def _build(data, cfg, device, work_dir, progress=None, log=print):
    SEEN.append(cfg.grid.cells)
    refs = ReferenceViews(list(data.names), [data.camera(i).to_dict() for i in range(len(data))], data.c2w_opengl)
    return BuiltMap(modules={"probe": {"probe.unused": torch.zeros(1)}}, scene={"mode": "none"}, references=refs)


def _add(bundle, data, cfg, device, work_dir, progress=None, log=print):
    SEEN.append(cfg.grid.cells)
    return {"fit_probe_part": {"fit_probe_part.unused": torch.zeros(1)}}, {}


@pytest.fixture
def probe():
    register(MethodSpec(name="fit_probe", description="test: a config fitted to its data",
                        config_factory=ProbeConfig, build=_build, fit_config=_fit))
    register(MethodSpec(name="fit_probe_part", description="test: a component fitted to its data",
                        config_factory=ProbeConfig, build=_build, fit_config=_fit, add_to_map=_add))
    SEEN.clear()
    yield
    unregister("fit_probe")
    unregister("fit_probe_part")


def _data(tmp_path, width: int) -> PosedImages:
    return PosedImages(names=[f"f{i}" for i in range(3)], image_paths=[tmp_path / f"f{i}.png" for i in range(3)],
                       cameras=[Camera(width, width * 3 // 4, width, width, width / 2, width * 3 / 8)] * 3,
                       c2w_opengl=np.stack([np.eye(4)] * 3), source=str(tmp_path))


def test_build_map_uses_and_stores_the_fitted_config_and_a_rerun_skips(probe, tmp_path):
    logs: list[str] = []
    out = build_map(_data(tmp_path, 320), tmp_path / "map", method="fit_probe", evaluate=False, log=logs.append)
    manifest = json.loads((out / "manifest.json").read_text())
    assert SEEN == [80] and manifest["config"]["grid"]["cells"] == 80
    build_map(_data(tmp_path, 320), tmp_path / "map", method="fit_probe", evaluate=False, log=logs.append)
    assert SEEN == [80] and "up to date" in logs[-1]
    build_map(_data(tmp_path, 1280), tmp_path / "big", method="fit_probe", evaluate=False, log=logs.append)
    assert SEEN == [80, 160]


def test_add_method_uses_and_stores_the_fitted_config(probe, tmp_path):
    from neural_reloc.mapping import add_method

    base = build_map(_data(tmp_path, 1280), tmp_path / "map", method="fit_probe", evaluate=False, log=lambda m: None)
    logs: list[str] = []
    add_method(base, "fit_probe_part", _data(tmp_path, 320), log=logs.append)
    manifest = json.loads((base / "manifest.json").read_text())
    assert SEEN == [160, 80] and manifest["components"]["fit_probe_part"]["config"]["grid"]["cells"] == 80
    add_method(base, "fit_probe_part", _data(tmp_path, 320), log=logs.append)
    assert SEEN == [160, 80] and "nothing to do" in logs[-1]


def test_a_map_older_than_a_setting_is_still_up_to_date(probe, tmp_path):
    out = build_map(_data(tmp_path, 320), tmp_path / "map", method="fit_probe", evaluate=False, log=lambda m: None)
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["grid"]["newer"]  # as written before the setting existed
    path.write_text(json.dumps(manifest))
    logs: list[str] = []
    build_map(_data(tmp_path, 320), out, method="fit_probe", evaluate=False, log=logs.append)
    assert SEEN == [80] and "up to date" in logs[-1]


def test_add_method_without_data_fits_to_the_maps_own_views(probe, tmp_path):
    from neural_reloc.mapping import add_method

    base = build_map(_data(tmp_path, 320), tmp_path / "map", method="fit_probe", evaluate=False, log=lambda m: None)
    add_method(base, "fit_probe_part", _data(tmp_path, 320), log=lambda m: None)
    logs: list[str] = []
    add_method(base, "fit_probe_part", None, log=logs.append)  # the map's 320 px views: fitted to 80 as stored
    assert SEEN == [80, 80] and "nothing to do" in logs[-1]
