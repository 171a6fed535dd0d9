"""What the method and scenario registries share: an entry given as the module that defines it."""

from __future__ import annotations

import importlib
from typing import Any


def load_entry(entry: Any, attribute: str, kind: type) -> Any:
    """Return ``entry``, or the ``attribute`` of the module a dotted name ``entry`` names (imported now).

    Raises
    ------
    TypeError
        If the result is no ``kind``.
    """
    value = getattr(importlib.import_module(entry), attribute) if isinstance(entry, str) else entry
    if not isinstance(value, kind):
        raise TypeError(f"{entry!r}: expected a {kind.__name__}, got {type(value).__name__}")
    return value
