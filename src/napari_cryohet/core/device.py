"""Choosing the torch device once (docs/design.md, "Performance": ``cuda`` → ``mps`` → ``cpu``)."""

from __future__ import annotations

import torch

__all__ = ["select_device"]


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Return the requested device, or the best available one.

    Parameters
    ----------
    device
        ``None`` or ``"auto"`` picks ``cuda`` when present, then ``mps``, then ``cpu``.
        Anything else is passed to :class:`torch.device` unchanged.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)
