"""``neural-reloc``: build maps, render them, inspect them, run the demo.

Every subcommand is a thin shell over library functions; errors in the input (missing
files, bad poses, empty splits, corrupt maps, unknown config keys) end with one line
``error: ...`` naming what is wrong, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config_io import load_dataclass_config, load_method_config
from .progress import progress_bar

EXIT_USAGE = 2


def count(text: str) -> int:
    """An argparse type for counts and limits: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (0 means no limit where a limit is asked)")
    return value


def cmd_build_map(args) -> int:
    from .data import load_dataset
    from .device import resolve_device
    from .mapping import build_map

    device = resolve_device(args.device)
    cfg = load_method_config(args.method, args.config, args.set or [])
    data = load_dataset(args.data)
    if args.max_size or args.steps:
        from .config_io import ConfigError
        from .methods.registry import get_method

        spec = get_method(args.method)
        map_cfg = spec.map_config(cfg) if spec.trainer_factory is not None else None
        if map_cfg is None:
            raise ConfigError(f"--max-size and --steps set a neural map's training; the {args.method!r} method has none "
                              "(see its config, --set KEY=VALUE)")
        if args.max_size:
            map_cfg.train.max_image_size = args.max_size
        if args.steps:
            map_cfg.train.steps = args.steps
    out = build_map(
        data,
        Path(args.out),
        method=args.method,
        config=cfg,
        device=device,
        progress=progress_bar(),
        evaluate=not args.no_eval,
        max_eval_views=args.max_eval_views,
        overwrite=args.overwrite,
    )
    from .map_loading import describe_map

    info = describe_map(out)
    print(json.dumps({"map": str(out), "size_mb": info["size_mb"], "training": info["training"], "metrics": info["metrics"]}, indent=1))
    return 0


def cmd_add_method(args) -> int:
    from .data import load_dataset
    from .device import resolve_device
    from .map_loading import describe_map
    from .mapping import add_method

    cfg = load_method_config(args.method, args.config, args.set or [])
    data = load_dataset(args.data) if args.data else None
    extra = {"unlabeled": args.unlabeled} if args.unlabeled else {}
    out = add_method(args.map, args.method, data, config=cfg, device=resolve_device(args.device),
                     progress=progress_bar(), out_dir=args.out, **extra)
    info = describe_map(out)
    print(json.dumps({"map": str(out), "size_mb": info["size_mb"], "components": info["components"]}, indent=1))
    return 0


def cmd_info(args) -> int:
    from .map_loading import describe_map

    print(json.dumps(describe_map(args.map), indent=1, default=str))
    return 0


def cmd_align(args) -> int:
    """Set a map's ``map_from_world`` (the similarity to a robot's metric, z-up map)."""
    import numpy as np

    from .geometry import alignment as al
    from .geometry.frames import opencv_c2w_from_opengl_c2w
    from .map_bundle import read_manifest, write_alignment
    from .map_loading import describe_map

    man = read_manifest(args.map)
    if args.points and (args.scale is not None or args.distance is not None):
        raise ValueError("--scale and --distance go with --gravity: point pairs give their own scale")
    if args.points:
        world, map_ = al.read_point_pairs(args.points)
        try:
            fit = al.similarity_from_point_pairs(world, map_)
        except ValueError as e:
            raise ValueError(f"{args.points}: {e}") from None
        sim = fit.similarity
        how = {"estimated_from": "points", "points_file": str(Path(args.points).resolve()), "num_points": len(world),
               "rms_residual": round(fit.rms_residual, 6), "max_residual": round(float(fit.residuals.max()), 6)}
        print(f"{len(world)} point pairs: scale {sim.scale:.6g}, RMS residual {fit.rms_residual:.4g} "
              f"(max {fit.residuals.max():.4g}) map units", file=sys.stderr)
    else:
        if args.scale is not None and args.distance is not None:
            raise ValueError("give --scale or --distance, not both")
        scale, scale_from = 1.0, "none given: 1 map unit per world unit"
        if args.scale is not None:
            scale, scale_from = args.scale, "--scale"
        elif args.distance is not None:
            v = args.distance
            scale = al.scale_from_distance(v[0:3], v[3:6], v[6])
            scale_from = f"--distance: world points {v[0:3]} and {v[3:6]} are {v[6]} map units apart"
        c2w = np.array([opencv_c2w_from_opengl_c2w(T) for T in man["reference_views"]["c2w_opengl"]])
        try:
            sim, est = al.gravity_alignment(c2w, scale)
        except ValueError as e:
            raise ValueError(f"{args.map}: {e}") from None
        how = {"estimated_from": "gravity", "up_world": est.up_world.round(6).tolist(), "up_from": est.how,
               "rms_roll_deg": round(est.rms_roll_deg, 3), "num_cameras": est.num_cameras, "scale_from": scale_from}
        print(f"up in world {est.up_world.round(4).tolist()} from {est.num_cameras} cameras ({est.how}; their roll "
              f"spread {est.rms_roll_deg:.2f} deg RMS), scale {scale:.6g} ({scale_from})", file=sys.stderr)
    entry = {"map_from_world": sim.to_dict(), **how, "created_unix": time.time()}
    out = write_alignment(args.map, entry, args.out)
    print(json.dumps({"map": str(out), "alignment": describe_map(out)["alignment"]}, indent=1))
    return 0


