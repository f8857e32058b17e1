"""Atomic JSON results files (results.json, agreement.json, localize/demo output)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a temporary file in the same folder and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: Statuses of a results file that is not a finished good result (may be replaced).
UNFINISHED_STATUSES = ("running", "error", "interrupted")


def failed_path(path: Path) -> Path:
    """Where a failed run writes what it got when ``path`` holds a good result:
    ``results.json`` -> ``results.failed.json``, beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.failed{path.suffix}")


def holds_good_result(path: Path) -> bool:
    """Whether ``path`` is a results file a failed run must not replace: any file that
    is not a results JSON of an unfinished or failed run."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return True  # not ours to judge: keep it
    return status not in UNFINISHED_STATUSES


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a file to write, checked before any work: not a directory, and its
    folder exists or can be made (ValueError naming the option and the problem)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name (e.g. {path / 'results.json'})")
    _check_folder(path.parent, path, option)
    return path


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a folder to write into, checked before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file; give a folder (it is created if missing)")
    _check_folder(path, path, option)
    return path


def _check_folder(folder: Path, path: Path, option: str) -> None:
    """The nearest existing of ``folder`` and its parents must be a writable folder."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable")
