#!/usr/bin/env python3
"""Time the procedural scene generator (default config unless told otherwise).

    python scripts/bench_procedural.py                 # default config, temp folder
    python scripts/bench_procedural.py --out /tmp/proc --workers 1 --width 320 --height 240

Prints the wall time of a full generation (scene build + render + PNG writing), the
time of a second call (which must skip the work), and per-stage timings of one frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neural_reloc.data.procedural import (
    ProceduralSceneConfig,
    build_scene,
    generate_procedural_scene,
    render_procedural_view,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=None, help="rendering threads (default: CPUs, max 4)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    args = ap.parse_args(argv)

    overrides = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("width", args.width),
            ("height", args.height),
            ("num_frames", args.frames),
        )
        if v is not None
    }
    config = dataclasses.replace(ProceduralSceneConfig(), **overrides)
    print(
        f"config: {config.width}x{config.height}, {config.num_frames} frames, seed {config.seed} "
        f"(hash {config.config_hash()}); {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    t0 = time.perf_counter()
    scene = build_scene(config)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(min(5, len(scene.c2w_opengl))):
        render_procedural_view(scene, scene.camera, scene.c2w_opengl[i])
    t_frame = (time.perf_counter() - t0) / min(5, len(scene.c2w_opengl))
    print(f"build_scene: {t_build:.2f} s; render one frame: {t_frame * 1000:.0f} ms (single thread, no PNG)")

    with tempfile.TemporaryDirectory(prefix="bench_procedural_") as tmp:
        out = args.out or Path(tmp) / "scene"
        t0 = time.perf_counter()
        path = generate_procedural_scene(out, config, workers=args.workers, force=True)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        generate_procedural_scene(out, config, workers=args.workers)
        t_skip = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
        print(f"generate_procedural_scene: {t_gen:.2f} s ({size_mb:.0f} MB) -> {path}")
        print(f"second call (skipped): {t_skip * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