def cmd_render(args) -> int:
    import cv2
    import numpy as np

    from .data import load_dataset
    from .device import resolve_device
    from .map_bundle import read_map
    from .map_loading import load_neural_map
    from .nerf.train import psnr

    device = resolve_device(args.device)
    bundle = read_map(args.map)
    model = load_neural_map(bundle, device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .geometry.camera import Camera

    if args.data:
        data = load_dataset(args.data)
        idx = data.indices(args.split)
        views = [(data.names[i], data.camera(i), data.c2w_opengl[i], i, data) for i in idx]
    else:
        refs = bundle.references
        views = [
            (n, Camera.from_dict(c), T, None, None) for n, c, T in zip(refs.names, refs.cameras, refs.c2w_opengl)
        ]
    if args.limit:
        views = views[: args.limit]
    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    report = []
    bar = progress_bar()
    for name, cam, c2w, i, data in bar(views, desc="rendering"):
        if args.width:
            cam = cam.resized(args.width, int(round(cam.height * args.width / cam.width)))
        t0 = time.perf_counter()
        res = model.render_view(cam, c2w, outputs)
        dt = (time.perf_counter() - t0) * 1e3
        stem = Path(name).stem
        rec = {"name": name, "render_ms": round(dt, 1), "size": [cam.width, cam.height]}
        if "rgb" in res:
            cv2.imwrite(str(out_dir / f"{stem}_rgb.png"), cv2.cvtColor((np.clip(res["rgb"], 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
            if data is not None:
                gt = cv2.resize(data.image(i), (cam.width, cam.height), interpolation=cv2.INTER_AREA) / 255.0
                rec["psnr"] = round(psnr(float(np.mean((res["rgb"] - gt) ** 2))), 2)
        if "depth" in res:
            d = res["depth"]
            cv2.imwrite(str(out_dir / f"{stem}_depth_mm.png"), np.clip(d * 1000, 0, 65535).astype(np.uint16))
            vis = cv2.applyColorMap(np.clip(d / max(np.percentile(d, 99), 1e-6) * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_TURBO)
            cv2.imwrite(str(out_dir / f"{stem}_depth.png"), vis)
        report.append(rec)
    (out_dir / "render_report.json").write_text(json.dumps(report, indent=1))
    ms = [r["render_ms"] for r in report]
    summary = {"views": len(report), "render_ms_median": float(np.median(ms)) if ms else None, "out": str(out_dir)}
    if any("psnr" in r for r in report):
        summary["psnr_mean"] = float(np.mean([r["psnr"] for r in report if "psnr" in r]))
    print(json.dumps(summary, indent=1))
    return 0


def cmd_bag_from_dataset(args) -> int:
    from .bags.writer import BagFromDatasetConfig, write_bag_from_dataset
    from .data import load_dataset

    cfg = load_dataclass_config(BagFromDatasetConfig, args.config, args.set)
    # command-line options win over the config file (set directly: no YAML typing)
    for attr, value in (
        ("storage", args.storage),
        ("split", args.split),
        ("rate_hz", args.rate),
        ("max_image_size", args.max_size),
        ("max_frames", args.max_frames),
    ):
        if value is not None:
            setattr(cfg, attr, value)
    if args.seed is not None:
        cfg.odometry.seed = args.seed
    data = load_dataset(args.data)
    summary = write_bag_from_dataset(data, args.out, cfg, overwrite=args.overwrite, progress=progress_bar())
    print(json.dumps(summary, indent=1))
    return 0


def _apply_node_params(cfg, params_file: str, reloc_overrides: list[str] | None, map_path: str):
    """Take the relocalization node's settings from its ROS parameter file (e.g.
    config/relocalize.yaml): ``tracking`` and the topics/frames into ``cfg``, the
    settings under the method's name (its ``method`` parameter, else the map's default)
    as relocalizer overrides (``--reloc-set`` wins). Returns the overrides as a nested
    dict."""
    from .config_io import ConfigError, from_dict, load_yaml, parse_dotted
    from .tracking import TrackingConfig

    data = load_yaml(params_file)
    params = next((v["ros__parameters"] for v in data.values() if isinstance(v, dict) and "ros__parameters" in v), None)
    if params is None:
        raise ConfigError(f"{params_file}: not a ROS parameter file (no <node>: ros__parameters: mapping)")
    if "tracking" in params:
        cfg.tracking = from_dict(TrackingConfig, params["tracking"], "tracking")
    for key, (obj, attr) in {
        "image_topic": (cfg.bag.topics, "image"),
        "camera_info_topic": (cfg.bag.topics, "camera_info"),
        "map_frame": (cfg.bag.frames, "map"),
        "odom_frame": (cfg.bag.frames, "odom"),
        "base_frame": (cfg.bag.frames, "base"),
    }.items():
        if params.get(key):
            value = params[key]
            if key.endswith("_topic") and not value.startswith("/"):
                value = "/" + value  # a node's relative topic, in the bag's (root) namespace
            setattr(obj, attr, value)
    if "odom_frame" in params and not params["odom_frame"]:
        cfg.bag.use_odometry = False
    from .map_bundle import read_manifest
    from .map_loading import map_default_method

    method = params.get("method") or map_default_method(read_manifest(map_path))
    overrides = {"localization": dict(params[method])} if isinstance(params.get(method), dict) else {}
    for key, value in parse_dotted(reloc_overrides or []).items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key].update(value)
        else:
            overrides[key] = value
    return overrides or None


GLOBAL_PRIOR_HELP = ("another of the map's methods that needs no prior (kscr) gives the frames without a prior their "
                     "first pose, instead of the method's own retrieval")


#: MKL_CBWR of ``eval-bag --live`` (measured: ~+15 ms of matching per frame).
REPRODUCIBLE_MKL_CBWR = "COMPATIBLE"


def cmd_eval_bag(args) -> int:
    if args.live:
        # Live vs offline must agree bit for bit: MKL's conditional numerical
        # reproducibility (its default code paths depend on memory alignment, so two
        # processes can differ in the last bit, which a mutual-NN near-tie turns into a
        # different match). Set before the first MKL call; the node inherits it.
        os.environ.setdefault("MKL_CBWR", REPRODUCIBLE_MKL_CBWR)
    from .eval.eval_bag import REPORT_NAME, RESULTS_NAME, EvalBagConfig, evaluate_bag

    cfg = load_dataclass_config(EvalBagConfig, args.config, args.set)
    gt, bag = cfg.ground_truth, cfg.bag
    reloc_overrides = args.reloc_set or None
    if args.node_params:
        reloc_overrides = _apply_node_params(cfg, args.node_params, reloc_overrides, args.map)
    if args.gt_topic:
        gt.topic, gt.tf_parent, gt.tf_child = args.gt_topic, "", ""
    if args.gt_tf:
        gt.topic, (gt.tf_parent, gt.tf_child) = "", args.gt_tf
    if args.gt_body_frame is not None:
        gt.body_frame = args.gt_body_frame
    if args.image_topic:
        bag.topics.image = args.image_topic
    if args.camera_info_topic:
        bag.topics.camera_info = args.camera_info_topic
    if args.no_odometry:
        bag.use_odometry = False
    if args.max_frames is not None:
        cfg.max_frames = args.max_frames
    if args.no_report:
        cfg.report = False
    from .eval.io import check_output_dir, failed_path

    out = check_output_dir(args.out)
    try:
        results = evaluate_bag(
            args.bag,
            out,
            cfg,
            map_path=args.map,
            device=args.device,
            reloc_overrides=reloc_overrides,
            progress=True,
            method=args.method,
            global_prior=args.global_prior,
        )
    except BaseException:
        name = failed_path(out / RESULTS_NAME) if failed_path(out / RESULTS_NAME).is_file() else out / RESULTS_NAME
        if name.is_file():
            print(f"what the failed run got: {name}", file=sys.stderr)
        raise
    print(f"results: {out / RESULTS_NAME}" + (f", report: {out / REPORT_NAME}" if cfg.report else ""), file=sys.stderr)
    s = results["summary"]
    keys = ("frames", "frames_with_gt", "success_rate", "accepted_rate", "median_t_err_m", "median_r_err_deg", "recall")
    report = {"results": str(out / RESULTS_NAME), **{k: s.get(k) for k in keys}}
    if not args.live:
        print(json.dumps(report, indent=1))
        return 0
    # -- live: the same bag through the running node, then frame-by-frame agreement
    try:
        from .ros.bag_replay import evaluate_bag_live
    except ImportError as e:
        raise RuntimeError(f"--live needs ROS 2 (rclpy and the built neural_reloc.msg): {e}") from None
    from .eval.io import write_json_atomic
    from .eval.live import compare_runs

    live = evaluate_bag_live(
        args.bag,
        out / "live",
        cfg,
        map_path=args.map,
        device=args.device,
        reloc_overrides=reloc_overrides,
        node_running=args.node_running,
        progress=True,
        method=args.method,
        global_prior=args.global_prior,
    )
    agreement = compare_runs(results["frames"], live["frames"])
    write_json_atomic(out / "agreement.json", agreement)
    ls = live["summary"]
    report["live"] = {"results": str(out / "live" / RESULTS_NAME), **{k: ls.get(k) for k in keys}}
    report["agreement"] = {k: v for k, v in agreement.items() if k != "frames"} | {"file": str(out / "agreement.json")}
    print(json.dumps(report, indent=1))
    return 0 if agreement["agree"] else 1


def cmd_localize(args) -> int:
    from .data import load_dataset
    from .device import machine_info
    from .eval.io import check_output_file, failed_path, holds_good_result, write_json_atomic
    from .localization import LocalizeDatasetConfig, format_summary, localize_dataset, summarize_records
    from .map_loading import load_relocalizer

    out = check_output_file(args.out) if args.out else None
    reloc = load_relocalizer(args.map, args.device, args.set or None, method=args.method, global_prior=args.global_prior)
    data = load_dataset(args.data)
    cfg = LocalizeDatasetConfig(
        split=args.split, prior=args.prior, perturb_m=args.perturb_m, perturb_deg=args.perturb_deg,
        seed=args.seed, constant_reference=args.constant_reference, limit=args.limit,
    )
    records: list[dict] = []

    def show(rec: dict) -> None:
        records.append(rec)
        if not args.quiet:
            err = f"{rec['t_err_m'] * 100:7.2f} cm {rec['r_err_deg']:6.2f} deg" if rec["success"] else f"failed: {rec['reason']}"
            print(f"{rec['name']}: {err}  inliers {rec['num_inliers']}  iters {rec['iterations']}  "
                  f"{rec['total_latency_ms']:.0f} ms  prior {rec['prior_source']}", flush=True)

    status, error = "error", None
    try:
        localize_dataset(reloc, data, cfg, progress=progress_bar() if args.quiet else None, on_record=show)
        status = "ok"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        summary = summarize_records(records)
        if out is not None:
            from .config_io import to_dict

            # A failed run writes beside an earlier result, never over it.
            target = out if status == "ok" or not holds_good_result(out) else failed_path(out)
            write_json_atomic(target, {"status": status, "error": error, "map": str(args.map), "data": str(args.data),
                                       "config": to_dict(cfg), "machine": machine_info(getattr(reloc, "device", None)),
                                       "summary": summary, "frames": records})
            if target != out:
                print(f"the run failed: what it got is in {target} ({out} is left as it was)", file=sys.stderr)
    print(format_summary(summary))
    return 0


def cmd_benchmark(args) -> int:
    from .device import resolve_device
    from .eval.benchmark import BenchmarkConfig, add_method_overrides, run_benchmark
    from .eval.benchmark_report import format_markdown

    cfg = load_dataclass_config(BenchmarkConfig, args.config, args.bench_set)
    cfg.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.priors is not None:
        cfg.priors = tuple(p.strip() for p in args.priors.split(",") if p.strip())
    if args.split is not None:
        cfg.split = args.split
    if args.limit is not None:
        cfg.limit = args.limit
    if args.shared_field:
        cfg.shared_field = True
    if args.map_every is not None:
        cfg.map_every = args.map_every
    add_method_overrides(cfg, args.set or [], args.reloc_set or [])
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - stdout keeps the table
    summary = run_benchmark(args.data, args.out, cfg, device=resolve_device(args.device), progress=progress_bar(), log=log)
    print(format_markdown(summary))
    print(f"results: {Path(args.out) / 'benchmark.json'}, report: {Path(args.out) / 'report.html'}")
    return 0


def cmd_make_scene(args) -> int:
    from .data.procedural import ProceduralSceneConfig, generate_procedural_scene
    from .data.procedural.room import RoomSceneConfig, generate_room_scene

    cls = RoomSceneConfig if args.kind == "room" else ProceduralSceneConfig
    cfg = load_dataclass_config(cls, None, [f"seed={args.seed}", *(args.set or [])])
    if args.kind == "room":
        out = generate_room_scene(args.out, cfg)
        print(json.dumps({"dense": str(out.dense), "sparse": str(out.sparse)}, indent=1))
    else:
        print(json.dumps({"dataset": str(generate_procedural_scene(args.out, cfg).parent)}, indent=1))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    from .methods.registry import available_methods, get_method

    p = argparse.ArgumentParser(prog="neural-reloc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add_device(sp):
        sp.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")

    b = sub.add_parser("build-map", help="train a map from posed images")
    b.add_argument("--data", required=True, help="dataset: transforms.json, COLMAP, 7-Scenes, Cambridge or LLFF folder, "
                   "or a rosbag2 (directory, .mcap or .db3; topics at the bag defaults)")
    b.add_argument("--out", required=True, help="map directory to write")
    b.add_argument("--method", default="nerf", choices=available_methods())
    b.add_argument("--config", help="YAML config (method config, or a ROS parameter file)")
    b.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=500")
    b.add_argument("--steps", type=count, help="shortcut for train.steps")
    b.add_argument("--max-size", type=count, help="shortcut for train.max_image_size (long side, px)")
    b.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    b.add_argument("--overwrite", action="store_true",
                   help="replace a map at --out built from other data or settings (never anything that is not a map)")
    b.add_argument("--max-eval-views", type=count, default=0, help="evaluate at most this many held-out views (0: all)")
    add_device(b)
    b.set_defaults(func=cmd_build_map)

    am = sub.add_parser("add-method", help="train one more method's component on an existing map (its field stays as it is)")
    am.add_argument("method", choices=[m for m in available_methods() if get_method(m).add_to_map is not None])
    am.add_argument("--map", required=True, help="map directory (build-map)")
    am.add_argument("--data", help="the mapping images the component is trained on (the map's own dataset)")
    am.add_argument("--out", help="write the map with the new component here (default: replace --map, atomically)")
    am.add_argument("--config", help="YAML config of the method")
    am.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.cnn_steps=300")
    am.add_argument("--unlabeled", metavar="DIR_OR_BAG",
                    help="images without poses (a folder, a dataset, a rosbag2 bag) to refine the component on, "
                         "for methods that take them (posemap: self-supervised alignment)")
    add_device(am)
    am.set_defaults(func=cmd_add_method)

    al = sub.add_parser("align", help="set the similarity map_from_world to a robot's metric, z-up map frame "
                        "(applied to every pose and TF the node publishes)")
    al.add_argument("--map", required=True, help="map directory (build-map)")
    how = al.add_mutually_exclusive_group(required=True)
    how.add_argument("--points", metavar="PAIRS.csv",
                     help="3 or more point pairs, rows world_x,world_y,world_z,map_x,map_y,map_z: scale, rotation "
                     "and translation by least squares (Umeyama)")
    how.add_argument("--gravity", action="store_true",
                     help="rotate the mapping cameras' up onto +z (no translation, yaw unchanged), scaled by "
                     "--scale or --distance")
    al.add_argument("--scale", type=float, help="with --gravity: map units (metres) per world unit")
    al.add_argument("--distance", type=float, nargs=7, metavar=("X1", "Y1", "Z1", "X2", "Y2", "Z2", "D"),
                    help="with --gravity: two world points D map units (metres) apart give the scale")
    al.add_argument("--out", help="write the aligned map here (default: --map, in place, atomically)")
    al.set_defaults(func=cmd_align)

    r = sub.add_parser("render", help="render a map at reference views or a dataset's views")
    r.add_argument("--map", required=True)
    r.add_argument("--out", required=True, help="output folder for PNGs and render_report.json")
    r.add_argument("--data", help="dataset whose views to render (default: the map's reference views)")
    r.add_argument("--split", default="test", help="split of --data to render (train, test, all)")
    r.add_argument("--outputs", default="rgb,depth", help="comma-separated render outputs")
    r.add_argument("--width", type=count, help="render width (height keeps the aspect ratio)")
    r.add_argument("--limit", type=count, default=0, help="render at most this many views (0: all)")
    add_device(r)
    r.set_defaults(func=cmd_render)

    i = sub.add_parser("info", help="describe a map")
    i.add_argument("--map", required=True)
    i.set_defaults(func=cmd_info)

    bg = sub.add_parser("bag-from-dataset", help="write a rosbag2 (mcap/sqlite3) from a posed dataset, no ROS needed")
    bg.add_argument("--data", required=True, help="dataset: transforms.json, COLMAP, 7-Scenes, Cambridge or LLFF folder")
    bg.add_argument("--out", required=True, help="bag directory to create")
    bg.add_argument("--split", help="frames to write: all (default), train or test, in dataset order")
    bg.add_argument("--storage", choices=("mcap", "sqlite3"), help="bag storage (default mcap)")
    bg.add_argument("--rate", type=float, help="image rate in Hz when the dataset has no capture times (default 10)")
    bg.add_argument("--max-size", type=count, help="downscale images to this long side in pixels")
    bg.add_argument("--max-frames", type=count, help="write at most this many frames (default: all)")
    bg.add_argument("--seed", type=int, help="seed of the simulated odometry noise")
    bg.add_argument("--config", help="YAML with BagFromDatasetConfig fields (topics, frames, odometry, ...)")
    bg.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. odometry.drift_yaw_deg_per_m=2")
    bg.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    bg.set_defaults(func=cmd_bag_from_dataset)

    e = sub.add_parser("eval-bag", help="relocalize every image of a bag (the node's logic) and score it against ground truth")
    e.add_argument("--bag", required=True, help="rosbag2 directory, .mcap or .db3 file")
    e.add_argument("--map", required=True, help="map directory (build-map --method crossfire)")
    e.add_argument("--out", required=True, help="folder for results.json and report.html")
    e.add_argument("--method", help="which of the map's methods localizes (default: the map's)")
    e.add_argument("--global-prior", default="", metavar="METHOD", help=GLOBAL_PRIOR_HELP)
    gt = e.add_mutually_exclusive_group()
    gt.add_argument("--gt-topic", help="ground-truth pose topic (default /ground_truth/camera_pose)")
    gt.add_argument("--gt-tf", nargs=2, metavar=("PARENT", "CHILD"), help="ground truth from the TF transform PARENT -> CHILD")
    e.add_argument("--gt-body-frame", help="frame whose pose the ground truth gives, if not the camera optical frame")
    e.add_argument("--image-topic", help="image topic (default /camera/image_raw)")
    e.add_argument("--camera-info-topic", help="camera info topic (default /camera/camera_info)")
    e.add_argument("--no-odometry", action="store_true", help="ignore odom -> base_link in the bag")
    e.add_argument("--max-frames", type=count, help="evaluate at most this many images (default: all)")
    e.add_argument("--config", help="YAML with EvalBagConfig fields (bag, ground_truth, tracking, ...)")
    e.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. tracking.lost_after_failures=5")
    e.add_argument(
        "--node-params",
        help="the relocalization node's ROS parameter file (e.g. config/relocalize.yaml): evaluate with its "
        "tracking and localization settings, topics and frames",
    )
    e.add_argument("--reloc-set", nargs="*", metavar="KEY=VALUE", help="relocalizer overrides, e.g. localization.max_iterations=2")
    e.add_argument("--no-report", action="store_true", help="write results.json only")
    e.add_argument(
        "--live",
        action="store_true",
        help="also replay the bag into relocalization_node over DDS (started here on --map), record its "
        "statuses and compare them frame by frame with the offline run (OUT/live/, OUT/agreement.json; "
        "exit status 1 when they disagree)",
    )
    e.add_argument("--node-running", action="store_true", help="with --live: use the node already running (use_sim_time:=true)")
    add_device(e)
    e.set_defaults(func=cmd_eval_bag)

    lo = sub.add_parser("localize", help="localize a dataset's frames against a map and score them")
    lo.add_argument("--map", required=True, help="map directory (build-map --method crossfire)")
    lo.add_argument("--data", required=True, help="dataset with the query frames (transforms.json or folder)")
    lo.add_argument("--split", default="test", help="query frames: test (default), train or all")
    lo.add_argument("--method", help="which of the map's methods localizes (neural-reloc info lists them; default: the map's)")
    lo.add_argument("--global-prior", default="", metavar="METHOD", help=GLOBAL_PRIOR_HELP)
    lo.add_argument("--prior", default="retrieval", choices=("retrieval", "perturbed", "constant"),
                    help="retrieval over the map, ground truth perturbed, or one constant pose (Table 2)")
    lo.add_argument("--perturb-m", type=float, default=0.3, help="perturbed prior: translation offset, metres")
    lo.add_argument("--perturb-deg", type=float, default=15.0, help="perturbed prior: rotation offset, degrees")
    lo.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    lo.add_argument("--constant-reference", type=int, default=-1, help="constant prior: reference view index (-1: central)")
    lo.add_argument("--limit", type=count, default=0, help="localize at most this many frames (0: all)")
    lo.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="relocalizer overrides, e.g. localization.max_iterations=2")
    lo.add_argument("--out", help="write per-frame records and the summary to this JSON file")
    lo.add_argument("--quiet", action="store_true", help="no per-frame lines (a progress bar instead)")
    add_device(lo)
    lo.set_defaults(func=cmd_localize)

    from .synthesis.cli import add_parser as add_synthesize_parser

    add_synthesize_parser(sub)

    bm = sub.add_parser(
        "benchmark",
        help="build each method's map and compare the methods side by side on the same query frames",
        description="Per dataset: build each method's map (OUT/<dataset>/maps/<method>), localize the query split "
        "from each prior (OUT/<dataset>/<method>/<prior>.json), then write OUT/benchmark.json, OUT/report.html and "
        "print a markdown table. A rerun skips maps and localizations that are already done.",
    )
    bm.add_argument("--data", required=True, nargs="+", help="one or more datasets (each gets its own folder and table)")
    bm.add_argument("--methods", required=True,
                    help="comma-separated registered methods that relocalize, e.g. crossfire,classical; NAME=METHOD is "
                    "a second configuration of METHOD with its own --set/--reloc-set (e.g. kscr_real=kscr)")
    bm.add_argument("--out", required=True, help="output folder (maps, per-method results, benchmark.json, report.html)")
    bm.add_argument("--priors", help="comma-separated priors: retrieval (default), perturbed, constant, global:METHOD "
                    "(--shared-field: METHOD's component of the same map gives the first pose, e.g. global:kscr)")
    bm.add_argument("--set", nargs="+", action="extend", metavar="NAME:KEY=VALUE",
                    help="map config override of one method, e.g. crossfire:map.train.steps=600 (rebuilds that map); "
                    "field:map.train.steps=600 configures the shared field (--shared-field)")
    bm.add_argument("--reloc-set", nargs="+", action="extend", metavar="NAME:KEY=VALUE",
                    help="relocalizer override of one method, e.g. crossfire:localization.max_iterations=2 "
                    "(relocalizes again, never rebuilds the map)")
    bm.add_argument("--shared-field", action="store_true",
                    help="one neural field per dataset (maps/field) and the methods that can be added to a map trained "
                    "on it (maps/shared, add-method); the others (classical) build their own map")
    bm.add_argument("--map-every", type=count, metavar="N",
                    help="build the maps from every N-th mapping frame only (queries unchanged; results in "
                    "OUT/<dataset>@everyN)")
    bm.add_argument("--split", help="query frames: test (default), train or all")
    bm.add_argument("--limit", type=count, help="localize at most this many query frames per dataset (default: all)")
    bm.add_argument("--config", help="YAML with BenchmarkConfig fields (thresholds, basin, perturbation, ...)")
    bm.add_argument("--bench-set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="BenchmarkConfig overrides, e.g. basin_t_m=2 failure_t_m=0.1 "
                    "'relative_recall_thresholds=[[0.01,2],[0.05,5]]'")
    add_device(bm)
    bm.set_defaults(func=cmd_benchmark)

    ms = sub.add_parser(
        "make-scene",
        help="generate a procedural dataset with exact ground truth (transforms.json, depth)",
        description="room: a furnished room (plain walls, furniture, a window) mapped on one walk and queried "
        "from two others beside it; writes OUT/dense (every mapping view) and OUT/sparse (every 10th), both with "
        "the same queries as the test split. textured: the textured loop of the unit tests.",
    )
    ms.add_argument("kind", choices=("room", "textured"), help="which scene")
    ms.add_argument("--out", required=True, help="output folder")
    ms.add_argument("--seed", type=int, default=0, help="scene seed (layout, textures, walks)")
    ms.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                    help="scene config overrides, e.g. width=640 height=480 num_query_views=60")
    ms.set_defaults(func=cmd_make_scene)

    d = sub.add_parser("demo", help="build a map of the bundled procedural scene and evaluate it")
    d.add_argument("--out", default="outputs/demo", help="working folder (scene, map, results)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run")
    add_device(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config_io import ConfigError
    from .data.posed_images import DatasetError
    from .bags.errors import BagError
    from .map_bundle import MapError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, MapError, ConfigError, BagError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # unreadable/unwritable files: name the file, no traceback
        name = f"{e.filename}: " if e.filename else ""
        print(f"error: {name}{e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (a map build resumes from its last checkpoint when rerun)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
