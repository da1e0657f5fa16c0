"""Redis replies as Python values."""

from __future__ import annotations


def text(value: object) -> str:
    """A Redis reply as text (replies are bytes unless the connection decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)
