"""Map building as a pipeline step (hloc style): typed inputs, returns where it wrote.

``build_map`` trains the method's map from the train split of a posed dataset and
writes a map bundle atomically. A rerun with the same data and config finds the
finished map and returns at once; an interrupted run resumes from its last
checkpoint (kept in a hidden ``.<name>.partial`` directory next to the map).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .config_fields import check_settings
from .config_io import ConfigError, from_dict, to_dict
from .data.posed_images import PosedImages
from .map_bundle import MapError, ReferenceViews, map_size_bytes, read_manifest, write_map
from .methods.registry import get_method
from .nerf.train import evaluate_views


def partial_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def _identity(data: PosedImages, method: str, cfg: Any) -> dict:
    return {"method": method, "config": to_dict(cfg), "fingerprint": data.fingerprint()}


def build_config_key(config: dict) -> dict:
    """What of a method config decides a build: all but the ``localization`` section
    (run-time settings, stored with the map as its defaults but never a reason to
    retrain it)."""
    return {k: v for k, v in config.items() if k != "localization"}


def filled_config(spec, config: dict) -> dict:
    """A stored method config with the settings it predates at this version's defaults, so
    that a map built before a setting existed does not count as built otherwise (as it
    loads: :func:`~neural_reloc.map_loading.map_method_config`); as it is when this
    version cannot read it."""
    try:
        return to_dict(from_dict(type(spec.config_factory()), config))
    except (ConfigError, TypeError):
        return config


def build_map(
    data: PosedImages,
    out_dir: str | Path,
    method: str = "nerf",
    config: Any | None = None,
    device: torch.device | str = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
    evaluate: bool = True,
    max_eval_views: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build (or find, or resume) the map of ``data``'s train split; return its path.

    ``out_dir`` must be missing, empty or a map: anything else is refused (MapError),
    never deleted. A map built from the same data and build settings is kept (skip); one
    built from others is replaced only with ``overwrite``."""
    spec = get_method(method)
    cfg = check_settings(config if config is not None else spec.config_factory(), f"{method} config")
    device = torch.device(device)
    out_dir = Path(out_dir)
    train = data.subset("train") if "train" in data.split else data
    if spec.fit_config is not None:
        cfg = check_settings(spec.fit_config(cfg, train, log), f"{method} config fitted to {data.source}")
    ident = _identity(train, method, cfg)
    _check_map_destination(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        try:
            man = read_manifest(out_dir)
            built = filled_config(spec, man.get("config", {}))
            if (
                man.get("method") == method
                and build_config_key(built) == build_config_key(ident["config"])
                and man.get("training_data_fingerprint") == ident["fingerprint"]
            ):
                if built != ident["config"]:
                    log(f"map {out_dir} is up to date (same data and build settings; its stored localization "
                        "settings differ from these, pass them at run time): skipping the build")
                else:
                    log(f"map {out_dir} is up to date (same data and config): skipping the build")
                return out_dir
        except MapError as e:
            raise MapError(
                f"--out {out_dir}: exists and is not a map ({e}); refusing to replace it: give a new or empty "
                "directory"
            ) from None
        if not overwrite:
            raise MapError(
                f"--out {out_dir}: a map built from other data or build settings is there; pass --overwrite to "
                "replace it, or give another directory"
            )
        log(f"map {out_dir} exists but was built from other data or config: rebuilding (--overwrite)")
    work = partial_dir(out_dir)
    if spec.build is not None:
        return _build_without_training(spec, data, train, out_dir, cfg, ident, device, progress, log)
    t0 = time.perf_counter()
    trainer = spec.trainer_factory(train, cfg, device, work, progress=progress, log=log)
    state = trainer.fit()
    train_s = time.perf_counter() - t0
    metrics: dict = {}
    if evaluate and "test" in data.split:
        test = data.subset("test").with_max_size(spec.map_config(cfg).train.max_image_size)
        idx = list(range(len(test)))
        if max_eval_views and len(idx) > max_eval_views:
            step = len(idx) / max_eval_views
            idx = [int(i * step) for i in range(max_eval_views)]
        t1 = time.perf_counter()
        res = evaluate_views(trainer.model, test, idx, progress)
        metrics = {k: v for k, v in res.items() if k != "views"}
        metrics["num_views"] = len(idx)
        metrics["eval_s"] = time.perf_counter() - t1
        metrics["per_view"] = res["views"]
    references = ReferenceViews(
        names=list(trainer.data.names),
        cameras=[c.to_dict() for c in trainer.data.cameras],
        c2w_opengl=trainer.data.c2w_opengl,
    )
    write_map(
        out_dir,
        method=method,
        modules=trainer.modules_to_save(),
        config=ident["config"],
        scene=trainer.scene.to_dict(),
        references=references,
        fingerprint=ident["fingerprint"],
        field_config=to_dict(spec.map_config(cfg)),
        component=spec.relocalizer_factory is not None,
        component_version=spec.version,
        extra={
            "map_config": to_dict(spec.map_config(cfg)),
            "training": {
                "steps": state.step,
                "train_s": round(train_s, 2),
                "device": str(device),
                "dataset": data.source,
                "num_train_images": len(train),
                "image_size": [trainer.data.camera(0).width, trainer.data.camera(0).height],
                "history": state.history,
            },
            "metrics": metrics,
        },
    )
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out_dir} ({map_size_bytes(out_dir) / 1e6:.1f} MB) after {train_s:.0f} s of training")
    return out_dir


