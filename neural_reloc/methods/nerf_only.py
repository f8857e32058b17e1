"""The plain neural map (no relocalizer): photometric NeRF, for rendering and quality."""

from __future__ import annotations

from ..nerf.config import NeuralMapConfig
from ..nerf.train import NeuralMapTrainer
from .registry import MethodSpec, register

register(
    MethodSpec(
        name="nerf",
        description="neural map only (RGB, depth, features); no relocalizer",
        config_factory=NeuralMapConfig,
        trainer_factory=NeuralMapTrainer,
        config_file="neural_map.yaml",
    )
)
