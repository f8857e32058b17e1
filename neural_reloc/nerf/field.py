"""The radiance field: position encoding -> density MLP -> colour MLP, plus extra heads.

Extra heads (CROSSFIRE's descriptor head, ...) see *position-only* features — the grid
encoding and the density MLP's geometric feature — and never the viewing direction or
the appearance embedding. That is the extension point: ``field.add_head(name, head)``.

Intermediate layers are exposed by name for volumetric rendering of features
(NeRFMatch renders NeRF's internal features): see :data:`FEATURE_LAYERS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FieldConfig
from .encoding import make_position_encoding, spherical_harmonics

#: Names of intermediate features that can be volume-rendered.
FEATURE_LAYERS = ("encoding", "density_hidden", "geo_feat", "color_hidden")

#: Clamp of the density pre-activation in trunc_exp (Instant-NGP's trick).
TRUNC_EXP_MAX = 15.0


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(-TRUNC_EXP_MAX, TRUNC_EXP_MAX))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


class FieldHead(nn.Module):
    """Base class of extra heads. ``inputs`` names the position-only features used."""

    out_dim: int
    inputs: tuple[str, ...] = ("encoding", "geo_feat")

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class NeuralField(nn.Module):
    def __init__(self, cfg: FieldConfig, num_images: int):
        super().__init__()
        self.cfg = cfg
        self.encoding = make_position_encoding(cfg.encoding)
        enc_dim = self.encoding.out_dim
        self.geometry_dim = self.encoding.geometry_dim
        self.density_hidden = nn.Linear(self.geometry_dim, cfg.hidden_dim)
        self.density_out = nn.Linear(cfg.hidden_dim, 1 + cfg.geo_feat_dim)
        with torch.no_grad():
            self.density_out.bias[0].fill_(cfg.density_bias)
        self.sh_dim = cfg.direction_sh_degree**2
        self.appearance = (
            nn.Embedding(num_images, cfg.appearance_dim) if cfg.appearance_dim > 0 else None
        )
        if self.appearance is not None:
            nn.init.zeros_(self.appearance.weight)
        # Colour sees the encoding's detail features (those not used for density).
        self.detail_dim = enc_dim - self.geometry_dim
        in_dim = cfg.geo_feat_dim + self.detail_dim + self.sh_dim + max(0, cfg.appearance_dim)
        layers: list[nn.Module] = []
        for i in range(cfg.color_layers):
            layers += [nn.Linear(in_dim if i == 0 else cfg.color_hidden_dim, cfg.color_hidden_dim), nn.ReLU(inplace=True)]
        self.color_hidden = nn.Sequential(*layers)
        self.color_out = nn.Linear(cfg.color_hidden_dim if cfg.color_layers else in_dim, 3)
        self.heads = nn.ModuleDict()
        # "position": the unit-cube point itself, for heads with an encoding of their own.
        self.input_dims = {
            "position": 3,
            "encoding": enc_dim,
            "geo_feat": cfg.geo_feat_dim,
            "density_hidden": cfg.hidden_dim,
        }

    # ------------------------------------------------------------ heads
    def add_head(self, name: str, head: FieldHead) -> None:
        forbidden = {"direction", "appearance"} & set(head.inputs)
        if forbidden:
            raise ValueError(f"head {name!r} may not see {sorted(forbidden)}: heads are position-only")
        unknown = set(head.inputs) - set(self.input_dims)
        if unknown:
            raise ValueError(f"head {name!r}: unknown inputs {sorted(unknown)}; have {sorted(self.input_dims)}")
        # On the field's device: a head added after the map moved to a GPU goes with it.
        self.heads[name] = head.to(self.density_out.weight.device)

    def head_input_dim(self, inputs: tuple[str, ...]) -> int:
        return sum(self.input_dims[i] for i in inputs)

    # ------------------------------------------------------------ evaluation
    def geometry(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Position-only part: density and geometric features at unit-cube points."""
        enc = self.encoding(x01)
        hidden = F.relu(self.density_hidden(enc[:, : self.geometry_dim]), inplace=True)
        out = self.density_out(hidden)
        return {
            "position": x01,
            "encoding": enc,
            "density_hidden": hidden,
            "sigma": trunc_exp(out[:, 0]),
            "geo_feat": out[:, 1:],
        }

    def density(self, x01: torch.Tensor) -> torch.Tensor:
        return self.geometry(x01)["sigma"]

    def appearance_codes(self, image_index: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        """Per-sample appearance embedding; ``None`` index = mean over training images."""
        if self.appearance is None:
            return None
        if image_index is None:
            return self.appearance.weight.mean(0, keepdim=True).expand(n, -1)
        return self.appearance(image_index)

    def color(
        self, geo: dict[str, torch.Tensor], dirs: torch.Tensor, appearance: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        parts = [geo["geo_feat"]]
        if self.detail_dim:
            parts.append(geo["encoding"][:, self.geometry_dim :])
        parts.append(spherical_harmonics(dirs, self.cfg.direction_sh_degree))
        if appearance is not None:
            parts.append(appearance)
        h = self.color_hidden(torch.cat(parts, -1))
        return {"color_hidden": h, "rgb": torch.sigmoid(self.color_out(h))}

    def head_outputs(self, geo: dict[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
        out = {}
        for name in names:
            head = self.heads[name]
            feats = torch.cat([geo[i] for i in head.inputs], -1)
            out[name] = head(feats)
        return out
