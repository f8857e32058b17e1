"""Device selection: CUDA when present, CPU otherwise, with an explicit override."""

from __future__ import annotations

import functools
import os
import platform

import torch

#: CPU threads used by torch when running on the CPU (0 = torch's default).
CPU_THREADS_ENV = "NEURAL_RELOC_CPU_THREADS"
#: "0" leaves the C allocator's settings alone (:func:`keep_freed_memory`).
KEEP_FREED_MEMORY_ENV = "NEURAL_RELOC_KEEP_FREED_MEMORY"
#: glibc ``mallopt`` parameters (malloc.h): trim and mmap thresholds.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The largest threshold each glibc accepts: any size (2.35 and later), else half its
#: largest heap (32 MiB on 64-bit).
_THRESHOLDS = (2**31 - 1, 32 * 2**20)


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
        keep_freed_memory()
    return dev


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory in the process for the next allocation
    (``mallopt``: no ``mmap`` for large blocks, no trimming of the heap); True when set.

    On the CPU every tensor of a render comes from malloc, and glibc hands large blocks
    (the MLPs' activations: tens of MB per render) to the kernel on free, so each frame's
    tensors arrived as fresh pages, zeroed by page faults on first touch: a quarter of
    a flow render's time on 2 cores (NOTES.md). The price: the process keeps its peak
    memory until it exits. Called once per process by :func:`resolve_device` for a CPU;
    a no-op without glibc, and with ``NEURAL_RELOC_KEEP_FREED_MEMORY=0``."""
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0" or platform.system() != "Linux":
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    for value in _THRESHOLDS:
        if mallopt(_M_MMAP_THRESHOLD, value) and mallopt(_M_TRIM_THRESHOLD, value):
            return True
    return False


def synchronize(device: "str | torch.device | None") -> None:
    """Wait for queued work on ``device`` (CUDA kernels run asynchronously), so that a
    wall clock read afterwards includes it; a no-op on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


#: CPU flags that decide how fast the networks run (oneDNN's kernels): bfloat16 in
#: hardware (AMX, AVX512-BF16), AVX-512, AVX2.
SPEED_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


@functools.cache
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    """This CPU's model name and flags from /proc/cpuinfo ("" and () where it cannot be read)."""
    model, flags = "", ()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AMX-BF16 or AVX512-BF16,
    from /proc/cpuinfo; False where that cannot be read). Without it oneDNN emulates
    bfloat16 and it is slower than float32."""
    flags = _cpuinfo()[1]
    return "amx_bf16" in flags or "avx512_bf16" in flags


def machine_info(device: "str | torch.device | None" = None) -> dict:
    """What a latency or build time was measured on, for the JSON beside it: the CPU
    (model, :data:`SPEED_FLAGS` it has, cores, torch's threads), torch's version and,
    for a CUDA ``device``, the GPU. The same code runs several times faster on a CPU with
    bfloat16 in hardware (the query CNN in bfloat16) than on one with AVX2 only (NOTES.md),
    so figures from different machines are not comparable without it."""
    model, flags = _cpuinfo()
    kind = torch.device(device).type if device is not None else "cpu"
    info = {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": kind,
    }
    if kind == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


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
