"""Device selection: CUDA when present, CPU otherwise, with an explicit override."""

from __future__ import annotations

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
