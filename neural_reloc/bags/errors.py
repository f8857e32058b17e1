"""Errors of bag reading and writing."""

from __future__ import annotations


class BagError(ValueError):
    """A bag is missing something we need, or is unreadable; the message says what
    (the topic, message type, frame or file) and, where possible, what to pass instead."""


class BagTruncatedError(BagError):
    """The bag's data ends early (a recording that was cut off, a partial copy).

    Raised after everything before the cut has been delivered, so callers keep the
    results computed so far."""
