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

#: Similarity-matrix entries per block of :func:`mutual_nearest_neighbours` (~2.4 MB of
#: float32: a block that stays in a CPU's L2/L3 cache; measured fastest at 128 rows
#: against 4800 columns on 2 cores).
MATCH_BLOCK_ELEMENTS = 128 * 4800


def mutual_nearest_neighbours(
    desc_a: torch.Tensor, desc_b: torch.Tensor, min_similarity: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual NN of unit descriptors (Na, D) and (Nb, D) with cosine > min_similarity.

    Returns (idx_a, idx_b, similarity) of the matches, ordered by idx_a. Of rows tied
    exactly at a column's maximum, the first keeps the column.
    """
    dev = desc_a.device
    if desc_a.shape[0] == 0 or desc_b.shape[0] == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e, torch.zeros(0, device=dev)
    na, nb = desc_a.shape[0], desc_b.shape[0]
    # One pass over row blocks of the similarity matrix; the whole (Na, Nb) matrix (92 MB
    # at 4800^2) never exists, so a block stays in cache. Each block gives its rows' best
    # (value and column) and updates the columns' best *values* only: on a CPU a
    # reduction with indices across rows costs ~10x one of values alone (amax), and the
    # mutual test needs no column index: row i and its best column j are mutual iff
    # sim(i, j) is also j's maximum (the same computed values, so the test is exact).
    chunk = na if desc_a.is_cuda else max(1, MATCH_BLOCK_ELEMENTS // nb)  # a GPU takes it whole
    row_sim = torch.empty(na, dtype=desc_a.dtype, device=dev)
    row_best = torch.empty(na, dtype=torch.long, device=dev)
    col_sim = torch.full((nb,), -float("inf"), dtype=desc_a.dtype, device=dev)
    b_t = desc_b.T.contiguous()
    for s in range(0, na, chunk):
        sim = desc_a[s : s + chunk] @ b_t
        row_sim[s : s + chunk], row_best[s : s + chunk] = sim.max(dim=1)
        col_sim = torch.maximum(col_sim, sim.amax(dim=0))
    keep = (row_sim >= col_sim[row_best]) & (row_sim > min_similarity)
    ia = keep.nonzero().squeeze(-1)
    ib = row_best[ia]
    # Rows tied at a column's maximum (exact float ties): the first row keeps it.
    if ib.numel() > 1:
        order = torch.argsort(ib * na + ia)
        dup = torch.zeros_like(ib, dtype=torch.bool)
        dup[order[1:]] = ib[order[1:]] == ib[order[:-1]]
        ia, ib = ia[~dup], ib[~dup]
    return ia, ib, row_sim[ia]


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


def subpixel_offsets(query_map: torch.Tensor, cell: torch.Tensor, desc: torch.Tensor) -> torch.Tensor:
    """Sub-cell position of each match: a parabola through the similarities of the
    matched cell and its two neighbours, along rows and along columns separately.

    ``query_map`` (D, H, W) unit descriptors, ``cell`` (M, 2) long (row, col) of the
    matched query cells, ``desc`` (M, D) the matched (rendered) descriptors. Returns
    (M, 2) float (row, col) offsets in [-0.5, 0.5] cells: 0 where the similarity is not
    a strict local maximum along that axis (e.g. at the image border).
    """
    _, h, w = query_map.shape
    offsets = torch.zeros(cell.shape[0], 2, dtype=desc.dtype, device=desc.device)
    if cell.shape[0] == 0:
        return offsets
    r, c = cell[:, 0], cell[:, 1]
    centre = (query_map[:, r, c].T * desc).sum(-1)
    for axis, (dr, dc), size in ((0, (1, 0), h), (1, (0, 1), w)):
        pos = cell[:, axis]
        inside = (pos > 0) & (pos < size - 1)
        lo = (query_map[:, (r - dr).clamp(0, h - 1), (c - dc).clamp(0, w - 1)].T * desc).sum(-1)
        hi = (query_map[:, (r + dr).clamp(0, h - 1), (c + dc).clamp(0, w - 1)].T * desc).sum(-1)
        curvature = lo - 2.0 * centre + hi  # < 0 at a strict maximum
        peak = inside & (curvature < 0) & (centre >= lo) & (centre >= hi)
        off = 0.5 * (lo - hi) / torch.where(peak, curvature, torch.ones_like(curvature))
        offsets[:, axis] = torch.where(peak, off.clamp(-0.5, 0.5), torch.zeros_like(off))
    return offsets
