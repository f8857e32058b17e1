"""NeRFMatch-Mini's matching: cosine similarities, dual softmax, mutual matches (paper
Sec. 4.1), and the coarse loss L_c (eq. 3)."""

from __future__ import annotations

import torch


def dual_softmax(image_features: torch.Tensor, nerf_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unit (N_m, D) and (N_s, D) -> scores S (N_m, N_s): softmax over image cells times
    softmax over NeRF points of the similarities / temperature."""
    sim = image_features @ nerf_features.T / temperature
    return torch.softmax(sim, dim=0) * torch.softmax(sim, dim=1)


def mutual_matches(scores: torch.Tensor, min_score: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image cell, NeRF point, score) of the pairs that are each other's best and score
    at least ``min_score``."""
    if scores.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=scores.device)
        return e, e, scores.new_zeros(0)
    best_point = scores.argmax(dim=1)  # per image cell
    best_cell = scores.argmax(dim=0)  # per NeRF point
    cells = torch.arange(scores.shape[0], device=scores.device)
    mutual = best_cell[best_point] == cells
    s = scores[cells, best_point]
    keep = mutual & (s >= min_score)
    return cells[keep], best_point[keep], s[keep]


def coarse_loss(scores: torch.Tensor, gt_cells: torch.Tensor, gt_points: torch.Tensor) -> torch.Tensor:
    """L_c = -mean log S(i, j) over the ground-truth associations (eq. 3)."""
    return -torch.log(scores[gt_cells, gt_points].clamp_min(1e-12)).mean()


__all__ = ["coarse_loss", "dual_softmax", "mutual_matches"]
