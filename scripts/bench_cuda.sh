#!/usr/bin/env bash
# CROSSFIRE on a CUDA machine, in one go: build maps on the GPU and measure them there.
#
#   scripts/bench_cuda.sh OUT [FOX_DIR]
#
# 1. environment (GPU, torch) -> OUT/env.txt
# 2. procedural scene: generate it, build the shared test map's settings on CUDA
#    (the smoke test of every training and localization stage on the GPU), then
#    scripts/bench_crossfire.py (perturbed 0.3 m / 15 deg and retrieval priors):
#    accuracy and per-stage CUDA latency at 160x120, 3 iterations
#    -> OUT/procedural_bench.json
# 3. with FOX_DIR (../shared/data/fox): the fox map from its 50 train images with
#    longer stages than a CPU budget allows (settings below; each stage also has a
#    time budget so the run fits a lease), then the retrieval-prior benchmark on the
#    17 held-out images -> OUT/fox_bench.json; the map is left in $WORK/fox_map.
#
# Stops at the first failure (set -e): the procedural part fails in about a minute
# if anything does not run on CUDA. PY (default python3) runs the code; the repo root
# must be importable (PYTHONPATH is set here). WORK (default /tmp/nr_bench_cuda) holds
# scenes and maps. DEVICE (default cuda) and EXTRA_SET (overrides appended to every
# build, e.g. "map.train.steps=20 train.cnn_steps=10 train.field_steps=10") make a
# quick dry run of the script on a CPU. PARTS (default "procedural fox") chooses and
# orders the parts.
set -euo pipefail
OUT=${1:?usage: scripts/bench_cuda.sh OUT [FOX_DIR]}
FOX=${2:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-python3}
WORK=${WORK:-/tmp/nr_bench_cuda}
DEVICE=${DEVICE:-cuda}
PARTS=${PARTS:-procedural fox}
EXTRA_SET=${EXTRA_SET:-}
# No progress bars in logs.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p "$OUT" "$WORK"
cli() { "$PY" -m neural_reloc.cli "$@"; }
stamp() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

stamp "environment"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} | tee "$OUT/env.txt"

procedural() {
    # Default: the shared test map's settings (test/conftest.py CROSSFIRE_TEST_MAP_OVERRIDES);
    # PROC_SET="map.train.steps=600 map.train.max_image_size=160" gives the demo map's.
    local proc_set=${PROC_SET:-"map.train.steps=500 map.train.max_image_size=160 map.train.checkpoint_every=200 train.cnn_steps=400 train.surface_samples=4"}
    stamp "procedural scene"
    "$PY" -c "from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene as g; g('$WORK/procedural', ProceduralSceneConfig())"
    stamp "procedural map on $DEVICE"
    cli build-map --method crossfire --data "$WORK/procedural" --out "$WORK/procedural_map" --device $DEVICE \
        --max-eval-views 4 --set $proc_set $EXTRA_SET 2>&1 | tee "$OUT/procedural_build.log"
    stamp "procedural benchmark on $DEVICE"
    "$PY" "$ROOT/scripts/bench_crossfire.py" --map "$WORK/procedural_map" --data "$WORK/procedural" --device $DEVICE \
        --priors perturbed,retrieval --out "$OUT/procedural_bench.json" 2>&1 | tee "$OUT/procedural_bench.log"
}

fox() {
    [ -n "$FOX" ] || { stamp "fox: no FOX_DIR given, skipped"; return 0; }
    # The CPU build's settings (README) with longer stages; budgets keep the whole
    # build within about 5 minutes of an H200.
    FOX_SET="map.train.steps=${FOX_FIELD_STEPS:-12000} map.train.time_budget_s=${FOX_FIELD_BUDGET_S:-170}
             map.train.rays_per_batch=${FOX_RAYS:-8192}
             train.cnn_steps=${FOX_CNN_STEPS:-6000} train.cnn_time_budget_s=${FOX_CNN_BUDGET_S:-55}
             train.field_steps=${FOX_HEAD_STEPS:-6000} train.field_time_budget_s=${FOX_HEAD_BUDGET_S:-35}"
    stamp "fox map on $DEVICE"
    cli build-map --method crossfire --data "$FOX" --out "$WORK/fox_map" --device $DEVICE --max-size 480 \
        --set $FOX_SET $EXTRA_SET 2>&1 | tee "$OUT/fox_build.log"
    stamp "fox benchmark on $DEVICE"
    "$PY" "$ROOT/scripts/bench_crossfire.py" --map "$WORK/fox_map" --data "$FOX" --device $DEVICE \
        --priors retrieval --out "$OUT/fox_bench.json" 2>&1 | tee "$OUT/fox_bench.log"
}

for part in $PARTS; do "$part"; done
stamp "done"
