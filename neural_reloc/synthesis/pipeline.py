"""The descriptor-synthesis pipeline, end to end: real views -> synthetic poses -> one
rendered, matched and filtered view at a time -> ``summary.json`` and
``contact_sheet.png``.

Output folder::

    run.json            what the folder is a synthesis of (data, map, settings)
    poses.npz           the synthetic poses (w2c_opencv, source frame indices, fraction)
    views/real_0007.npz, views/synth_00123.npz    (see views.py)
    summary.json, contact_sheet.png

Resumable per synthetic view: each view file is written atomically when the view is
done (kept or rejected), and a rerun skips the views that have a file. Everything is
deterministic (nearest-pair order, non-randomized renders, features sorted by score
then position, references read back from their files), so a run that was stopped
and resumed keeps the same views as an uninterrupted one. A folder holding a
synthesis of other data, map or settings is refused, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config_fields import check_settings
from ..config_io import to_dict
from ..data.posed_images import PosedImages
from ..eval.io import check_output_dir, write_json_atomic
from .config import SynthesisConfig
from .contact_sheet import thumbnail, write_contact_sheet
from .features import ImageFeatures, make_extractor, make_matcher
from .poses import SynthesizedPoses, synthesize_poses
from .real_views import real_keypoint_views
from .synthetic_views import Reference, process_synthetic_view
from .views import VIEWS_DIR, read_view, view_file_name, write_view

RUN_FILE = "run.json"
POSES_FILE = "poses.npz"
SUMMARY_FILE = "summary.json"
CONTACT_SHEET_FILE = "contact_sheet.png"
#: Synthetic views whose render is kept as a thumbnail (contact sheet candidates), per
#: tile of the sheet.
CANDIDATES_PER_TILE = 4


def training_indices(data: PosedImages) -> list[int]:
    """The real views: the data's train split, or every frame when it has no splits."""
    return data.indices("train") if "train" in data.split else list(range(len(data)))


def _load_model(neural_map_or_map_dir, device):
    if isinstance(neural_map_or_map_dir, (str, Path)):
        from ..map_loading import load_neural_map

        return load_neural_map(neural_map_or_map_dir, device)
    return neural_map_or_map_dir


def map_identity(model) -> str:
    """Hash of the neural field's and density grid's tensors (not of heads other methods
    add): the geometry and colour that the synthesis renders."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if ".heads." not in name:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _claim(out_dir: Path, identity: dict) -> None:
    """Record what ``out_dir`` is a synthesis of; refuse a folder of another synthesis."""
    run = out_dir / RUN_FILE
    if run.is_file():
        try:
            old = json.loads(run.read_text())
        except ValueError:
            raise ValueError(f"{run}: unreadable; delete the folder {out_dir} to start again") from None
        if old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(f"{out_dir} holds a synthesis of other inputs (differs in {', '.join(diff)}); "
                             "give another output folder or delete this one")
        return
    if (out_dir / VIEWS_DIR).is_dir() and any((out_dir / VIEWS_DIR).iterdir()):
        raise ValueError(f"{out_dir}/{VIEWS_DIR} has files but no {RUN_FILE}; give another output folder")
    write_json_atomic(run, identity)


def _write_poses(path: Path, poses: SynthesizedPoses, train: list[int]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, w2c_opencv=poses.w2c_opencv, source_a=np.asarray(train)[poses.source_a],
             source_b=np.asarray(train)[poses.source_b], fraction=poses.fraction)
    tmp.replace(path)


def _references(views_dir: Path, data: PosedImages, train: list[int], model, extractor, matcher,
                cfg: SynthesisConfig, progress, log) -> dict[int, Reference]:
    """The real views' files (computed and written unless all exist), read back."""
    paths = [views_dir / view_file_name(False, i) for i in train]
    if not all(p.is_file() for p in paths):
        log(f"real views: features, 3D points and reliability of {len(train)} views")
        for view, p in zip(real_keypoint_views(model, data, train, extractor, matcher, cfg, progress), paths):
            write_view(p, view)
    refs = {}
    for i, p in zip(train, paths):
        v = read_view(p)
        refs[i] = Reference(i, data.camera(i), v.w2c_opencv, ImageFeatures(
            v.keypoints_px, v.descriptors, np.zeros(len(v), np.float32), v.width, v.height))
    return refs


