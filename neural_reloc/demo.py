"""The demo (README's first command): the whole job on a realistic room, side by side
with the classical pipeline.

1. generate a furnished room (seed 0): plain walls, furniture, a window; a mapping walk
   and query walks 10-50 cm beside it (RGB, depth, exact poses);
2. build a CROSSFIRE map of the mapping walk on this machine (CUDA if present) with the
   README's CPU settings, and the classical SIFT map of the same images;
3. relocalize every query twice with both methods: from each map's own retrieval (no
   pose given) and from priors perturbed by 0.3 m / 15 deg;
4. print the side-by-side table (success, errors, recall, failures by cause, latency,
   map size, build time); ``OUT/bench/report.html`` has the details.

Every step skips work already done (same config) so a rerun is fast.
"""

from __future__ import annotations

import time
from pathlib import Path

#: Map-build settings of the demo and of the README's 2-core CPU figures (on top of
#: CrossfireConfig defaults); the test suite's shared map (test/conftest.py) is this
#: with shorter stages.
DEMO_OVERRIDES = ["map.train.steps=600", "map.train.max_image_size=160", "map.train.checkpoint_every=200"]
QUICK_OVERRIDES = ["map.train.steps=250", "map.train.max_image_size=120", "train.cnn_steps=200", "train.field_steps=300"]
#: The demo room.
DEMO_SEED = 0


def run_demo(args) -> int:
    from .progress import progress_bar
    from .data.procedural.room import RoomSceneConfig, generate_room_scene
    from .device import resolve_device
    from .eval.benchmark import BenchmarkConfig, add_method_overrides, run_benchmark
    from .eval.benchmark_report import format_markdown

    out = Path(args.out)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    room = generate_room_scene(out / f"room_seed{DEMO_SEED}", RoomSceneConfig(seed=DEMO_SEED))
    print(f"[1/3] furnished room (seed {DEMO_SEED}): {room.dense} ({time.perf_counter() - t0:.1f} s)")
    cfg = BenchmarkConfig(methods=("crossfire", "classical"), priors=("retrieval", "perturbed"))
    add_method_overrides(cfg, [f"crossfire:{o}" for o in (QUICK_OVERRIDES if args.quick else DEMO_OVERRIDES)])
    print(f"[2/3] building the CROSSFIRE and classical maps on {device} (CROSSFIRE: ~30 min on 2 CPU cores, "
          "a minute on a GPU; a rerun reuses them), then localizing the queries")
    bench_dir = out / ("bench_quick" if args.quick else "bench")
    summary = run_benchmark([room.dense], bench_dir, cfg, device=device, progress=progress_bar(),
                            log=lambda m: print(f"      {m}", flush=True))
    print("[3/3] side by side:")
    print(format_markdown(summary))
    print(f"total {time.perf_counter() - t0:.0f} s; report: {bench_dir / 'report.html'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    raise SystemExit(run_demo(p.parse_args()))