def _check_map_destination(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise MapError(f"--out {out_dir}: is a file; a map is a directory")
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise MapError(f"--out {out_dir}: {existing} is a file, not a folder")


def _build_without_training(spec, data, train, out_dir, cfg, ident, device, progress, log) -> Path:
    """``build_map`` for a method with a ``build`` function instead of a trainer (see
    :class:`~neural_reloc.methods.registry.MethodSpec`): no neural map, no held-out
    rendering metrics; the manifest's ``training`` has the build time, the image
    counts and the method's own entries."""
    work = partial_dir(out_dir)
    t0 = time.perf_counter()
    built = spec.build(train, cfg, device, work, progress=progress, log=log)
    train_s = time.perf_counter() - t0
    cam0 = built.references.cameras[0]
    write_map(
        out_dir,
        method=spec.name,
        modules=built.modules,
        config=ident["config"],
        scene=built.scene,
        references=built.references,
        fingerprint=ident["fingerprint"],
        component_version=spec.version,
        extra={
            "training": {
                "train_s": round(train_s, 2),
                "device": str(device),
                "dataset": data.source,
                "num_train_images": len(train),
                "image_size": [cam0["width"], cam0["height"]],
                **built.info,
            },
            "metrics": {},
        },
    )
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out_dir} ({map_size_bytes(out_dir) / 1e6:.1f} MB) after {train_s:.1f} s of building")
    return out_dir


