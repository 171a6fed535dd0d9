"""Choosing the torch device for the GPU-capable steps (image encoders, GMM engine, MIL)."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """Turn a device name into a :class:`torch.device`.

    Parameters
    ----------
    name
        ``"auto"`` for CUDA when available and CPU otherwise, or any torch device string.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    RuntimeError
        If a CUDA device is named and CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device
