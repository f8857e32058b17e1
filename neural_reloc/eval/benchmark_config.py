"""What ``neural-reloc benchmark`` runs: :class:`BenchmarkConfig`, the benchmarked
entries (``NAME`` or ``NAME=METHOD``), the per-entry overrides and the checks that
fail a run before any work.

An entry is a registered method under a name: ``crossfire`` is the method itself,
``kscr_real=kscr`` a second configuration of ``kscr`` with its own ``--set`` /
``--reloc-set`` overrides (``kscr_real:train.use_synthetic=false``). Results, report
rows and folders are keyed by the name. ``field`` is not a name: with ``shared_field``
its map overrides configure the one neural field the methods are trained on.
A prior is one of :data:`~neural_reloc.localization.PRIOR_MODES` or ``global:METHOD``
(no prior given; another component of the same map, e.g. ``kscr``, gives the first
pose: shared-field mode only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config_io import ConfigError, merge, parse_dotted, to_dict
from ..localization import PRIOR_MODES

#: The override key of the shared neural field (``--set field:map.train.steps=600``).
FIELD_ENTRY = "field"
#: Names an entry cannot have: the shared field's key, and the folders under OUT/<dataset>/.
RESERVED_NAMES = (FIELD_ENTRY, "shared", "maps")
#: A prior ``global:METHOD``: METHOD's component gives the first pose (no prior given).
GLOBAL_PRIOR_PREFIX = "global:"
#: An entry name: a folder name and a report row.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass
class BenchmarkConfig:
    """What ``neural-reloc benchmark`` runs and how it scores it (defaults in one place)."""

    # Entries: registered methods that relocalize (neural_reloc.methods.registry), each
    # "METHOD" or "NAME=METHOD" (a second configuration of METHOD under its own name).
    methods: tuple[str, ...] = ("crossfire",)
    # Priors each method starts from: localization.PRIOR_MODES (retrieval, perturbed,
    # constant), or "global:METHOD" (shared_field only: METHOD's component of the same map
    # gives the frames their first pose instead of the method's own retrieval).
    priors: tuple[str, ...] = ("retrieval",)
    # Query frames; maps are built from the "train" split.
    split: str = "test"
    # Localize at most this many query frames per dataset (0: all).
    limit: int = 0
    # Maps from every N-th frame of the map split only (queries unchanged); N > 1 puts the
    # run in OUT/<dataset>@everyN so that it never mixes with a full one.
    map_every: int = 1
    # One neural field per dataset (maps/field, method "nerf", overrides "field:..."), and
    # the components of the methods that can be added to a map trained on it (maps/shared;
    # a variant with other component settings: maps/<name>); the others build their own map.
    shared_field: bool = False
    # "perturbed" prior: the ground truth moved by exactly this much (dataset units) ...
    perturb_m: float = 0.3
    # ... and rotated by exactly this many degrees about a random axis (seeded).
    perturb_deg: float = 15.0
    # Seed of those perturbations.
    seed: int = 0
    # "constant" prior: the map's reference view used for every frame (-1: the central one).
    constant_reference: int = -1
    # Untimed localizations of the first query frame before each timed run, so that
    # first-call costs (allocations, kernel selection) stay out of the latency figures.
    warmup_frames: int = 1
    # Render the held-out views after a build (map PSNR / depth error in the report) ...
    evaluate_maps: bool = True
    # ... at most this many of them (0: all).
    max_eval_views: int = 8
    # Absolute recall thresholds: (translation in dataset units, normally metres, degrees).
    recall_thresholds: tuple[tuple[float, float], ...] = ((0.01, 1.0), (0.02, 2.0), (0.05, 5.0))
    # Relative recall thresholds: (fraction of the scene scale, degrees), for scenes in
    # arbitrary units (e.g. 0.005 = 0.5% of the median query depth).
    relative_recall_thresholds: tuple[tuple[float, float], ...] = ((0.005, 1.0), (0.01, 2.0), (0.025, 5.0))
    # The scene scale is computed over at most this many query frames, evenly spaced (0: all).
    scale_max_frames: int = 100
    # Failures by cause are counted over the frames that miss recall at these.
    failure_t_m: float = 0.05
    failure_r_deg: float = 5.0
    # A prior further from the truth than either is "wrong place" (outside the basin).
    basin_t_m: float = 1.0
    basin_r_deg: float = 45.0
    # Per entry name (and "field"): map config overrides ("key.path=value", relative to
    # the method config; part of the map's identity: a change rebuilds the map).
    map_overrides: dict[str, list[str]] = field(default_factory=dict)
    # Per entry name: relocalizer overrides ("localization.max_iterations=2"); they never
    # rebuild a map, only relocalize again.
    reloc_overrides: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------- entries and priors
def method_entries(cfg: BenchmarkConfig) -> dict[str, str]:
    """Entry name -> registered method, in ``cfg.methods`` order (``kscr_real=kscr`` ->
    ``{"kscr_real": "kscr"}``); ConfigError for a malformed entry."""
    out: dict[str, str] = {}
    for item in cfg.methods:
        name, sep, method = (s.strip() for s in item.partition("="))
        if not name or (sep and not method) or "=" in method:
            raise ConfigError(f"--methods entry {item!r}: expected METHOD or NAME=METHOD, e.g. kscr_real=kscr")
        if name in out:
            raise ConfigError(f"--methods: name {name!r} is listed twice ({', '.join(cfg.methods)})")
        out[name] = method or name
    return out


def global_prior_method(prior: str) -> str:
    """``"global:kscr"`` -> ``"kscr"``; ``""`` for the other priors."""
    return prior[len(GLOBAL_PRIOR_PREFIX):].strip() if prior.startswith(GLOBAL_PRIOR_PREFIX) else ""


def prior_file_stem(prior: str) -> str:
    """A prior's result file name (``global:kscr`` -> ``global-kscr``)."""
    return prior.replace(":", "-")


