#!/usr/bin/env bash
# The realistic-room benchmark: CROSSFIRE vs the classical pipeline, side by side.
#
#   scripts/bench_rooms.sh OUT [SEEDS] [extra neural-reloc benchmark options]
#
# For each seed (default "0 1 2"): the furnished room (neural-reloc make-scene room),
# then one `neural-reloc benchmark` over its dense and sparse datasets with the README's
# 2-core CPU settings for CROSSFIRE (600-step field at up to 320 px). With RGB_ONLY=1 the maps
# ignore the rooms' depth images (map.train.use_depth=false: keypoint depth instead), as
# an RGB camera's data would be. Results: OUT/bench[-rgb]/benchmark.json, report.html.
# Keep the machine otherwise idle for the latency and build-time columns: a second busy
# torch process on 2 cores slows both several-fold (NOTES.md).
set -euo pipefail
OUT=${1:?usage: scripts/bench_rooms.sh OUT [SEEDS] [benchmark options]}
SEEDS=${2:-0 1 2}
shift $(( $# >= 2 ? 2 : $# ))
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
CLI=(python -m neural_reloc.cli)

data=()
for s in $SEEDS; do
    "${CLI[@]}" make-scene room --seed "$s" --out "$OUT/rooms/seed$s" > /dev/null
    data+=("$OUT/rooms/seed$s/dense" "$OUT/rooms/seed$s/sparse")
done
sets=(crossfire:map.train.steps=600 crossfire:map.train.max_image_size=320)
suffix=""
if [ "${RGB_ONLY:-0}" = 1 ]; then
    sets+=(crossfire:map.train.use_depth=false)
    suffix="-rgb"
fi
"${CLI[@]}" benchmark --data "${data[@]}" --methods crossfire,classical --priors retrieval,perturbed \
    --out "$OUT/bench$suffix" --set "${sets[@]}" "$@"
