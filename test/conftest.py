"""Shared test setup.

DDS stays on loopback in every test: the variables below are put into this process's
environment at import time, before any test module can import rclpy, and every child
process gets them through the ``ros_env`` fixture. ``@pytest.mark.requires_ros``
skips a test when rclpy or the colcon-generated ``neural_reloc.msg`` cannot be
imported, except under scripts/test (NEURAL_RELOC_REQUIRE_ROS=1), where that is an
error: CI must not pass by skipping the ROS tests.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DDS_PROFILE = REPO_ROOT / "config" / "dds" / "fastdds_loopback.xml"

# Domain 1..100 (never 0, everybody's default), from the pid so that concurrent
# sessions on one machine rarely meet. The child processes of each test share a domain
# of their own (ros_env): the next ones after this process's, one per test.
_SESSION_DOMAIN = os.getpid() % 100 + 1
_domain_offsets = itertools.count(1)

LOOPBACK_ENV = {
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    "ROS_DOMAIN_ID": str(_SESSION_DOMAIN),
    "FASTRTPS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "PYTHONUNBUFFERED": "1",
}
os.environ.update(LOOPBACK_ENV)
for _var in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER"):
    os.environ.pop(_var, None)


def _ros_import_error() -> str | None:
    try:
        import rclpy  # noqa: F401
        from neural_reloc.msg import RelocalizationStatus  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means "no ROS here"
        return f"{type(exc).__name__}: {exc}"
    return None


ROS_IMPORT_ERROR = _ros_import_error()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_ros: needs rclpy and the colcon-built neural_reloc.msg "
        "(skipped without them, an error under scripts/test)",
    )
    assert DDS_PROFILE.is_file(), DDS_PROFILE
    import neural_reloc

    if Path(neural_reloc.__file__).resolve().parent != REPO_ROOT / "neural_reloc":
        raise pytest.UsageError(
            f"neural_reloc is imported from {neural_reloc.__file__}, not from this "
            f"checkout ({REPO_ROOT}); run the tests with scripts/test"
        )
    if ROS_IMPORT_ERROR and os.environ.get("NEURAL_RELOC_REQUIRE_ROS") == "1":
        raise pytest.UsageError(
            "NEURAL_RELOC_REQUIRE_ROS=1 but the ROS side does not import "
            f"({ROS_IMPORT_ERROR}); did the colcon build in scripts/bootstrap.sh fail?"
        )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if ROS_IMPORT_ERROR is None:
        return
    skip = pytest.mark.skip(
        reason=f"ROS 2 not importable ({ROS_IMPORT_ERROR}); use scripts/test"
    )
    for item in items:
        if "requires_ros" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for a child process that starts ROS: loopback-only DDS, a domain
    of its own for this test, and this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env.update(LOOPBACK_ENV)
    env["ROS_DOMAIN_ID"] = str((_SESSION_DOMAIN - 1 + next(_domain_offsets)) % 100 + 1)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


# --- shared data: the procedural scenes and a CROSSFIRE map of a room -----------------
# Generated once per checkout under .cache/test-data (git-ignored); the scene
# generators and build_map all skip work that is already done for the same config, so
# a rerun costs seconds while a clean clone (CI) builds them once. The textured scene
# serves fast unit tests; the end-to-end tests run on a furnished room (the realistic
# test bed: plain walls, queries off the mapping walk).
TEST_DATA_DIR = REPO_ROOT / ".cache" / "test-data"

#: Map settings of the shared test map: the demo's (one place), so a demo run and the
#: tests can share one build.
from neural_reloc.demo import DEMO_OVERRIDES  # noqa: E402

#: The shared test map: the demo's settings (600-step field at 160 px) with every stage
#: shortened (400 field steps of 2048 rays, CNN and descriptor stages on 40 cached
#: views, a 4-sample surface cache), so a clean clone builds it in about a third of the
#: demo map's time and the suite stays within CI's budget (figures in NOTES.md).
CROSSFIRE_TEST_MAP_OVERRIDES = [
    *DEMO_OVERRIDES, "map.train.steps=400", "map.train.rays_per_batch=2048", "train.cnn_steps=300",
    "train.field_steps=400", "train.surface_samples=4", "train.max_cached_views=40",
]


@pytest.fixture(scope="session")
def procedural_scene() -> Path:
    """Directory of the default procedural scene (transforms.json, images, depth)."""
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    out = TEST_DATA_DIR / "procedural"
    generate_procedural_scene(out, ProceduralSceneConfig())
    return out


@pytest.fixture(scope="session")
def room_scene():
    """The furnished room of the demo (seed 0): ``.dense`` and ``.sparse`` dataset
    directories (train = mapping walk, test = the query walks beside it)."""
    from neural_reloc.data.procedural.room import RoomSceneConfig, generate_room_scene
    from neural_reloc.demo import DEMO_SEED

    out = TEST_DATA_DIR / "room"
    with _build_lock(out):
        return generate_room_scene(out, RoomSceneConfig(seed=DEMO_SEED))


@pytest.fixture(scope="session")
def crossfire_map(room_scene) -> tuple[Path, Path]:
    """(map directory, dataset directory): a CROSSFIRE map of the room's mapping walk
    (dense), built with the test overrides above on the CPU; the dataset's test split
    are the queries off the walk."""
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.mapping import build_map
    from neural_reloc.methods.crossfire import CrossfireConfig

    cfg = merge(CrossfireConfig(), parse_dotted(CROSSFIRE_TEST_MAP_OVERRIDES))
    out = TEST_DATA_DIR / "crossfire_room_map"
    with _build_lock(out):  # concurrent test sessions wait for one build
        # overwrite: the cache holds generated data only; a map of older build settings is rebuilt
        build_map(load_dataset(room_scene.dense), out, method="crossfire", config=cfg, device="cpu", max_eval_views=4,
                  overwrite=True)
    return out, room_scene.dense


@pytest.fixture(scope="session")
def oracle_map(tmp_path_factory) -> Path:
    """A map of the exact stand-in relocalizer of test/oracle_method.py (built in seconds
    through the CLI with the plugin; node tests use it with node_helpers.Oracle)."""
    import subprocess
    import sys

    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene

    root = tmp_path_factory.mktemp("oracle_map")
    generate_procedural_scene(root / "scene", ProceduralSceneConfig(width=64, height=48, num_frames=6))
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT / 'test'}{os.pathsep}{REPO_ROOT}",
               NEURAL_RELOC_METHODS="oracle_method", NEURAL_RELOC_ORACLE_DIR=str(root))
    run = subprocess.run([sys.executable, "-m", "neural_reloc.cli", "build-map", "--method", "oracle", "--data",
                          str(root / "scene"), "--out", str(root / "map"), "--max-eval-views", "1"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return root / "map"


@contextlib.contextmanager
def _build_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