def field_overrides(cfg: BenchmarkConfig) -> list[str]:
    """The shared field's overrides relative to NeuralMapConfig: ``field:map.train.steps=600``
    (as in a method's ``map`` section) or ``field:train.steps=600``."""
    out = []
    for o in cfg.map_overrides.get(FIELD_ENTRY, []):
        out.append(o[len("map."):] if o.startswith("map.") else o)
    return out


def field_config(cfg: BenchmarkConfig) -> Any:
    """The shared field's NeuralMapConfig (defaults + ``field:`` overrides)."""
    from ..nerf.config import NeuralMapConfig

    overrides = field_overrides(cfg)
    try:
        return merge(NeuralMapConfig(), parse_dotted(overrides)) if overrides else NeuralMapConfig()
    except ConfigError as e:
        raise ConfigError(f"map override of the shared field ({', '.join(overrides)}): {e}") from None


# ---------------------------------------------------------------- overrides
def parse_method_overrides(items: Sequence[str], option: str = "--set") -> dict[str, list[str]]:
    """``["crossfire:map.train.steps=600", ...]`` -> ``{"crossfire": ["map.train.steps=600"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        method, sep, assignment = item.partition(":")
        key = assignment.split("=", 1)[0].strip()
        if not sep or not method.strip() or "=" in method or "=" not in assignment or not key:
            raise ConfigError(
                f"{option} {item!r}: expected METHOD:key.path=value (the method name before the colon), "
                "e.g. crossfire:map.train.steps=600"
            )
        out.setdefault(method.strip(), []).append(assignment.strip())
    return out


def add_method_overrides(cfg: BenchmarkConfig, map_items: Sequence[str] = (), reloc_items: Sequence[str] = ()) -> BenchmarkConfig:
    """``cfg`` with ``--set`` / ``--reloc-set`` items (NAME:key=value) appended to the
    overrides it already has (e.g. from a config file), which they therefore follow."""
    for name, items, option in (("map_overrides", map_items, "--set"), ("reloc_overrides", reloc_items, "--reloc-set")):
        table = getattr(cfg, name)
        if not isinstance(table, dict):
            raise ConfigError(f"benchmark config {name}: expected a mapping method -> list of overrides, got {table!r}")
        for method, assignments in parse_method_overrides(items, option).items():
            table[method] = [*table.get(method, []), *assignments]
    return cfg


def method_config(method: str, overrides: Sequence[str] = (), what: str = "map override", name: str = "") -> Any:
    """The method's default config with ``key.path=value`` overrides; errors name the
    entry (``name``, default the method)."""
    from ..methods.registry import get_method

    cfg = get_method(method).config_factory()
    if not overrides:
        return cfg
    try:
        return merge(cfg, parse_dotted(list(overrides)))
    except ConfigError as e:
        who = f"method {method!r}" if not name or name == method else f"{name!r} (method {method!r})"
        raise ConfigError(f"{what} of {who} ({', '.join(overrides)}): {e}") from None


def component_key(method: str, overrides: Sequence[str] = ()) -> dict:
    """What decides a component trained on a shared field: its config without the
    ``localization`` (run time) and ``map`` (the field's, replaced by add_method) sections."""
    return {k: v for k, v in to_dict(method_config(method, overrides)).items() if k not in ("localization", "map")}


def can_share_field(method: str) -> bool:
    from ..methods.registry import get_method

    return get_method(method).add_to_map is not None


# ---------------------------------------------------------------- validation
def _validate_entries(cfg: BenchmarkConfig) -> dict[str, str]:
    from ..methods.registry import available_methods, get_method

    if not cfg.methods:
        raise ConfigError("no methods to benchmark (--methods)")
    entries = method_entries(cfg)
    known = available_methods()
    relocalizing = [m for m in known if get_method(m).relocalizer_factory is not None]
    for name, m in entries.items():
        if m not in known:
            raise ConfigError(f"method {m!r} is not registered; available: {', '.join(known)}")
        if m not in relocalizing:
            raise ConfigError(
                f"method {m!r} builds maps but cannot relocalize; methods that relocalize: {', '.join(relocalizing)}"
            )
        if name == m:
            continue
        if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
            raise ConfigError(f"--methods entry {name}={m}: the name must be a letter then letters, digits, _ or - "
                              f"and none of {', '.join(RESERVED_NAMES)}")
        if name in known:
            raise ConfigError(f"--methods entry {name}={m}: {name!r} is a registered method; give the variant "
                              f"another name (e.g. {m}_{name})")
    return entries


def _validate_priors(cfg: BenchmarkConfig, entries: dict[str, str]) -> None:
    from ..methods.registry import get_method

    if not cfg.priors:
        raise ConfigError("no priors to benchmark (--priors)")
    if len(set(cfg.priors)) != len(cfg.priors):
        raise ConfigError(f"priors listed twice: {', '.join(cfg.priors)}")
    for p in cfg.priors:
        g = global_prior_method(p)
        if not p.startswith(GLOBAL_PRIOR_PREFIX):
            if p not in PRIOR_MODES:
                raise ConfigError(f"prior {p!r} is not one of {', '.join(PRIOR_MODES)} or global:METHOD")
            continue
        if not cfg.shared_field:
            raise ConfigError(f"prior {p!r} needs --shared-field: the {g or 'METHOD'} component must be in the same "
                              "map as the method it starts")
        if g not in entries.values():
            raise ConfigError(f"prior {p!r}: method {g!r} is not benchmarked (methods: {', '.join(cfg.methods)}); "
                              "its component must be trained on the shared field")
        if not can_share_field(g):
            raise ConfigError(f"prior {p!r}: method {g!r} cannot be added to a shared field (it builds its own map)")
        if get_method(g).relocalizer_factory is None:
            raise ConfigError(f"prior {p!r}: method {g!r} has no relocalizer")


def _validate_overrides(cfg: BenchmarkConfig, entries: dict[str, str]) -> None:
    for what, table in (("map override", cfg.map_overrides), ("relocalizer override", cfg.reloc_overrides)):
        for name, overrides in table.items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ConfigError(f"{what}s of {name!r}: expected a list of 'key.path=value' strings, got {overrides!r}")
            if name == FIELD_ENTRY and what == "map override":
                if not cfg.shared_field:
                    raise ConfigError(f"map override {name}:{overrides[0]} configures the shared field: it needs "
                                      "--shared-field (without it, each method's map has its own: METHOD:map.KEY=VALUE)")
                field_config(cfg)
                continue
            if name not in entries:
                raise ConfigError(f"{what} {name}:{overrides[0]} names method {name!r}, which is not benchmarked "
                                  f"(methods: {', '.join(cfg.methods)})")
            method = entries[name]
            method_config(method, overrides, what, name)
            if what == "map override" and cfg.shared_field and can_share_field(method):
                own_field = [o for o in overrides if o.split("=", 1)[0].strip().startswith("map.")]
                if own_field:
                    raise ConfigError(f"map override {name}:{own_field[0]}: with --shared-field the methods are trained "
                                      f"on one field; set it as {FIELD_ENTRY}:{own_field[0]}")


def validate_config(cfg: BenchmarkConfig) -> None:
    """Fail before any work on unknown or map-only methods, malformed or clashing entry
    names, unknown priors, a ``global:`` prior that cannot be met, overrides for entries
    that are not benchmarked, invalid override keys and bad thresholds."""
    entries = _validate_entries(cfg)
    _validate_priors(cfg, entries)
    _validate_overrides(cfg, entries)
    for name in ("recall_thresholds", "relative_recall_thresholds"):
        for i, pair in enumerate(getattr(cfg, name)):
            if len(pair) != 2:
                raise ConfigError(f"benchmark config {name}[{i}]: expected [translation, degrees], got {list(pair)}")
    positive = {"failure_t_m": cfg.failure_t_m, "failure_r_deg": cfg.failure_r_deg,
                "basin_t_m": cfg.basin_t_m, "basin_r_deg": cfg.basin_r_deg, "map_every": cfg.map_every}
    positive |= {f"recall_thresholds[{i}]": min(t) for i, t in enumerate(cfg.recall_thresholds)}
    positive |= {f"relative_recall_thresholds[{i}]": min(t) for i, t in enumerate(cfg.relative_recall_thresholds)}
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"benchmark config {name}: must be > 0, got {value}")
    for name in ("limit", "warmup_frames", "max_eval_views", "scale_max_frames"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"benchmark config {name}: must be >= 0, got {getattr(cfg, name)}")
