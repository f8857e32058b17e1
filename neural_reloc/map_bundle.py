"""The map bundle: one directory per map, written atomically, loaded safely.

Layout::

    my_map/
      manifest.json          format version, method, config, scene normalization,
                             reference views (intrinsics + OpenGL c2w), training-data
                             fingerprint, metrics, and the size + sha256 of every file
      weights.safetensors    all tensors (no pickle: loading cannot execute code)

A build writes everything into a hidden sibling directory and renames it into place
last, so a build killed at any moment leaves either the previous map or none — never
one that loads half-way. Loading verifies version, method, sizes and checksums and
names the file and the problem when something is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MAP_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
#: Tensors with more elements than this are stored as float16 (grid features); they
#: are converted back to float32 on load. Small tensors (MLPs) stay float32.
HALF_PRECISION_MIN_ELEMENTS = 1 << 20


class MapError(RuntimeError):
    """A map directory is missing, corrupt, of another version or another method."""


@dataclass
class ReferenceViews:
    """The posed views a map was built from (used for retrieval priors and info)."""

    names: list[str]
    cameras: list[dict]
    c2w_opengl: np.ndarray

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "cameras": list(self.cameras),
            "c2w_opengl": np.asarray(self.c2w_opengl).round(10).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceViews":
        return cls(list(d["names"]), list(d["cameras"]), np.asarray(d["c2w_opengl"], dtype=np.float64))


@dataclass
class MapBundle:
    path: Path
    manifest: dict
    tensors: dict[str, torch.Tensor]

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def references(self) -> ReferenceViews:
        return ReferenceViews.from_dict(self.manifest["reference_views"])

    def module_state(self, prefix: str) -> dict[str, torch.Tensor]:
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_map(
    out_dir: str | Path,
    *,
    method: str,
    modules: dict[str, torch.nn.Module | dict[str, torch.Tensor]],
    config: dict,
    scene: dict,
    references: ReferenceViews,
    fingerprint: str,
    extra: dict | None = None,
) -> Path:
    """Write a map atomically; ``modules`` maps a prefix to a module or a state dict."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, mod in modules.items():
            state = mod.state_dict() if isinstance(mod, torch.nn.Module) else mod
            for k, v in state.items():
                t = v.detach().cpu().contiguous()
                if t.is_floating_point() and t.numel() >= HALF_PRECISION_MIN_ELEMENTS:
                    t = t.half()
                tensors[f"{prefix}.{k}"] = t
        weights = tmp / WEIGHTS_NAME
        save_file(tensors, str(weights), metadata={"format": "neural_reloc", "version": str(MAP_FORMAT_VERSION)})
        with open(weights, "rb") as f:
            os.fsync(f.fileno())
        from . import __version__

        manifest = {
            "format_version": MAP_FORMAT_VERSION,
            "method": method,
            "created_unix": time.time(),
            "neural_reloc_version": __version__,
            "config": config,
            "scene": scene,
            "reference_views": references.to_dict(),
            "training_data_fingerprint": fingerprint,
            "files": {WEIGHTS_NAME: {"bytes": weights.stat().st_size, "sha256": sha256_file(weights)}},
            **(extra or {}),
        }
        man = tmp / MANIFEST_NAME
        with open(man, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MapError(f"map not found: {path}")
    if not path.is_dir():
        raise MapError(f"{path}: a map is a directory (with {MANIFEST_NAME} and {WEIGHTS_NAME}), this is a file")
    man = path / MANIFEST_NAME
    if not man.is_file():
        raise MapError(f"{man}: missing — {path} is not a neural_reloc map (or a build that never finished)")
    try:
        manifest = json.loads(man.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapError(f"{man}: not valid JSON ({e}); the map is corrupt") from e
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise MapError(f"{man}: no format_version; not a neural_reloc map manifest")
    v = manifest["format_version"]
    if v != MAP_FORMAT_VERSION:
        raise MapError(
            f"{man}: map format version {v}, but this neural_reloc reads version {MAP_FORMAT_VERSION}; "
            "rebuild the map with `neural-reloc build-map`"
        )
    for key in ("method", "config", "scene", "reference_views", "files"):
        if key not in manifest:
            raise MapError(f"{man}: required field {key!r} is missing")
    return manifest


def read_map(path: str | Path, expected_method: str | tuple[str, ...] | None = None, verify: bool = True) -> MapBundle:
    """Load and verify a map. ``expected_method`` rejects maps of another method."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    if expected_method is not None:
        allowed = (expected_method,) if isinstance(expected_method, str) else tuple(expected_method)
        if manifest["method"] not in allowed:
            raise MapError(
                f"{path / MANIFEST_NAME}: this is a {manifest['method']!r} map, expected {' or '.join(map(repr, allowed))}"
            )
    for name, meta in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise MapError(f"{f}: missing (listed in {MANIFEST_NAME})")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise MapError(f"{f}: {size} bytes but the manifest says {meta['bytes']}: truncated or corrupt")
        if verify and sha256_file(f) != meta["sha256"]:
            raise MapError(f"{f}: checksum mismatch: the file is corrupt")
    weights = path / WEIGHTS_NAME
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise MapError(f"{weights}: cannot be read as safetensors ({e})") from e
    tensors = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in tensors.items()}
    return MapBundle(path=path, manifest=manifest, tensors=tensors)


def map_size_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
