#!/usr/bin/env python3
"""Render latency of a map: depth + a feature map at a given resolution.

    python scripts/bench_render.py --map MAP [--size 160x120] [--outputs depth,geo_feat]
        [--samples 24] [--repeats 20] [--device auto]

Renders at the map's reference poses (cycling), after two warm-up renders; prints the
median / p95 wall time per view. Keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import numpy as np
    import torch

    from neural_reloc.device import resolve_device
    from neural_reloc.geometry.camera import Camera
    from neural_reloc.map_bundle import read_map
    from neural_reloc.map_loading import load_neural_map

    ap = argparse.ArgumentParser()
    ap.add_argument("--map", required=True)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--outputs", default="depth,geo_feat")
    ap.add_argument("--samples", type=int, default=0, help="fine samples per ray (0: the map's default)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    bundle = read_map(args.map)
    model = load_neural_map(bundle, device)
    w, h = (int(v) for v in args.size.lower().split("x"))
    refs = bundle.references
    outputs = tuple(o for o in args.outputs.split(",") if o)
    times = []
    for k in range(args.repeats + 2):
        i = k % len(refs.names)
        cam = Camera.from_dict(refs.cameras[i]).fit_within(max(w, h), min(w, h))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.render_view(cam, refs.c2w_opengl[i], outputs, num_fine=args.samples or None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    res = {
        "map": args.map, "device": str(device), "threads": torch.get_num_threads(), "size": [cam.width, cam.height],
        "outputs": {o: list(v.shape) for o, v in out.items()}, "samples": args.samples or model.cfg.sampler.num_fine,
        "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
