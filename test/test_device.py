"""Device selection and the CPU process settings it makes."""

from __future__ import annotations

import platform

import pytest
import torch

from neural_reloc import device


def test_cpu_device_keeps_freed_memory_once(monkeypatch):
    calls = []
    monkeypatch.setattr(device, "keep_freed_memory", lambda: calls.append(1) or True)
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert calls == [1]


def test_freed_memory_setting_can_be_turned_off(monkeypatch):
    device.keep_freed_memory.cache_clear()
    monkeypatch.setenv(device.KEEP_FREED_MEMORY_ENV, "0")
    try:
        assert device.keep_freed_memory() is False
    finally:
        device.keep_freed_memory.cache_clear()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_allocator_setting(monkeypatch):
    device.keep_freed_memory.cache_clear()
    monkeypatch.delenv(device.KEEP_FREED_MEMORY_ENV, raising=False)
    try:
        assert device.keep_freed_memory() is True
    finally:
        device.keep_freed_memory.cache_clear()
