"""The grid lookup split over CPU threads gives grid_sample's values exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neural_reloc.nerf import grid_lookup
from neural_reloc.nerf.grid_lookup import lookup_batches, sample_volume


def _plain(volume, g, **kw):
    return F.grid_sample(volume, g.reshape(1, 1, 1, -1, 3), **kw).reshape(volume.shape[1], -1).t()


@pytest.mark.parametrize("n", [1, 2, 4096, 3 * 997 + 1])
@pytest.mark.parametrize("mode,align_corners", [("bilinear", True), ("nearest", False), ("bilinear", False)])
def test_split_lookup_equals_grid_sample(n, mode, align_corners, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # an odd split, whatever this machine has
    monkeypatch.setattr(grid_lookup, "MIN_POINTS_PER_THREAD", 2)
    gen = torch.Generator().manual_seed(n)
    volume = torch.randn(1, 4, 9, 11, 13, generator=gen)
    g = torch.rand(n, 3, generator=gen) * 2.4 - 1.2  # some beyond the border
    kw = dict(mode=mode, padding_mode="border", align_corners=align_corners)
    got = sample_volume(volume, g, **kw)
    assert got.shape == (n, 4)
    assert torch.equal(got, _plain(volume, g, **kw))


def test_batches_per_thread_on_cpu_only(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    per = grid_lookup.MIN_POINTS_PER_THREAD
    assert lookup_batches(10 * per, torch.device("cpu")) == 2
    assert lookup_batches(per - 1, torch.device("cpu")) == 1  # too few to split
    assert lookup_batches(10 * per, torch.device("cuda")) == 1


@pytest.mark.parametrize("points_need_grad", [False, True])
def test_gradients_as_with_grid_sample(points_need_grad, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(grid_lookup, "MIN_POINTS_PER_THREAD", 2)
    gen = torch.Generator().manual_seed(1)
    volume = torch.randn(1, 2, 5, 6, 7, generator=gen, requires_grad=True)
    g = (torch.rand(3 * 97 + 2, 3, generator=gen) * 2 - 1).requires_grad_(points_need_grad)
    weights = torch.randn(len(g), 2, generator=gen)  # a loss that weighs every output differently
    got = torch.autograd.grad((sample_volume(volume, g) * weights).sum(), volume)[0]
    plain = _plain(volume, g, mode="bilinear", padding_mode="border", align_corners=True)
    expected = torch.autograd.grad((plain * weights).sum(), volume)[0]
    assert torch.allclose(got, expected, atol=1e-6)
