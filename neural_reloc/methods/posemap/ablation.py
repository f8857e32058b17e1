"""The paper's Table 5 on one map, in one command (``scripts/ablate_posemap.sh``):

    python -m neural_reloc.methods.posemap.ablation --map M --data D --out DIR [--set KEY=VALUE ...]

NeRF-P's pose branch and the cached renders are made once (on the map's frozen field),
then APR-Net is trained four times from the same seed: L_pose only; + L_image; + L_rvs;
+ L_posemap (the full model), and the full model is aligned on the test split's images
without their poses (PMNet_ud), and with ``--set align.teacher=METHOD`` also with that
method of the map as the teacher (its fixes as the poses; the held-out images evaluated
apart as well). Each is evaluated on the test split: median error,
recall at (5 cm, 5 deg) and (10 cm, 10 deg), APR latency per frame (batch 1, this
process's torch threads). Results go to DIR/ablation.json after each experiment (a
rerun skips the finished ones); nothing is written to the map.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...config_io import load_method_config, to_dict
from ...data import load_dataset
from ...eval.io import write_json_atomic
from ...geometry.frames import opencv_c2w_from_opencv_w2c
from ...geometry.se3 import pose_error
from ...map_bundle import read_map
from ...map_loading import load_neural_map
from ...nerf.train import atomic_torch_save
from .alignment import align
from .apr_net import AprNet, apr_camera, apr_input, to_tensor
from .config import PoseMapConfig
from .pose_branch import PoseMapDecoder, attach_pose_head
from .trainer import labelled_key, teacher_from_bundle
from .training import ViewCache, cache_identity, render_views, train_apr, train_pose_branch, validate
from .unlabeled import teacher_poses

#: (name, L_image, L_rvs, L_posemap) weights on top of L_pose, as the paper's Table 5 rows.
EXPERIMENTS = (("pose", 0, 0, 0), ("pose+image", 1, 0, 0), ("pose+image+rvs", 1, 1, 0),
               ("pose+image+rvs+posemap", 1, 1, 1))
#: Recall thresholds reported (metres, degrees).
RECALLS = ((0.05, 5.0), (0.10, 10.0), (0.50, 10.0))


def evaluate(apr: AprNet, data, indices: list[int], cfg: PoseMapConfig) -> dict:
    apr.eval()
    errs, ms = [], []
    with torch.no_grad():
        for i in indices:
            img, cam = data.image(i), data.camera(i)
            t0 = time.perf_counter()
            c = apr_camera(cam, cfg.apr.image_long_side, apr.num_blocks)
            est = apr(to_tensor(apr_input(img, c)))[0].double().numpy()
            ms.append((time.perf_counter() - t0) * 1000)
            errs.append(pose_error(est, opencv_c2w_from_opencv_w2c(data.w2c_opencv(i))))
    e = np.array(errs)
    out = {"frames": len(indices), "median_t_m": float(np.median(e[:, 0])), "median_r_deg": float(np.median(e[:, 1])),
           "latency_ms_p50": float(np.median(ms))}
    for t, r in RECALLS:
        out[f"recall_{int(t * 100)}cm_{int(r)}deg"] = float(np.mean((e[:, 0] <= t) & (e[:, 1] <= r)))
    return out


def run(map_dir: Path, data_dir: Path, out: Path, overrides: list[str], log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_method_config("posemap", None, overrides)
    data = load_dataset(data_dir)
    train, test = data.subset("train"), data.indices("test")
    bundle = read_map(map_dir)
    model = load_neural_map(bundle)
    for p in model.parameters():
        p.requires_grad_(False)
    head = attach_pose_head(model, cfg.posemap)
    decoder = PoseMapDecoder(cfg.posemap)
    # The trained rows do not depend on the alignment's settings; the aligned rows keep theirs.
    ident = {"map": str(map_dir.resolve()), "config": labelled_key(to_dict(cfg)), "data": train.fingerprint()}
    # Each aligned row keeps the alignment settings it reads: the paper's all but the teacher's, the teacher's
    # all but the paper's schedule.
    align_all = to_dict(cfg)["align"]
    paper_cfg = {k: v for k, v in align_all.items() if not k.startswith("teacher")}
    teacher_cfg = {k: v for k, v in align_all.items() if k not in ("steps", "rounds", "lr")}
    branch = out / "nerf_p.pt"
    ck = torch.load(branch, weights_only=True) if branch.is_file() else {}
    if ck.get("ident") == {**ident, "config": to_dict(cfg)["posemap"]}:
        head.load_state_dict(ck["head"])
        decoder.load_state_dict(ck["decoder"])
        nerf_p = ck["summary"]
    else:
        for p in head.parameters():
            p.requires_grad_(True)
        nerf_p = train_pose_branch(model, head, decoder, train, cfg, "cpu", log=log)
        for p in head.parameters():
            p.requires_grad_(False)
        atomic_torch_save({"ident": {**ident, "config": to_dict(cfg)["posemap"]}, "head": head.state_dict(),
                           "decoder": decoder.state_dict(), "summary": nerf_p}, branch)
    views = out / "views.pt"
    vid = cache_identity(cfg, train)
    ck = torch.load(views, weights_only=True) if views.is_file() else {}
    if ck.get("ident") == vid:
        cache = ViewCache(**ck["cache"])
    else:
        t0 = time.perf_counter()
        cache = render_views(model, train, cfg)
        log(f"renders: {time.perf_counter() - t0:.0f} s")
        atomic_torch_save({"ident": vid, "cache": cache.state()}, views)
    cams = [train.camera(i).resized(cache.real.shape[2], cache.real.shape[1]) for i in range(len(train))]
    path = out / "ablation.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("ident") != ident:
        results = {"ident": ident, "nerf_p": {k: v for k, v in nerf_p.items() if k != "history"}, "experiments": {}}
    exps = results["experiments"]
    full = None
    for name, wi, wr, wp in EXPERIMENTS:
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, image_weight=wi * cfg.train.image_weight,
                                                                rvs_weight=wr * cfg.train.rvs_weight,
                                                                posemap_weight=wp * cfg.train.posemap_weight))
        weights_file = out / f"apr_{name}.pt"
        if name in exps and weights_file.is_file():
            if wp:
                full = AprNet(cfg.apr)
                full.load_state_dict(torch.load(weights_file, weights_only=True))
            continue
        apr = AprNet(cfg.apr)
        s = train_apr(apr, model, cache, cams, c, "cpu", log=log)
        exps[name] = {"train_s": s["seconds"], "last": s["history"][-1] if s["history"] else {},
                      **validate(apr, cache, "cpu"), **evaluate(apr, data, test, cfg)}
        atomic_torch_save(apr.state_dict(), weights_file)
        write_json_atomic(path, results)
        log(f"{name}: {json.dumps({k: v for k, v in exps[name].items() if k != 'last'})}")
        full = apr
    images = np.stack([apr_input(data.image(i), data.camera(i).resized(cache.real.shape[2], cache.real.shape[1]))
                       for i in test]) if test else None
    test_cams = [data.camera(i).resized(cache.real.shape[2], cache.real.shape[1]) for i in test]
    full_file = out / f"apr_{EXPERIMENTS[-1][0]}.pt"  # the full model before any alignment
    if cfg.align.teacher and test and full_file.is_file():
        name = f"pose+image+rvs+posemap, aligned with a teacher ({cfg.align.teacher}) on the test images (no poses)"
        if exps.get(name, {}).get("align") != teacher_cfg:
            apr = AprNet(cfg.apr)
            apr.load_state_dict(torch.load(full_file, weights_only=True))
            teacher = teacher_from_bundle(bundle, cfg.align.teacher, "cpu")
            teacher_c2w_opencv = teacher_poses(teacher, [(data.image(i), data.camera(i)) for i in test])
            teacher.close()
            s = align(apr, model, images, test_cams, cfg, "cpu", log=log, teacher_c2w_opencv=teacher_c2w_opencv,
                      labelled=(cache.real.numpy(), cache.c2w_opencv.double().numpy()))
            held = [test[k] for k in s["teacher"]["held_out"]]
            exps[name] = {"align": teacher_cfg, "align_s": s["seconds"], "teacher": s["teacher"],
                          **validate(apr, cache, "cpu"),
                          **evaluate(apr, data, test, cfg),
                          "held_out": evaluate(apr, data, held, cfg) if held else {}}
            write_json_atomic(path, results)
            log(f"{name}: {json.dumps(exps[name])}")
    name = "pose+image+rvs+posemap, aligned on the test images (no poses)"
    if exps.get(name, {}).get("align") != paper_cfg and full is not None and test:
        s = align(full, model, images, test_cams, cfg, "cpu", log=log)  # the paper's: at APR-Net's own guesses
        exps[name] = {"align": paper_cfg, "align_s": s["seconds"], **validate(full, cache, "cpu"),
                      **evaluate(full, data, test, cfg)}
        write_json_atomic(path, results)
        log(f"{name}: {json.dumps(exps[name])}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--map", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="posemap config overrides")
    a = p.parse_args(argv)
    res = run(a.map, a.data, a.out, a.set)
    print(f"{'experiment':<64} {'median':>16} {'5cm/5deg':>9} {'10cm/10deg':>10} {'ms':>6}")
    rows = []
    for name, e in res["experiments"].items():
        rows.append((name, e))
        if e.get("held_out"):  # a teacher's row: its held-out frames apart
            rows.append((f"  its {e['held_out']['frames']} held-out frames", e["held_out"]))
    for name, e in rows:
        print(f"{name[:64]:<64} {100 * e['median_t_m']:7.1f} cm {e['median_r_deg']:5.2f} deg {100 * e['recall_5cm_5deg']:8.1f}% "
              f"{100 * e['recall_10cm_10deg']:9.1f}% {e['latency_ms_p50']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
