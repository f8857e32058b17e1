"""The map bundle: one directory per map, written atomically, loaded safely.

A map is a neural field plus method components trained on top of it ("one map, many
methods"). Layout (format version 2)::

    my_map/
      manifest.json          format version, default method, scene normalization,
                             reference views (intrinsics + OpenGL c2w), training-data
                             fingerprint, ``field`` (its config, file, training, metrics),
                             ``components`` (per method: its config, version, file,
                             training), and the size + sha256 of every file;
                             optionally ``alignment`` (``map_from_world``, the
                             similarity to a robot's metric map; absent: identity)
      field.safetensors      the neural field's tensors (``map.*``; none for a map
                             without a field, e.g. the classical baseline's)
      <method>.safetensors   each component's tensors (its CNN, heads of the field
                             ``map.field.heads.*``, retrieval index...)

All tensors are safetensors (no pickle: loading cannot execute code). Version 1 maps
(one ``weights.safetensors``, one method) are read as a field plus that method's
component, and rewritten as version 2 by ``neural-reloc add-method``.

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

MAP_FORMAT_VERSION = 2
#: Versions this neural_reloc reads (1: single-method maps, upgraded when read).
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
#: The single weights file of a version 1 map.
WEIGHTS_NAME = "weights.safetensors"
FIELD_FILE = "field.safetensors"
#: Tensor-name prefix of the neural field, and of the heads components add to it.
FIELD_PREFIX = "map."
HEADS_PREFIX = "map.field.heads."
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

    def __len__(self) -> int:
        return len(self.names)

    def camera(self, i: int):
        """View ``i``'s :class:`~neural_reloc.geometry.camera.Camera` (as a dataset's)."""
        from .geometry.camera import Camera

        return Camera.from_dict(self.cameras[i])

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
        """The default method (the one the map was built with)."""
        return self.manifest["method"]

    @property
    def components(self) -> dict[str, dict]:
        return self.manifest["components"]

    @property
    def has_field(self) -> bool:
        return self.manifest.get("field") is not None

    @property
    def references(self) -> ReferenceViews:
        return ReferenceViews.from_dict(self.manifest["reference_views"])

    @property
    def map_from_world(self):
        """The map's :class:`~neural_reloc.geometry.alignment.Similarity` (identity when
        the manifest has no ``alignment``)."""
        return manifest_alignment(self.manifest)

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


def _file_mode() -> int:
    """The mode a new file gets under this process's umask (0o644 with the usual 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def component_file(method: str) -> str:
    return f"{method}.safetensors"


