#!/usr/bin/env python3
"""Per-frame latency of the kscr regressor (issue 15's target: <= 100 ms at 640x480 with
1024 keypoints on the CPU): keypoint extraction, D2S regression and PnP + RANSAC, timed
separately over several frames.

Latency does not depend on what the weights have learned, so the D2S model is the
config's (default: the paper's 5 attention layers and 512-1024-1024-512 MLP) with
random weights, unless ``--map`` names a bundle with a trained kscr component. PnP is
timed on correspondences made from the keypoints with a known pose and 50% outliers,
the case a trained model meets.

    python scripts/bench_kscr.py --image ../shared/data/fox/images/IMG.jpg
    python scripts/bench_kscr.py --image I --map M --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.pnp import pnp_ransac
from neural_reloc.methods.kscr.config import KscrConfig
from neural_reloc.methods.kscr.relocalizer import KscrRelocalizer
from neural_reloc.methods.kscr.trainer import make_model


def _percentiles(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, help="A textured photo (resized to --width x --height).")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--map", help="Bundle with a trained kscr component (default: the config's model, random weights).")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{args.image}: not a readable image")
    rgb = cv2.cvtColor(cv2.resize(bgr, (args.width, args.height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    device = torch.device(args.device)
    if args.map:
        from neural_reloc.map_bundle import read_map

        reloc = KscrRelocalizer.from_bundle(read_map(args.map), device)
    else:  # the config's model; one reference camera only feeds the (untimed) plausibility check
        cfg = KscrConfig()
        reloc = KscrRelocalizer(make_model(cfg, 128).to(device), cfg, ["reference"], np.eye(4)[None])
    cfg = reloc.cfg
    f = 0.9 * args.width
    camera = Camera(args.width, args.height, f, f, args.width / 2, args.height / 2)

    times: dict[str, list[float]] = {"extract": [], "regress": [], "pnp": [], "total": []}
    rng = np.random.default_rng(0)
    for i in range(args.frames + 3):  # 3 warm-up frames
        kp, _, rel, lat = reloc.regress(rgb)  # the relocalizer's own extraction + D2S, timed inside
        # PnP on the keypoints back-projected at random depths with the identity pose, half replaced by outliers
        rays = np.c_[(kp - [camera.cx, camera.cy]) / [camera.fx, camera.fy], np.ones(len(kp))]
        points = rays * rng.uniform(1.0, 4.0, (len(kp), 1))
        bad = rng.random(len(kp)) < 0.5
        points[bad] += rng.normal(0, 1.0, (int(bad.sum()), 3))
        order = np.argsort(-rel)[: cfg.localization.max_correspondences]
        t0 = time.perf_counter()
        pnp = pnp_ransac(np.asarray(kp, np.float64)[order], points[order], camera, cfg.localization.pnp)
        lat["pnp"] = (time.perf_counter() - t0) * 1e3
        if i >= 3:
            lat["total"] = lat["extract"] + lat["regress"] + lat["pnp"]
            for k in times:
                times[k].append(lat[k])
    print(json.dumps({
        "image": f"{args.width}x{args.height}", "keypoints": int(len(kp)), "device": str(device),
        "torch_threads": torch.get_num_threads(), "model": "trained" if args.map else "config default (random weights)",
        "pnp_success": bool(pnp.success), "latency_ms": {k: _percentiles(v) for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
