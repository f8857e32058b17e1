#!/usr/bin/env python3
"""D2S training experiment on a descriptor-synthesis folder (issue 15): for each variant,
train a D2S on the folder's real views (and its synthetic ones unless
``train.synthetic=false``), localize the dataset's test queries (SIFT -> D2S -> the
keypoints with reliability >= 0.5 -> PnP + RANSAC) and print recall at 5 cm / 5 deg, the
median translation error and the inlier counts of good and bad frames.

    python scripts/d2s_experiment.py SYNTHESIS_DIR DATA LONG_SIDE VARIANT [VARIANT ...]

A VARIANT is ';'-separated KEY=JSON settings: ``model.*`` (D2S), ``train.*``
(KscrTrainConfig) and ``train.synthetic``, e.g.
``'train.steps=32000;train.synthetic=false;model.gnn_layers=0;model.mlp=[256,512,256]'``.
Environment: MI / MR (acceptance: min inliers / inlier ratio, default 12 / 0.1), THR (PnP
threshold in pixels, default 4). Figures: NOTES.md "D2S on the room's sparse set".
"""
import sys, time, json, numpy as np, torch
from neural_reloc.data import load_dataset
from neural_reloc.synthesis.views import load_views
from neural_reloc.synthesis.features import make_extractor
from neural_reloc.synthesis.config import SynthesisConfig
from neural_reloc.methods.kscr.model import D2S
from neural_reloc.methods.kscr.config import KscrTrainConfig
from neural_reloc.methods.kscr.training import train_d2s
from neural_reloc.geometry.pnp import PnPConfig, pnp_ransac
from neural_reloc.geometry.se3 import invert_pose, pose_error
from neural_reloc.config_io import merge, parse_dotted

synth_dir, data_path, long_side = sys.argv[1], sys.argv[2], int(sys.argv[3])
variants = sys.argv[4:]
import os
MI=int(os.environ.get('MI','12')); MR=float(os.environ.get('MR','0.1'))
THR=float(os.environ.get('THR','4'))
data = load_dataset(data_path).with_max_size(long_side)
test = data.indices("test")
ext = make_extractor("sift", SynthesisConfig())
queries = []
for i in test:
    kp, desc, _ = ext.extract(data.image(i))
    queries.append((kp, desc, data.camera(i), data.w2c_opencv(i)))
for v in variants:
    kv = dict(x.split("=", 1) for x in v.split(";")) if v else {}
    model_kw = {k[6:]: json.loads(val) for k, val in kv.items() if k.startswith("model.")}
    train_kw = {k[6:]: json.loads(val) for k, val in kv.items() if k.startswith("train.")}
    syn = train_kw.pop("synthetic", True)
    views = load_views(synth_dir, synthetic=syn)
    torch.manual_seed(0)
    if "mlp" in model_kw: model_kw["mlp"] = tuple(model_kw["mlp"])
    model = D2S(views[0].descriptors.shape[1], **model_kw)
    cfg = KscrTrainConfig(**{"use_synthetic": syn, **train_kw})
    t = time.time(); s = train_d2s(model, views, cfg, torch.device("cpu")); tt = time.time() - t
    errs, rows = [], []
    for kp, desc, cam, gt in queries:
        with torch.no_grad():
            xyz, lg = model(torch.from_numpy(desc)[None])
        rel = torch.sigmoid(lg[0]).numpy(); xyz = xyz[0].double().numpy()
        o = np.argsort(-rel); o = o[rel[o] >= 0.5][:1024]
        if len(o) < 8:
            rows.append((None, None, len(o), 0, 0.0)); continue
        p = pnp_ransac(kp[o].astype(np.float64), xyz[o], cam, PnPConfig(reprojection_threshold_px=THR, max_ransac_points=1000))
        if not p.success:
            rows.append((None, None, len(o), 0, 0.0)); continue
        dt, dr = pose_error(invert_pose(p.w2c_opencv), invert_pose(gt))
        rows.append((dt, dr, len(o), p.num_inliers, p.inlier_ratio))
    ok = [r for r in rows if r[0] is not None]
    rec = np.mean([r[0] is not None and r[0] < 0.05 and r[1] < 5 for r in rows])
    med = np.median([r[0] for r in ok]) if ok else None
    good = [r for r in ok if r[0] < 0.05 and r[1] < 5]; bad = [r for r in ok if not (r[0] < 0.05 and r[1] < 5)]
    acc = [r for r in ok if r[3] >= MI and r[4] >= MR]
    acc_good = [r for r in acc if r[0] < 0.05 and r[1] < 5]
    print(f"  accepted(inl>={MI},ratio>={MR}) {len(acc)}/{len(rows)} good {len(acc_good)} wrong {len(acc)-len(acc_good)} "
          f"median_acc_t {np.median([r[0] for r in acc]) if acc else None} all_median_t {np.median([r[0] if r[0] is not None else 1e9 for r in rows]):.3f}", flush=True)
    print(f"{v or 'default'}: train {tt:.0f}s steps {s['steps']} loss {s['final_losses']} | recall5 {rec:.2f} median_t {med} "
          f"| good inl {[ (r[3], round(r[4],2)) for r in good][:40]} | bad inl {[(r[3], round(r[4],2), round(r[0],2)) for r in bad][:40]}", flush=True)