def add_method(
    map_dir: str | Path,
    method: str,
    data: PosedImages | None,
    config: Any | None = None,
    device: torch.device | str = "cpu",
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
    out_dir: str | Path | None = None,
    unlabeled: str | Path | None = None,
) -> Path:
    """Train ``method``'s component on the existing map's frozen field and write the
    map (atomically; to ``out_dir``, default in place) with it beside the components
    it already has; returns where it wrote. A map that already has this component with
    the same build settings is left as it is (unless ``unlabeled`` is given).

    ``unlabeled``: images without poses (a folder, a dataset, a bag) for a method whose
    ``add_to_map`` takes them (PoseMap's self-supervised alignment); passed on only
    when given, and a method that does not take them is an error."""
    from .map_bundle import (
        FIELD_FILE,
        component_file,
        component_tensors,
        flatten_modules,
        read_map,
        split_field,
        write_bundle,
    )

    spec = get_method(method)
    if spec.add_to_map is None:
        raise ValueError(f"method {method!r} cannot be added to an existing map: build one with "
                         f"`neural-reloc build-map --method {method}`")
    extra = {}
    if unlabeled is not None:
        import inspect

        if "unlabeled" not in inspect.signature(spec.add_to_map).parameters:
            raise ValueError(f"method {method!r} does not take unlabeled images (--unlabeled)")
        extra["unlabeled"] = unlabeled
    map_dir = Path(map_dir)
    out_dir = Path(out_dir) if out_dir is not None else map_dir
    bundle = read_map(map_dir)
    man = bundle.manifest
    cfg = config if config is not None else spec.config_factory()
    train = None if data is None else (data.subset("train") if "train" in data.split else data)
    if spec.fit_config is not None:  # without --data, fitted to the images the map was built from
        fit_to = train if train is not None else bundle.references
        cfg = check_settings(spec.fit_config(cfg, fit_to, log), f"{method} config fitted to its mapping images")
    stored = to_dict(cfg)
    if bundle.has_field and "map" in stored:  # the field it is trained on, not a default one
        stored["map"] = man["field"]["config"]
    existing = man["components"].get(method)
    if (existing is not None and build_config_key(filled_config(spec, existing["config"]))
            == build_config_key(filled_config(spec, stored)) and not extra):
        stale = spec.stale_component(bundle, cfg) if spec.stale_component is not None else ""
        if not stale:
            log(f"map {map_dir} already has a {method} component with these build settings: nothing to do")
            if out_dir != map_dir:
                write_bundle(out_dir, {k: v for k, v in man.items() if k not in ("files", "format_version")},
                             _current_files(bundle))
            return out_dir
        log(f"map {map_dir} has a {method} component with these build settings, but {stale}: rebuilding it from its "
            "trained weights")
        extra["reuse_trained"] = True
    if data is None:
        raise ValueError(f"add-method {method}: give the mapping images (--data) the component is trained on")
    if train.fingerprint() != man.get("training_data_fingerprint"):
        log(f"note: {data.source} is not the data {map_dir} was built from (other fingerprint); its poses must be "
            "in the map's frame")
    work = partial_dir(out_dir).with_name(partial_dir(out_dir).name + f"-{method}")
    t0 = time.perf_counter()
    modules, info = spec.add_to_map(bundle, train, cfg, torch.device(device), work, progress=progress, log=log, **extra)
    train_s = time.perf_counter() - t0
    _, comp = split_field(flatten_modules(modules))  # the field is frozen: its file is kept as it is
    others = {k for name in man["components"] if name != method for k in component_tensors(bundle, name)}
    clash = sorted(set(comp) & others)
    if clash:
        raise ValueError(f"method {method!r}: tensor names {clash[:3]} are already used by another component of the map")
    files = {n: t for n, t in _current_files(bundle).items() if n != component_file(method)}
    files[component_file(method)] = comp
    manifest = {k: v for k, v in man.items() if k not in ("files", "format_version", "upgraded_from_format_version")}
    if bundle.has_field:
        manifest["field"] = {**man["field"], "file": FIELD_FILE}
    manifest["components"] = {n: {**c, "file": component_file(n)} for n, c in man["components"].items() if n != method}
    manifest["components"][method] = {
        "method": method, "version": spec.version, "config": stored, "file": component_file(method),
        "created_unix": time.time(),
        "training": {"train_s": round(train_s, 2), "device": str(device), "dataset": data.source,
                     "num_train_images": len(train), **info},
    }
    write_bundle(out_dir, manifest, files)
    shutil.rmtree(work, ignore_errors=True)
    log(f"added {method} to {out_dir} ({map_size_bytes(out_dir) / 1e6:.1f} MB) after {train_s:.0f} s of training")
    return out_dir


def _current_files(bundle) -> dict:
    """A bundle's tensors as version 2 files: the field, then each component."""
    from .map_bundle import FIELD_FILE, component_file, component_tensors, field_tensors

    man = bundle.manifest
    files: dict = {}
    if bundle.has_field:  # a format-2 field file is copied byte for byte; format 1 is split
        own = man["field"]["file"] == FIELD_FILE
        files[FIELD_FILE] = bundle.path / FIELD_FILE if own else field_tensors(bundle)
    for name, entry in bundle.components.items():
        own = entry["file"] == component_file(name)
        files[component_file(name)] = bundle.path / entry["file"] if own else component_tensors(bundle, name)
    return files
