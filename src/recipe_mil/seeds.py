"""Deterministic seeds derived from the config seed and a job's identity."""

from __future__ import annotations

import zlib


def derive_seed(base: int, *parts: object) -> int:
    """Return a stable 31-bit seed from a base seed and any identifying parts.

    Parameters
    ----------
    base
        The config's seed.
    *parts
        Anything that identifies the random step (dataset, scenario, repeat, fold, step name).
        Converted with ``str``; the result does not depend on Python's hash randomisation.

    Returns
    -------
    int
        A seed in ``[0, 2**31 - 1)``.
    """
    key = "|".join([str(base), *map(str, parts)]).encode()
    return zlib.crc32(key) % (2**31 - 1)
