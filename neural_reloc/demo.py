"""The demo (README's first command): the whole job on the bundled procedural scene.

1. generate the procedural indoor scene (RGB, depth, poses; seeded);
2. build a CROSSFIRE map of its train split on this machine (CUDA if present);
3. report map quality on the held-out views (PSNR, depth error);
4. relocalize every held-out view twice: from the map's own retrieval prior (no pose
   given) and from priors perturbed by 0.3 m / 15 deg; print accuracy and timing.

Every step skips work already done (same config) so a rerun is fast.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config_io import merge, parse_dotted, to_dict

#: Map-build settings of the demo (on top of CrossfireConfig defaults), ~16 min on 2 CPU
#: cores; the test suite's shared map (test/conftest.py) is this with shorter stages.
DEMO_OVERRIDES = ["map.train.steps=600", "map.train.max_image_size=160", "map.train.checkpoint_every=200"]
QUICK_OVERRIDES = ["map.train.steps=250", "map.train.max_image_size=120"]


def run_demo(args) -> int:
    from .cli import _progress
    from .data import load_dataset
    from .data.procedural import ProceduralSceneConfig, generate_procedural_scene
    from .device import resolve_device
    from .eval.io import write_json_atomic
    from .localization import (
        LocalizeDatasetConfig,
        format_summary,
        localize_dataset,
        summarize_records,
    )
    from .mapping import build_map, describe_map
    from .methods.crossfire import CrossfireConfig
    from .methods.registry import load_relocalizer

    out = Path(args.out)
    device = resolve_device(args.device)
    bar = _progress()
    t0 = time.perf_counter()
    scene_dir = out / "procedural_scene"
    generate_procedural_scene(scene_dir, ProceduralSceneConfig())
    data = load_dataset(scene_dir)
    print(f"[1/4] procedural scene: {len(data.indices('train'))} train / {len(data.indices('test'))} held-out views "
          f"in {scene_dir} ({time.perf_counter() - t0:.1f} s)")

    cfg = merge(CrossfireConfig(), parse_dotted(QUICK_OVERRIDES if args.quick else DEMO_OVERRIDES))
    map_dir = out / ("map_quick" if args.quick else "map")
    t1 = time.perf_counter()
    build_map(data, map_dir, method="crossfire", config=cfg, device=device, progress=bar, max_eval_views=0)
    info = describe_map(map_dir)
    tr, m = info["training"], info["metrics"]
    print(f"[2/4] CROSSFIRE map {map_dir}: {info['size_mb']:.1f} MB, {tr.get('steps')} steps, trained in "
          f"{tr.get('train_s', float('nan')):.0f} s on {tr.get('device')} (this run: {time.perf_counter() - t1:.0f} s)")
    print(f"[3/4] held-out map quality: PSNR {m.get('psnr_mean', float('nan')):.2f} dB (min {m.get('psnr_min', float('nan')):.2f}), "
          f"median depth error {m.get('depth_median_abs_err_m', float('nan')) * 100:.2f} cm "
          f"({m.get('depth_median_rel_err', float('nan')) * 100:.2f}% of median depth)")

    reloc = load_relocalizer(map_dir, device)
    results = {"map": describe_map(map_dir), "config": to_dict(cfg)}
    for name, lcfg in (
        ("retrieval prior", LocalizeDatasetConfig(prior="retrieval")),
        ("prior perturbed by 0.3 m / 15 deg", LocalizeDatasetConfig(prior="perturbed")),
    ):
        recs = localize_dataset(reloc, data, lcfg, progress=bar)
        s = summarize_records(recs)
        results[lcfg.prior] = {"summary": s, "frames": recs}
        print(f"[4/4] relocalization of {s['frames']} held-out views, {name}:")
        print("      " + format_summary(s).replace("\n", "\n      "))
    write_json_atomic(out / "demo_results.json", results)
    print(f"total {time.perf_counter() - t0:.0f} s; results in {out / 'demo_results.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    raise SystemExit(run_demo(p.parse_args()))
