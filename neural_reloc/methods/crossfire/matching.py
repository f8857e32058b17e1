"""Dense descriptor matching: rendered (map) descriptors against query CNN descriptors.

The paper matches the two dense maps with mutual nearest neighbours (cosine similarity
above a threshold). On a CPU the all-pairs similarity of two 160x120 maps (19200^2 dot
products of 32-D vectors) alone costs ~150 ms, so we match *coarse-to-fine*:

1. the query map is mean-pooled by ``factor`` (and re-normalized); the map's
   descriptors are rendered only at the matching block centres (every ``factor``-th
   pixel block: ``Camera.pixel_centers(stride=factor)``, the same image points);
2. mutual nearest neighbours between the two coarse sets, similarity > threshold;
3. each match is refined to the best full-resolution query cell within the matched
   block, widened by ``margin`` cells.

``factor=1`` is exactly the paper's dense mutual-NN matching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mutual_nearest_neighbours(
    desc_a: torch.Tensor, desc_b: torch.Tensor, min_similarity: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual NN of unit descriptors (Na, D) and (Nb, D) with cosine > min_similarity.

    Returns (idx_a, idx_b, similarity) of the matches.
    """
    if desc_a.shape[0] == 0 or desc_b.shape[0] == 0:
        e = torch.zeros(0, dtype=torch.long, device=desc_a.device)
        return e, e, torch.zeros(0, device=desc_a.device)
    # Two row-wise reductions over two products: a column-wise argmax over one (N, M)
    # matrix is a strided reduction, ~3x slower on CPUs than a second matmul.
    best_ab_sim, best_ab = (desc_a @ desc_b.T).max(dim=1)
    best_ba = (desc_b @ desc_a.T).max(dim=1).indices  # max: faster than argmax on CPU
    ia = torch.arange(desc_a.shape[0], device=desc_a.device)
    keep = (best_ba[best_ab] == ia) & (best_ab_sim > min_similarity)
    return ia[keep], best_ab[keep], best_ab_sim[keep]


def match_coarse_to_fine(
    render_desc: torch.Tensor,
    query_map: torch.Tensor,
    factor: int,
    min_similarity: float,
    margin: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match rendered descriptors at block centres to a dense query map.

    ``render_desc`` (Hc * Wc, D) unit descriptors rendered at the centres of the
    ``factor`` x ``factor`` blocks of the (H, W) matching grid, row-major, where
    Hc = H // factor, Wc = W // factor; ``query_map`` (D, H, W) unit descriptors.
    Returns (render_index, query_cell (M, 2) as (row, col) of the full-resolution query
    map, similarity).
    """
    d, h, w = query_map.shape
    hc, wc = h // factor, w // factor
    if render_desc.shape[0] != hc * wc:
        raise ValueError(f"render_desc has {render_desc.shape[0]} rows, expected {hc}x{wc} blocks of {factor}")
    if factor == 1:
        ir, iq, s = mutual_nearest_neighbours(render_desc, query_map.reshape(d, -1).T, min_similarity)
        return ir, torch.stack([iq // w, iq % w], -1), s
    q = query_map[:, : hc * factor, : wc * factor][None]
    coarse = F.normalize(F.avg_pool2d(q, factor)[0], dim=0).reshape(d, -1).T
    ir, ic, _ = mutual_nearest_neighbours(render_desc, coarse, min_similarity)
    if ir.numel() == 0:
        return ir, torch.zeros(0, 2, dtype=torch.long, device=ir.device), torch.zeros(0, device=ir.device)
    # Candidate full-resolution cells: the matched block plus a margin.
    k = factor + 2 * margin
    off = torch.arange(k, device=ir.device) - margin
    r0 = (ic // wc) * factor
    c0 = (ic % wc) * factor
    rows = (r0[:, None, None] + off[None, :, None]).clamp(0, h - 1).expand(-1, k, k)
    cols = (c0[:, None, None] + off[None, None, :]).clamp(0, w - 1).expand(-1, k, k)
    cand = query_map[:, rows, cols]  # (D, M, k, k)
    sims = torch.einsum("dmij,md->mij", cand, render_desc[ir]).reshape(ir.numel(), -1)
    best_sim, best = sims.max(dim=1)
    keep = best_sim > min_similarity
    cell = torch.stack([rows.reshape(ir.numel(), -1).gather(1, best[:, None])[:, 0],
                        cols.reshape(ir.numel(), -1).gather(1, best[:, None])[:, 0]], -1)
    return ir[keep], cell[keep], best_sim[keep]
