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

from .config_io import to_dict
from .data.posed_images import PosedImages
from .map_bundle import MapBundle, MapError, ReferenceViews, map_size_bytes, read_manifest, read_map, write_map
from .methods.registry import get_method
from .nerf.config import NeuralMapConfig
from .nerf.neural_map import NeuralMap
from .nerf.scene import SceneNormalization
from .nerf.train import evaluate_views


def partial_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def _identity(data: PosedImages, method: str, cfg: Any) -> dict:
    return {"method": method, "config": to_dict(cfg), "fingerprint": data.fingerprint()}


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
) -> Path:
    """Build (or find, or resume) the map of ``data``'s train split; return its path."""
    spec = get_method(method)
    cfg = config if config is not None else spec.config_factory()
    device = torch.device(device)
    out_dir = Path(out_dir)
    train = data.subset("train") if "train" in data.split else data
    ident = _identity(train, method, cfg)
    if out_dir.exists():
        try:
            man = read_manifest(out_dir)
            if (
                man.get("method") == method
                and man.get("config") == ident["config"]
                and man.get("training_data_fingerprint") == ident["fingerprint"]
            ):
                log(f"map {out_dir} is up to date (same data and config): skipping the build")
                return out_dir
            log(f"map {out_dir} exists but was built from other data or config: rebuilding")
        except MapError as e:
            log(f"existing {out_dir} is not a usable map ({e}): rebuilding")
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


def load_neural_map(bundle: MapBundle | str | Path, device: torch.device | str = "cpu") -> NeuralMap:
    """The :class:`NeuralMap` of a map bundle (any method with one), on ``device``, in eval mode."""
    from .config_io import from_dict

    if not isinstance(bundle, MapBundle):
        bundle = read_map(bundle)
    man = bundle.manifest
    spec = get_method(man["method"])
    if spec.trainer_factory is None:
        raise MapError(f"{bundle.path}: a {spec.name!r} map has no neural map (nothing to render)")
    cfg = from_dict(NeuralMapConfig, man.get("map_config", man["config"]))
    scene = SceneNormalization.from_dict(man["scene"])
    refs = bundle.references
    model = NeuralMap(cfg, scene, num_images=len(refs.names))
    if spec.attach_heads is not None:
        spec.attach_heads(model, man["config"])
    state = bundle.module_state("map")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MapError(f"{bundle.path}: weights do not match the map's config: {e}") from e
    return model.to(device).eval()


def describe_map(path: str | Path) -> dict:
    """Summary of a map for ``neural-reloc info``."""
    man = read_manifest(path)
    tr = man.get("training", {})
    return {
        "path": str(path),
        "method": man["method"],
        "format_version": man["format_version"],
        "neural_reloc_version": man.get("neural_reloc_version"),
        "created_unix": man.get("created_unix"),
        "size_mb": round(map_size_bytes(path) / 1e6, 2),
        "scene": man["scene"],
        "reference_views": len(man["reference_views"]["names"]),
        "training": {k: v for k, v in tr.items() if k != "history"},
        "metrics": {k: v for k, v in man.get("metrics", {}).items() if k != "per_view"},
        "training_data_fingerprint": man.get("training_data_fingerprint"),
    }
