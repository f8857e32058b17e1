#!/usr/bin/env bash
# PoseMap's Table 5 on one map, one command (issue 16): NeRF-P and the renders once,
# APR-Net with L_pose; + L_image; + L_rvs; + L_posemap; the full model aligned on the
# test images without their poses (and, with align.teacher=METHOD, aligned with that
# method of the map as the teacher). Results: OUT/ablation.json and a table.
#   scripts/ablate_posemap.sh MAP DATA OUT [KEY=VALUE ...]
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 MAP DATA OUT [KEY=VALUE ...]  (posemap config overrides)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
map=$1 data=$2 out=$3
shift 3
source scripts/bootstrap.sh
nr_bootstrap >/dev/null
exec python -m neural_reloc.methods.posemap.ablation --map "$map" --data "$data" --out "$out" --set "$@"
