"""CROSSFIRE's descriptor head of the neural field (paper Sec. 3.1, Fig. 2).

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


class DescriptorHead(FieldHead):
    """MLP: ``in_dim`` -> ``num_layers`` x (Linear(hidden_dim) + ReLU) -> Linear(dim).

    ``in_dim`` must equal ``field.head_input_dim(inputs)``; :meth:`for_field` fills it in.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = DEFAULT_DIM,
        hidden_dim: int = DEFAULT_HIDDEN_DIM,
        num_layers: int = DEFAULT_LAYERS,
        inputs: tuple[str, ...] = DEFAULT_INPUTS,
    ):
        super().__init__()
        self.inputs = tuple(inputs)
        self.in_dim = int(in_dim)
        self.out_dim = int(dim)
        layers: list[nn.Module] = []
        d = self.in_dim
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
        return cls(
            field.head_input_dim(inputs),
            dim=cfg.dim,
            hidden_dim=cfg.head_hidden_dim,
            num_layers=cfg.head_layers,
            inputs=inputs,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_dim:
            raise ValueError(
                f"DescriptorHead expects {self.in_dim} input features ({'+'.join(self.inputs)}), "
                f"got {features.shape[-1]}"
            )
        return self.mlp(features)
