"""CROSSFIRE's descriptor head of the neural field (paper Sec. 3.1, Fig. 2).

Deviation (measured, see NOTES.md): besides the field's position-only features the
head has a multi-resolution tri-plane grid of its own over the point's position
(``DescriptorConfig.encoding``). In the paper the descriptor losses reshape the
shared NeRF features over 100k GPU steps; on our budgets they must not (they wreck the
geometry), and a small MLP on frozen geometry features has far too few parameters to
store a scene-wide field of discriminative descriptors. Still position-only.

"We model these descriptors as invariant to viewing direction d and appearance vector
L^(a) (i.e. we do not provide d and L^(a) to the MLP head responsible of generating the
positional feature)." The head therefore reads position-only features of the field
(the grid encoding and the density MLP's geometric feature) and outputs an
*unnormalized* D-dimensional descriptor per 3D point. The volume-rendered (weight-summed)
descriptor of a ray is normalized afterwards by the renderer's caller; the losses
(cosine similarity) normalize anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...nerf.config import EncodingConfig
from ...nerf.encoding import MultiResGridEncoding
from ...nerf.field import FieldHead

if TYPE_CHECKING:
    from ...nerf.field import NeuralField
    from .config import DescriptorConfig

# Defaults (mirrored by DescriptorConfig.dim / .head_hidden_dim / .head_layers).
DEFAULT_DIM = 32
DEFAULT_HIDDEN_DIM = 64
DEFAULT_LAYERS = 2
#: Position-only field features the head reads (never "direction" nor "appearance").
DEFAULT_INPUTS = ("encoding", "geo_feat")
#: The head's own grid over "position" (tri-planes, K-Planes style products).
DEFAULT_PLANE_RESOLUTIONS = (128, 256, 512)
DEFAULT_PLANE_FEATURES = 8


def default_encoding() -> EncodingConfig:
    return EncodingConfig(
        kind="grid",
        dense_resolutions=(),
        plane_resolutions=DEFAULT_PLANE_RESOLUTIONS,
        plane_features=DEFAULT_PLANE_FEATURES,
    )


class DescriptorHead(FieldHead):
    """[own grid(position) ++ field features] -> MLP -> unnormalized descriptor.

    MLP: ``num_layers`` x (Linear(hidden_dim) + ReLU) -> Linear(dim). ``in_dim`` must
    equal ``field.head_input_dim(inputs)`` (:meth:`for_field` fills it in). With
    ``encoding`` (an :class:`EncodingConfig` of a grid encoding) ``inputs`` must start
    with "position", which the head encodes with its own grid instead of reading raw.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = DEFAULT_DIM,
        hidden_dim: int = DEFAULT_HIDDEN_DIM,
        num_layers: int = DEFAULT_LAYERS,
        inputs: tuple[str, ...] = DEFAULT_INPUTS,
        encoding: EncodingConfig | None = None,
    ):
        super().__init__()
        self.inputs = tuple(inputs)
        self.in_dim = int(in_dim)
        self.out_dim = int(dim)
        self.encoding = None
        d = self.in_dim
        if encoding is not None:
            if not self.inputs or self.inputs[0] != "position":
                raise ValueError(f"DescriptorHead with its own encoding needs inputs starting with 'position', got {self.inputs}")
            self.encoding = MultiResGridEncoding(encoding)
            d = self.in_dim - 3 + self.encoding.out_dim
        layers: list[nn.Module] = []
        for _ in range(int(num_layers)):
            layers += [nn.Linear(d, hidden_dim), nn.ReLU(inplace=True)]
            d = hidden_dim
        layers.append(nn.Linear(d, self.out_dim))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def for_field(
        cls, field: NeuralField, cfg: DescriptorConfig | None = None, inputs: tuple[str, ...] = DEFAULT_INPUTS
    ) -> DescriptorHead:
        """A head sized for ``field``'s features (then ``field.add_head(name, head)``)."""
        if cfg is None:
            return cls(field.head_input_dim(inputs), inputs=inputs)
        enc = cfg.encoding if cfg.encoding.plane_resolutions or cfg.encoding.dense_resolutions else None
        if enc is not None:
            inputs = ("position",) + tuple(i for i in inputs if i != "position")
        return cls(
            field.head_input_dim(inputs),
            dim=cfg.dim,
            hidden_dim=cfg.head_hidden_dim,
            num_layers=cfg.head_layers,
            inputs=inputs,
            encoding=enc,
        )

    def grid_parameters(self) -> list[nn.Parameter]:
        """The own grid's parameters (trained with a grid learning rate)."""
        return list(self.encoding.parameters()) if self.encoding is not None else []

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_dim:
            raise ValueError(
                f"DescriptorHead expects {self.in_dim} input features ({'+'.join(self.inputs)}), "
                f"got {features.shape[-1]}"
            )
        if self.encoding is not None:
            features = torch.cat([self.encoding(features[:, :3]), features[:, 3:]], -1)
        return self.mlp(features)
