"""Building KSCR: the field (``build-map --method kscr``, as any map) or an existing
map's frozen field (``add-method kscr``), then descriptor synthesis with the map
(:func:`neural_reloc.synthesis.pipeline.synthesize`, resumable per view, skipped when
finished), then D2S on the real and kept synthetic keypoints (skipped on a rerun when
its checkpoint matches)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ...nerf.train import NeuralMapTrainer, atomic_torch_save
from ...synthesis.views import load_views
from .config import KscrConfig
from .model import D2S
from .training import train_d2s

#: Tensor-name prefix of the component (unique across a map's components).
REGRESSOR = "kscr_d2s"


def make_model(cfg: KscrConfig, descriptor_dim: int) -> D2S:
    m = cfg.model
    return D2S(descriptor_dim, m.dim, m.gnn_layers, m.heads, tuple(m.mlp))


class KscrTrainer(NeuralMapTrainer):
    def __init__(self, data, cfg: KscrConfig, device: torch.device, work_dir: Path,
                 progress: Callable | None = None, log: Callable[[str], None] = print):
        self.method_config = cfg
        self.kcfg = cfg
        # synthesis renders at the data's resolution (or image_long_side), not the field's
        self.full_data = data.with_max_size(cfg.image_long_side) if cfg.image_long_side else data
        self.regressor: D2S | None = None
        self.summary: dict = {}
        super().__init__(data, cfg.map, device, work_dir, progress, log)

    def modules_to_save(self) -> dict:
        mods = {"map": self.model}
        if self.regressor is not None:
            mods[REGRESSOR] = self.regressor
        return mods

    def fit(self):
        state = super().fit()  # the field (no steps when adopted from a map)
        self.model.eval()
        from ...synthesis.pipeline import synthesize

        where = Path(self.kcfg.synthesis_dir) if self.kcfg.synthesis_dir else self.work_dir / "synthesis"
        # real views alone: no synthetic view is rendered (limit 0)
        limit = None if self.kcfg.train.use_synthetic else 0
        synth_dir = synthesize(self.model, self.full_data, where, self.kcfg.synthesis,
                               self.device, self.progress, self.log, limit=limit)
        views = load_views(synth_dir, synthetic=self.kcfg.train.use_synthetic)
        if not views:
            raise ValueError(f"kscr: descriptor synthesis in {synth_dir} gave no keypoint views")
        self.regressor = make_model(self.kcfg, views[0].descriptors.shape[1]).to(self.device)
        path = self.work_dir / "kscr_d2s.pt"
        ident = self.run_identity()
        if path.is_file():
            try:
                ck = torch.load(path, map_location=self.device, weights_only=True)
                if ck.get("ident") == ident:
                    self.regressor.load_state_dict(ck["regressor"])
                    self.summary = ck.get("summary", {})
                    self.log(f"kscr: D2S trained in a previous run ({path})")
                    return state
            except Exception as e:  # unreadable: train again
                self.log(f"kscr: ignoring unreadable {path}: {e}")
        summary = train_d2s(self.regressor, views, self.kcfg.train, self.device, self.progress, self.log)
        stats = _synthesis_stats(synth_dir)
        self.summary = {**summary, "synthesis": stats}
        atomic_torch_save({"ident": ident, "regressor": self.regressor.state_dict(), "summary": self.summary}, path)
        return state


def _synthesis_stats(synth_dir: Path) -> dict:
    import json

    try:
        s = json.loads((synth_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    keep = ("real", "synthetic", "this_run", "extractor")  # counts, kept views, views/s, timings
    return {k: s[k] for k in keep if k in s}


def add_to_map(bundle, data, cfg: KscrConfig, device, work_dir, progress=None, log=print):
    """KSCR on an existing map's field, used as it is (``add-method kscr``)."""
    import dataclasses

    from ...config_io import from_dict
    from ...nerf.config import NeuralMapConfig

    cfg = dataclasses.replace(cfg, map=from_dict(NeuralMapConfig, bundle.manifest["field"]["config"]))
    trainer = KscrTrainer(data, cfg, device, work_dir, progress=progress, log=log)
    trainer.adopt_field(bundle)
    trainer.fit()
    return trainer.modules_to_save(), trainer.summary


__all__ = ["REGRESSOR", "KscrTrainer", "add_to_map", "make_model"]
