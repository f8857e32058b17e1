"""``neural-reloc synthesize --map M --data D --out DIR``: the descriptor-synthesis
pipeline from the command line. ``neural_reloc/cli.py`` registers it with
``add_parser(sub)``; settings are given as ``--set synthesis.<key>=<value>`` (the
section name a method config embeds :class:`SynthesisConfig` under).
"""

from __future__ import annotations

import argparse
import json
import sys

#: The section of --set keys (and of a method config that embeds the settings).
SECTION = "synthesis"


def synthesis_config(overrides: list[str] | None):
    """SynthesisConfig with ``synthesis.key=value`` overrides (ConfigError for any other key)."""
    from ..config_io import ConfigError, merge, parse_dotted
    from .config import SynthesisConfig

    cfg = SynthesisConfig()
    if not overrides:
        return cfg
    tree = parse_dotted(overrides)
    other = sorted(k for k in tree if k != SECTION)
    if other or not isinstance(tree.get(SECTION), dict):
        raise ConfigError(f"--set keys must start with '{SECTION}.' (e.g. {SECTION}.filter.min_matches=30); "
                          f"got {', '.join(other) or SECTION}")
    return merge(cfg, tree[SECTION])


def cmd_synthesize(args) -> int:
    from ..data import load_dataset
    from ..device import resolve_device
    from ..progress import progress_bar
    from .pipeline import SUMMARY_FILE, synthesize

    cfg = synthesis_config(args.set)
    data = load_dataset(args.data)
    if args.max_long_side:
        data = data.with_max_size(args.max_long_side)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    out = synthesize(args.map, data, args.out, cfg, device=resolve_device(args.device),
                     progress=None if args.quiet else progress_bar(), log=log, limit=args.limit)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    print(json.dumps({k: summary[k] for k in ("complete", "real", "synthetic", "this_run", "contact_sheet")}, indent=1))
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``synthesize`` command to ``sub`` (an ``add_subparsers()`` object)."""
    from ..cli import count

    p = sub.add_parser("synthesize", help="render synthetic views from a map and write keypoint views for a "
                       "keypoint scene-coordinate regressor (resumable)")
    p.add_argument("--map", required=True, help="map directory (its neural field renders the views)")
    p.add_argument("--data", required=True, help="the map's dataset: its train split gives the real views")
    p.add_argument("--out", required=True, help="output folder (a rerun into it continues where it stopped)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="settings, e.g. synthesis.filter.min_matches=30")
    p.add_argument("--max-long-side", type=count, default=0,
                   help="load the data downscaled to this long side in pixels (0: its own resolution)")
    p.add_argument("--limit", type=count, default=None,
                   help="process at most this many synthetic views now (a rerun continues)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    p.set_defaults(func=cmd_synthesize)
    return p


__all__ = ["add_parser", "cmd_synthesize", "synthesis_config"]