def flatten_modules(modules: dict[str, torch.nn.Module | dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Prefix -> module or state dict, as one ``prefix.key`` -> tensor dict (CPU)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, mod in modules.items():
        state = mod.state_dict() if isinstance(mod, torch.nn.Module) else mod
        for k, v in state.items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    return tensors


def split_field(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the field's tensors, the rest): the field is ``map.*`` without the heads that
    components add to it."""
    field = {k: v for k, v in tensors.items() if k.startswith(FIELD_PREFIX) and not k.startswith(HEADS_PREFIX)}
    return field, {k: v for k, v in tensors.items() if k not in field}


def write_bundle(out_dir: str | Path, manifest: dict, files: dict[str, dict[str, torch.Tensor] | Path]) -> Path:
    """Write a map atomically: each ``files`` entry (file name -> tensors, or the path
    of an existing file to copy unchanged) as safetensors (large float tensors as
    float16), then ``manifest`` with the size and sha256 of every file, into a hidden
    sibling directory renamed into place last."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        listed = {}
        for name, tensors in files.items():
            _check_file_name(name, tmp)
            if isinstance(tensors, (str, Path)):  # an existing file, kept byte for byte
                shutil.copyfile(tensors, tmp / name)
                os.chmod(tmp / name, _file_mode())
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
                listed[name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                continue
            out = {}
            for k, t in tensors.items():
                t = t.detach().cpu().contiguous()
                if t.is_floating_point() and t.numel() >= HALF_PRECISION_MIN_ELEMENTS:
                    t = t.half()
                out[k] = t
            path = tmp / name
            save_file(out, str(path), metadata={"format": "neural_reloc", "version": str(MAP_FORMAT_VERSION)})
            os.chmod(path, _file_mode())  # safetensors writes 0600: other users (a node) must read maps
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            listed[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        manifest = {**manifest, "format_version": MAP_FORMAT_VERSION, "files": listed}
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
    field_config: dict | None = None,
    component: bool = True,
    component_version: int = 1,
) -> Path:
    """Write a freshly built map atomically: its field (``map.*`` of ``modules``, with
    ``field_config``) and, with ``component``, the method's component (everything
    else: heads, CNN, index...; ``config`` is the method's whole config). ``extra``:
    more manifest entries (``training``, ``metrics``...), shared by the field and the
    component of a one-command build."""
    from . import __version__

    extra = dict(extra or {})
    field_t, rest = split_field(flatten_modules(modules))
    now = time.time()
    files: dict[str, dict[str, torch.Tensor]] = {}
    field = None
    if field_t:
        files[FIELD_FILE] = field_t
        field = {"config": field_config if field_config is not None else config, "file": FIELD_FILE,
                 "training": extra.get("training", {}), "metrics": extra.get("metrics", {})}
    elif field_config is not None:
        raise ValueError("a field config was given but the modules have no field tensors (map.*)")
    components = {}
    if component:
        files[component_file(method)] = rest
        components[method] = {"method": method, "version": component_version, "config": config,
                              "file": component_file(method), "created_unix": now,
                              "training": extra.get("training", {})}
    elif rest:
        raise ValueError(f"{sorted(rest)[:3]}...: tensors outside the field but no component to hold them")
    manifest = {
        "format_version": MAP_FORMAT_VERSION,
        "method": method,
        "created_unix": now,
        "neural_reloc_version": __version__,
        "config": config,
        "scene": scene,
        "reference_views": references.to_dict(),
        "training_data_fingerprint": fingerprint,
        "field": field,
        "components": components,
        **extra,
    }
    return write_bundle(out_dir, manifest, files)


def _check_file_name(name: str, root: Path) -> None:
    """A file a manifest names must be a plain name inside the bundle."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise MapError(f"{root / MANIFEST_NAME}: file entry {name!r} is not a plain file name inside the map")


#: Required keys of a manifest's scene normalization, per mode.
SCENE_KEYS = {"bounded": ("aabb_min", "aabb_max", "near"), "contracted": ("center", "radius", "near", "far_contracted"),
              "none": ()}


def _check_manifest_structure(m: dict, man: Path) -> None:
    """MapError naming the first malformed entry of a manifest (types and shapes of what
    loading reads), so that a damaged map fails with a sentence, not a traceback."""
    def bad(what: str) -> MapError:
        return MapError(f"{man}: {what}; the map is corrupt or not one of ours")

    if not isinstance(m["method"], str):
        raise bad(f"'method' must be a string, got {m['method']!r}")
    if not isinstance(m["config"], dict):
        raise bad("'config' must be a mapping")
    files = m["files"]
    if not isinstance(files, dict):
        raise bad("'files' must be a mapping of file name -> {bytes, sha256}")
    for name, meta in files.items():
        if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int) and isinstance(meta.get("sha256"), str)):
            raise bad(f"files entry {name!r} must be {{\"bytes\": <int>, \"sha256\": <hex>}}, got {meta!r}")
    scene = m["scene"]
    mode = scene.get("mode") if isinstance(scene, dict) else None
    if mode not in SCENE_KEYS:
        raise bad(f"'scene' must have a mode ({', '.join(SCENE_KEYS)}), got {scene!r}")
    missing = [k for k in SCENE_KEYS[mode] if k not in scene]
    if missing:
        raise bad(f"'scene' ({mode}) lacks {', '.join(missing)}")
    refs = m["reference_views"]
    if not isinstance(refs, dict) or not all(isinstance(refs.get(k), list) for k in ("names", "cameras", "c2w_opengl")):
        raise bad("'reference_views' must have lists 'names', 'cameras' and 'c2w_opengl'")
    n = len(refs["names"])
    if len(refs["cameras"]) != n or len(refs["c2w_opengl"]) != n:
        raise bad(f"'reference_views' has {n} names, {len(refs['cameras'])} cameras and "
                  f"{len(refs['c2w_opengl'])} poses")
    if n and np.asarray(refs["c2w_opengl"], dtype=object).shape != (n, 4, 4):
        raise bad("'reference_views.c2w_opengl' must be 4x4 matrices")
    for key in ("field", "components"):
        if key in m and m[key] is not None and not isinstance(m[key], dict):
            raise bad(f"{key!r} must be a mapping")
    for name, c in (m.get("components") or {}).items():
        if not (isinstance(c, dict) and isinstance(c.get("method"), str) and isinstance(c.get("file"), str)
                and isinstance(c.get("config"), dict)):
            raise bad(f"component {name!r} must have 'method', 'file' and 'config'")
    if m.get("field") is not None and not (isinstance(m["field"].get("file"), str)
                                           and isinstance(m["field"].get("config"), dict)):
        raise bad("'field' must have 'file' and 'config'")
    if m.get("alignment") is not None:
        try:
            manifest_alignment(m)
        except ValueError as e:
            raise bad(f"'alignment': {e}") from None


def manifest_alignment(manifest: dict):
    """``map_from_world`` of a manifest's ``alignment`` entry (``{"map_from_world":
    {scale, rotation, translation}, ...}``; absent or null: identity). ValueError
    naming the field when it is malformed."""
    from .geometry.alignment import IDENTITY, Similarity

    entry = manifest.get("alignment")
    if entry is None:
        return IDENTITY
    if not isinstance(entry, dict) or "map_from_world" not in entry:
        raise ValueError("must be a mapping with 'map_from_world' ({scale, rotation, translation})")
    return Similarity.from_dict(entry["map_from_world"], "map_from_world")


def write_alignment(map_dir: str | Path, alignment: dict | None, out_dir: str | Path | None = None) -> Path:
    """Set (None: remove) a map's ``alignment`` manifest entry, atomically; to
    ``out_dir`` (default: in place). The map is verified first. Its files are not
    touched (their sizes and checksums stay valid): a format 2 map in place gets a new
    manifest (written beside it, renamed over it); a copy, or a format 1 map (rewritten
    as format 2), is written as a whole new bundle with its files copied byte for byte."""
    map_dir = Path(map_dir)
    out_dir = Path(out_dir) if out_dir is not None else map_dir
    bundle = read_map(map_dir)
    man = {k: v for k, v in bundle.manifest.items() if k != "alignment"}
    if alignment is not None:
        man["alignment"] = alignment
        _check_manifest_structure(man, map_dir / MANIFEST_NAME)
    stored_version = json.loads((map_dir / MANIFEST_NAME).read_text())["format_version"]
    if out_dir.resolve() == map_dir.resolve() and stored_version == MAP_FORMAT_VERSION:
        tmp = map_dir / f".{MANIFEST_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "w") as f:
                json.dump(man, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _file_mode())
            os.replace(tmp, map_dir / MANIFEST_NAME)
            _fsync_dir(map_dir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return out_dir
    from .mapping import _current_files  # the field and each component, as format 2 files

    man = {k: v for k, v in man.items() if k not in ("files", "format_version", "upgraded_from_format_version")}
    if bundle.has_field:
        man["field"] = {**man["field"], "file": FIELD_FILE}
    man["components"] = {n: {**c, "file": component_file(n)} for n, c in man["components"].items()}
    return write_bundle(out_dir, man, _current_files(bundle))


def upgrade_manifest_v1(manifest: dict) -> dict:
    """A version 1 manifest (one method, one ``weights.safetensors``) as version 2, in
    memory: the field (when the method trained one) plus the method's component, both
    read from the one file."""
    m = dict(manifest)
    method = m["method"]
    has_field = m.get("scene", {}).get("mode") != "none"
    m["field"] = ({"config": m.get("map_config", m["config"]), "file": WEIGHTS_NAME,
                   "training": m.get("training", {}), "metrics": m.get("metrics", {})} if has_field else None)
    field_only = method == "nerf"
    m["components"] = {} if field_only else {
        method: {"method": method, "version": 1, "config": m["config"], "file": WEIGHTS_NAME,
                 "created_unix": m.get("created_unix"), "training": m.get("training", {})}
    }
    m["upgraded_from_format_version"] = 1
    return m


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MapError(f"map not found: {path}")
    if not path.is_dir():
        raise MapError(f"{path}: a map is a directory (with {MANIFEST_NAME} and its .safetensors files), this is a file")
    man = path / MANIFEST_NAME
    if not man.exists():
        raise MapError(f"{man}: missing — {path} is not a neural_reloc map (or a build that never finished)")
    if not man.is_file():
        raise MapError(f"{man}: not a regular file")
    try:
        manifest = json.loads(man.read_text())
    except PermissionError:
        raise MapError(f"{man}: permission denied (the map's files must be readable by this user)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapError(f"{man}: not valid JSON ({e}); the map is corrupt") from e
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise MapError(f"{man}: no format_version; not a neural_reloc map manifest")
    v = manifest["format_version"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise MapError(f"{man}: format_version must be a whole number, got {v!r}")
    if v not in READABLE_FORMAT_VERSIONS:
        raise MapError(
            f"{man}: map format version {v}, but this neural_reloc reads versions "
            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}; rebuild the map with `neural-reloc build-map`"
        )
    required = ("method", "config", "scene", "reference_views", "files") + (("field", "components") if v >= 2 else ())
    for key in required:
        if key not in manifest:
            raise MapError(f"{man}: required field {key!r} is missing")
    _check_manifest_structure(manifest, man)
    if v == 1:
        manifest = upgrade_manifest_v1(manifest)
    for name in manifest["files"]:
        _check_file_name(name, path)
    needed = {c["file"] for c in manifest["components"].values()} | (
        {manifest["field"]["file"]} if manifest["field"] else set())
    unlisted = sorted(needed - set(manifest["files"]))
    if unlisted:
        raise MapError(f"{man}: {', '.join(unlisted)} used by the map but not listed (with its checksum) in 'files'")
    return manifest


def read_map(path: str | Path, expected_method: str | tuple[str, ...] | None = None, verify: bool = True) -> MapBundle:
    """Load and verify a map (every file the manifest lists: size and sha256).
    ``expected_method`` rejects maps without (one of) that method's component."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    if expected_method is not None:
        allowed = (expected_method,) if isinstance(expected_method, str) else tuple(expected_method)
        have = set(manifest["components"]) | ({"nerf"} if manifest["field"] else set())
        if not have & set(allowed):
            raise MapError(
                f"{path / MANIFEST_NAME}: this map has {', '.join(sorted(have)) or 'nothing'}, "
                f"expected {' or '.join(map(repr, allowed))}"
            )
    tensors: dict[str, torch.Tensor] = {}
    for name, meta in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise MapError(f"{f}: missing (listed in {MANIFEST_NAME})")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise MapError(f"{f}: {size} bytes but the manifest says {meta['bytes']}: truncated or corrupt")
        try:
            if verify and sha256_file(f) != meta["sha256"]:
                raise MapError(f"{f}: checksum mismatch: the file is corrupt")
            tensors.update(load_file(str(f)))
        except PermissionError:
            raise MapError(f"{f}: permission denied (the map's files must be readable by this user)") from None
        except (SafetensorError, OSError, ValueError) as e:
            raise MapError(f"{f}: cannot be read as safetensors ({e})") from e
    tensors = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in tensors.items()}
    return MapBundle(path=path, manifest=manifest, tensors=tensors)


def component_tensors(bundle: MapBundle, method: str) -> dict[str, torch.Tensor]:
    """The tensors of ``method``'s component: its file's, less the field's (a version 1
    map keeps both in one file)."""
    from safetensors.torch import load_file

    entry = bundle.components[method]
    names = set(load_file(str(bundle.path / entry["file"])).keys())
    if bundle.manifest.get("field") and entry["file"] == bundle.manifest["field"]["file"]:
        names = set(split_field({k: None for k in names})[1])
    return {k: bundle.tensors[k] for k in names}


def field_tensors(bundle: MapBundle) -> dict[str, torch.Tensor]:
    return split_field(bundle.tensors)[0] if bundle.has_field else {}


def map_size_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
