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

*Guided* matching (``window``): when the pose the view was rendered at is already an
estimate of this frame's pose, a rendered block and its true query block lie at nearly
the same place in the two maps. The mutual-NN test then runs over the pairs at most
``window`` blocks apart along each axis only (:func:`windowed_mutual_nearest_neighbours`,
the candidates a query block competes for are restricted the same way): 17x fewer
pairs at 80x60 blocks with a 17x17 window, ~4x faster on a CPU, and no match can jump
across the image.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

#: Similarity-matrix entries per block of :func:`mutual_nearest_neighbours` (~2.4 MB of
#: float32: a block that stays in a CPU's L2/L3 cache; measured fastest at 128 rows
#: against 4800 columns on 2 cores).
MATCH_BLOCK_ELEMENTS = 128 * 4800


def mutual_nearest_neighbours(
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    min_similarity: float,
    grid_window: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual NN of unit descriptors (Na, D) and (Nb, D) with cosine > min_similarity.

    ``grid_window=(height, width, window)``: both sets are the cells of one
    (height, width) grid, row-major, and only pairs at most ``window`` cells apart along
    each axis count (what :func:`windowed_mutual_nearest_neighbours` computes, here
    with the whole matrix's cost and memory bounded by the row blocks).

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
    if grid_window is not None:
        _, gw, win = grid_window
        cell = torch.arange(max(na, nb), device=dev)
        grid_row, grid_col = cell // gw, cell % gw
    for s in range(0, na, chunk):
        sim = desc_a[s : s + chunk] @ b_t
        if grid_window is not None:
            ra, ca = grid_row[s : s + chunk, None], grid_col[s : s + chunk, None]
            far = ((ra - grid_row[None, :nb]).abs() > win) | ((ca - grid_col[None, :nb]).abs() > win)
            sim.masked_fill_(far, -float("inf"))
        row_sim[s : s + chunk], row_best[s : s + chunk] = sim.max(dim=1)
        col_sim = torch.maximum(col_sim, sim.amax(dim=0))
    keep = (row_sim >= col_sim[row_best]) & (row_sim > min_similarity)
    ia = keep.nonzero().squeeze(-1)
    ib = row_best[ia]
    # Rows tied at a column's maximum (exact float ties): the first row keeps it.
    first = _tie_break_first_row(ia, ib, na)
    ia, ib = ia[first], ib[first]
    return ia, ib, row_sim[ia]


#: Rendered blocks per tile side in :func:`windowed_mutual_nearest_neighbours`: each
#: tile of WINDOW_TILE^2 rendered blocks is compared to the query blocks of the tile
#: widened by the window (one batched matrix product for all tiles).
WINDOW_TILE = 8


def _tie_break_first_row(ia: torch.Tensor, ib: torch.Tensor, na: int) -> torch.Tensor:
    """Mask of the matches to keep when several rows (ia) claim one column (ib) at
    exactly its maximum: the first row keeps it."""
    keep = torch.ones_like(ib, dtype=torch.bool)
    if ib.numel() > 1:
        order = torch.argsort(ib * na + ia)
        keep[order[1:]] = ib[order[1:]] != ib[order[:-1]]
    return keep


@functools.lru_cache(maxsize=8)
def _window_layout(height: int, width: int, window: int, device: torch.device):
    """Tiles per column and row, index tensors and the additive mask (0 / -inf) of the
    tiled window search over a (height, width) grid, cached per grid, window and device
    (the same every frame)."""
    t, r = WINDOW_TILE, window
    k = t + 2 * r
    th, tw = -(-height // t), -(-width // t)
    ph, pw = th * t, tw * t
    n = height * width
    # Query cell index of each widened-tile slot, (tiles, k*k), -1 outside the grid.
    gi = torch.arange(1, n + 1, dtype=torch.float32, device=device).reshape(1, 1, height, width)
    gi = F.pad(gi, (r, pw - width + r, r, ph - height + r))  # 0 = outside; unfold needs float
    b_index = F.unfold(gi, kernel_size=k, stride=t)[0].T.round().long() - 1
    # Rendered cell index of each tile slot, (tiles, t*t), -1 for padding.
    ti = torch.arange(t, device=device)
    tr = torch.arange(th, device=device)[:, None, None, None] * t + ti[None, None, :, None]
    tc = torch.arange(tw, device=device)[None, :, None, None] * t + ti[None, None, None, :]
    a_index = torch.where((tr < height) & (tc < width), tr * width + tc, -1).reshape(th * tw, t * t)
    # Tile cell (i, j) sees widened cells (i..i+2r, j..j+2r), the same in every tile.
    ki = torch.arange(k, device=device)
    near = ((ki[None] - ti[:, None]) >= 0) & ((ki[None] - ti[:, None]) <= 2 * r)  # (t, k)
    in_window = (near[:, None, :, None] & near[None, :, None, :]).reshape(1, t * t, k * k)
    allowed = in_window & (b_index >= 0)[:, None, :] & (a_index >= 0)[:, :, None]
    bias = torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, -float("inf"))
    return th, tw, a_index, b_index, bias


def windowed_mutual_nearest_neighbours(
    desc_a: torch.Tensor, desc_b: torch.Tensor, height: int, width: int, window: int, min_similarity: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual NN of two descriptor sets on the same (height, width) grid, row-major
    (Na = Nb = height * width, (N, D) unit rows), among pairs at most ``window`` cells
    apart along each axis; cosine > min_similarity.

    Row a's candidates are the b within its window and column b's the a within *its*
    window (the same pairs): exactly :func:`mutual_nearest_neighbours` on the similarity
    matrix with the pairs outside the window removed. Returns (idx_a, idx_b,
    similarity) ordered by idx_a; of rows tied exactly at a column's maximum, the first
    keeps the column.
    """
    n, d = desc_a.shape
    if desc_b.shape != (n, d) or n != height * width:
        raise ValueError(
            f"windowed matching needs two {height}x{width} grids of descriptors, got {tuple(desc_a.shape)} "
            f"and {tuple(desc_b.shape)}"
        )
    if window < 0:
        raise ValueError(f"window must be >= 0 cells, got {window}")
    t, r = WINDOW_TILE, int(window)
    if n == 0 or r >= max(height, width) - 1:  # the window covers every pair
        return mutual_nearest_neighbours(desc_a, desc_b, min_similarity)
    if (t + 2 * r) ** 2 >= n:
        # A widened tile would hold more cells than the grid: the tiled products would
        # cost (and hold) more than the whole matrix. Same pairs, row blocks instead.
        return mutual_nearest_neighbours(desc_a, desc_b, min_similarity, grid_window=(height, width, r))
    th, tw, a_index, b_index, bias = _window_layout(height, width, r, desc_a.device)
    bias = bias.to(desc_a.dtype)
    # Rendered side (tiles, t*t, D); query side, each tile widened by the window,
    # (tiles, k*k, D) with zeros outside the grid (removed by the bias).
    a = F.pad(desc_a.T.reshape(d, height, width), (0, tw * t - width, 0, th * t - height))
    a_tiles = a.reshape(d, th, t, tw, t).permute(1, 3, 2, 4, 0).reshape(th * tw, t * t, d).contiguous()
    b_rows = torch.cat([desc_b, desc_b.new_zeros(1, d)])  # row n: the zeros of index -1
    b_tiles = b_rows[b_index]  # (tiles, k*k, D)
    sim = torch.baddbmm(bias, a_tiles, b_tiles.transpose(1, 2))  # (tiles, t*t, k*k), -inf off the window
    row_sim, row_k = sim.max(dim=2)  # (tiles, t*t)
    col_local = sim.amax(dim=1)  # (tiles, k*k)
    ok = b_index >= 0
    col_sim = torch.full((n,), -float("inf"), dtype=sim.dtype, device=sim.device).scatter_reduce(
        0, b_index[ok], col_local[ok], reduce="amax"
    )
    best_b = b_index.gather(1, row_k)
    keep = (a_index >= 0) & (row_sim > min_similarity)  # > threshold: a real (in-grid) pair
    keep &= row_sim >= col_sim[best_b.clamp_min(0)]
    ia, ib, s = a_index[keep], best_b[keep], row_sim[keep]
    order = torch.argsort(ia)
    ia, ib, s = ia[order], ib[order], s[order]
    first = _tie_break_first_row(ia, ib, n)
    return ia[first], ib[first], s[first]


def match_coarse_to_fine(
    render_desc: torch.Tensor,
    query_map: torch.Tensor,
    factor: int,
    min_similarity: float,
    margin: int = 1,
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match rendered descriptors at block centres to a dense query map.

    ``render_desc`` (Hc * Wc, D) unit descriptors rendered at the centres of the
    ``factor`` x ``factor`` blocks of the (H, W) matching grid, row-major, where
    Hc = H // factor, Wc = W // factor; ``query_map`` (D, H, W) unit descriptors.
    ``window`` (blocks): guided matching, the coarse mutual NN among blocks at most this
    far apart along each axis (see :func:`windowed_mutual_nearest_neighbours`); None =
    over all pairs. Returns (render_index, query_cell (M, 2) as (row, col) of the
    full-resolution query map, similarity).
    """
    d, h, w = query_map.shape
    hc, wc = h // factor, w // factor
    if render_desc.shape[0] != hc * wc:
        raise ValueError(f"render_desc has {render_desc.shape[0]} rows, expected {hc}x{wc} blocks of {factor}")

    def coarse_mnn(coarse: torch.Tensor):
        if window is None:
            return mutual_nearest_neighbours(render_desc, coarse, min_similarity)
        return windowed_mutual_nearest_neighbours(render_desc, coarse, hc, wc, window, min_similarity)

    if factor == 1:
        ir, iq, s = coarse_mnn(query_map.reshape(d, -1).T)
        return ir, torch.stack([iq // w, iq % w], -1), s
    q = query_map[:, : hc * factor, : wc * factor][None]
    coarse = F.normalize(F.avg_pool2d(q, factor)[0], dim=0).reshape(d, -1).T
    ir, ic, _ = coarse_mnn(coarse)
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
