"""Device selection: CUDA when present, CPU otherwise, with an explicit override."""

from __future__ import annotations

import functools
import os

import torch

#: CPU threads used by torch when running on the CPU (0 = torch's default).
CPU_THREADS_ENV = "NEURAL_RELOC_CPU_THREADS"


def resolve_device(name: "str | torch.device | None" = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; ``cuda[:i]``/``cpu`` explicitly."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        dev = torch.device(name)
    elif name == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
    if dev.type == "cpu":
        n = int(os.environ.get(CPU_THREADS_ENV, "0") or 0)
        if n > 0:
            torch.set_num_threads(n)
    return dev


def synchronize(device: "str | torch.device | None") -> None:
    """Wait for queued work on ``device`` (CUDA kernels run asynchronously), so that a
    wall clock read afterwards includes it; a no-op on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AMX-BF16 or AVX512-BF16,
    from /proc/cpuinfo; False where that cannot be read). Without it oneDNN emulates
    bfloat16 and it is slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "amx_bf16" in flags or "avx512_bf16" in flags

#: Accepted values of a network's precision setting.
PRECISIONS = ("auto", "float32", "bfloat16")


def inference_dtype(precision: str, device: "str | torch.device") -> torch.dtype:
    """The dtype to run a network's inference in: ``float32``, ``bfloat16``, or ``auto``
    = bfloat16 on a CPU with native bfloat16 (about 2x faster convolutions there),
    float32 otherwise (on CUDA float32 is already fast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if torch.device(device).type == "cpu" and cpu_has_native_bf16() else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32
