"""Inference of a plain CNN trunk (an ``nn.Sequential`` of ``Conv2d``, ``ReLU`` and
pooling layers) with each convolution and the ReLU after it fused into one oneDNN call
on the CPU.

In eager PyTorch a ReLU is a pass of its own over the convolution's output: at 640x480
with 32 channels that pass costs about as much as a third of the convolutions (the
profile of CROSSFIRE's query CNN on 2 CPU cores, bfloat16: convolutions 44%, ReLU 30%,
max-pooling 16%). oneDNN applies the ReLU as the convolution writes its output
(``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's own compiler emits for
a convolution followed by a ReLU): the same numbers without the pass, bit for bit in
bfloat16 (in float32 PyTorch may pick kernels of its own for some sizes, which sum in
another order: differences of rounding, ~1e-8).

Used only where it is the same computation: on the CPU, without autograd (training
keeps the plain modules), with oneDNN available and, for bfloat16, oneDNN's bfloat16
kernels (AVX-512 BW/VL/DQ or AVX-NE-CONVERT: on a CPU with AVX2 only the fused call
raises, while ``torch.autocast`` falls back to a kernel of its own); anywhere else the
trunk runs as usual. ``dtype`` bfloat16 computes the convolutions from bfloat16 weights
and inputs exactly as ``torch.autocast`` would (the output is bfloat16 either way).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

#: The fused convolution + pointwise kernel, where this PyTorch build has one.
_CONV_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None


@functools.cache
def _mkldnn_bf16_supported() -> bool:
    """Whether oneDNN has bfloat16 convolution kernels on this CPU (asked once: the
    per-frame CNN calls :func:`fused_inference_available`)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def fused_inference_available(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`run_trunk` fuses for input ``x`` computed in ``dtype``: CPU, oneDNN,
    autograd off, and for bfloat16 oneDNN's bfloat16 kernels on this CPU."""
    return (
        _CONV_POINTWISE is not None
        and x.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and not torch.is_grad_enabled()
        and (dtype == torch.float32 or (dtype == torch.bfloat16 and _mkldnn_bf16_supported()))
    )


def _fusable(conv: nn.Module, nxt: nn.Module | None) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(nxt, nn.ReLU)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def run_trunk(trunk: nn.Sequential, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``trunk(x)`` with its convolutions in ``dtype`` (float32 or bfloat16; the output
    in that dtype), each convolution followed by a ReLU fused with it where
    :func:`fused_inference_available`; otherwise the modules themselves run (under
    ``torch.autocast`` for a dtype other than float32)."""
    if not fused_inference_available(x, dtype):
        if dtype == torch.float32:
            return trunk(x)
        with torch.autocast(x.device.type, dtype=dtype):
            return trunk(x)
    h = x.to(dtype)
    mods = list(trunk)
    i = 0
    while i < len(mods):
        m = mods[i]
        if _fusable(m, mods[i + 1] if i + 1 < len(mods) else None):
            bias = None if m.bias is None else m.bias.to(dtype)
            h = _CONV_POINTWISE(h, m.weight.to(dtype), bias, list(m.padding), list(m.stride), list(m.dilation),
                                m.groups, "relu", [], "")
            i += 2
        elif isinstance(m, nn.Conv2d):  # not followed by a ReLU: as autocast would run it
            h = m._conv_forward(h, m.weight.to(dtype), None if m.bias is None else m.bias.to(dtype))
            i += 1
        else:
            h = m(h)
            i += 1
    return h


__all__ = ["fused_inference_available", "run_trunk"]