def synthesize(neural_map_or_map_dir, data: PosedImages, out_dir: str | Path, cfg: SynthesisConfig | None = None,
               device="cpu", progress: Callable | None = None, log: Callable[[str], None] | None = None,
               limit: int | None = None) -> Path:
    """Synthesize keypoint views of ``data``'s training views into ``out_dir``; returns it.

    ``neural_map_or_map_dir``: a :class:`~neural_reloc.nerf.neural_map.NeuralMap` or a map
    folder. ``limit``: process at most this many synthetic views in this call (a later
    call continues); None = all.
    """
    cfg = check_settings(cfg or SynthesisConfig(), "synthesis settings")
    out_dir = check_output_dir(out_dir)
    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    model = _load_model(neural_map_or_map_dir, device)
    train = training_indices(data)
    extractor = make_extractor(cfg.features.extractor, cfg)
    matcher = make_matcher(cfg.features.extractor, cfg)
    settings = to_dict(cfg)
    identity = {"data": data.fingerprint(), "train_indices": train, "map": map_identity(model),
                "settings": {k: v for k, v in settings.items() if not k.startswith("contact_sheet")}}
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim(out_dir, identity)
    views_dir = out_dir / VIEWS_DIR
    views_dir.mkdir(exist_ok=True)

    t_real = time.perf_counter()
    refs = _references(views_dir, data, train, model, extractor, matcher, cfg, progress, log)
    t_real = time.perf_counter() - t_real
    poses = synthesize_poses(np.stack([data.w2c_opencv(i) for i in train]), cfg.poses)
    _write_poses(out_dir / POSES_FILE, poses, train)
    n = len(poses)
    thumb_every = max(1, n // max(1, CANDIDATES_PER_TILE * 2 * cfg.contact_sheet_views))
    todo = [m for m in range(n) if not (views_dir / view_file_name(True, m)).is_file()]
    log(f"synthetic views: {n} poses, {n - len(todo)} done before")
    if limit is not None:
        todo = todo[: max(0, int(limit))]
    timings = {"render": 0.0, "features": 0.0, "match": 0.0}
    t_loop = time.perf_counter()
    it = progress(todo, desc="synthetic views", total=len(todo)) if progress else todo
    for m in it:
        a, b = train[poses.source_a[m]], train[poses.source_b[m]]
        res = process_synthetic_view(model, f"synth_{m:05d}", data.camera(a), poses.w2c_opencv[m],
                                     (refs[a], refs[b]), extractor, matcher, cfg, time.perf_counter)
        for k, v in res.timings_s.items():
            timings[k] += v
        extra = {"num_matched": np.int64(res.num_matched)}
        if m % thumb_every == 0:
            extra["thumbnail"] = thumbnail(res.image_rgb, cfg.contact_sheet_tile_px)
        write_view(views_dir / view_file_name(True, m), res.view, extra)
    t_loop = time.perf_counter() - t_loop
    summary = _summary(out_dir, n, train, cfg, len(todo), timings, t_loop, t_real, time.perf_counter() - t_start)
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    log(f"synthesis: {summary['synthetic']['done']}/{n} synthetic views done, {summary['synthetic']['kept']} kept "
        f"-> {out_dir}")
    return out_dir


def _summary(out_dir: Path, n: int, train: list[int], cfg: SynthesisConfig, processed: int, timings: dict,
             t_loop: float, t_real: float, t_total: float) -> dict:
    views_dir = out_dir / VIEWS_DIR
    real = [read_view(views_dir / view_file_name(False, i)) for i in train]
    done, kept_kp, kept_rel, matches, sheet = 0, [], [], [], {True: [], False: []}
    for m in range(n):
        p = views_dir / view_file_name(True, m)
        if not p.is_file():
            continue
        done += 1
        with np.load(p) as z:
            kept = bool(z["kept"])
            matches.append(int(z["num_matched"]))
            if kept:
                kept_kp.append(int(z["keypoints_px"].shape[0]))
                kept_rel.append(int(z["reliable"].sum()))
            if "thumbnail" in z.files:
                sheet[kept].append({"image_rgb": z["thumbnail"], "name": p.stem, "kept": kept,
                                    "num_matched": int(z["num_matched"]), "num_matches": z["num_matches"]})
    entries = []
    for kept in (True, False):
        c = sheet[kept]
        if c and cfg.contact_sheet_views:
            pick = np.unique(np.linspace(0, len(c) - 1, min(len(c), cfg.contact_sheet_views)).round().astype(int))
            entries += [c[i] for i in pick]
    sheet_path = write_contact_sheet(out_dir / CONTACT_SHEET_FILE, entries) if cfg.contact_sheet_views else None
    real_kp = [len(v) for v in real]
    stats = lambda xs: {"mean": float(np.mean(xs)) if xs else 0.0, "median": float(np.median(xs)) if xs else 0.0}
    return {
        "complete": done == n,
        "real": {"views": len(real), "keypoints": stats(real_kp), "reliable_fraction":
                 float(sum(int(v.reliable.sum()) for v in real) / max(1, sum(real_kp)))},
        "synthetic": {"generated": n, "done": done, "kept": len(kept_kp), "rejected": done - len(kept_kp),
                      "kept_ratio": len(kept_kp) / max(1, done), "keypoints_per_kept_view": stats(kept_kp),
                      "reliable_per_kept_view": stats(kept_rel), "matched_keypoints_per_view": stats(matches)},
        "this_run": {"synthetic_views_processed": processed, "views_rendered_per_s":
                     processed / timings["render"] if timings["render"] > 0 else None,
                     "views_per_s": processed / t_loop if t_loop > 0 and processed else None,
                     "seconds": {"real_views": round(t_real, 3), "synthetic_views": round(t_loop, 3),
                                 "total": round(t_total, 3), **{k: round(v, 3) for k, v in timings.items()}}},
        "extractor": {"name": cfg.features.extractor, "settings": to_dict(cfg.features)},
        "settings": to_dict(cfg),
        "contact_sheet": str(sheet_path) if sheet_path else None,
    }


__all__ = ["CONTACT_SHEET_FILE", "SUMMARY_FILE", "synthesize", "training_indices"]
