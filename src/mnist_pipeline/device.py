"""Device choice: ``auto`` picks CUDA, then MPS, then the CPU; an absent device is an error."""

from __future__ import annotations

import torch

from .errors import UserError


def select_device(spec: str) -> torch.device:
    """The torch device for a params ``device`` value; never a silent fallback."""
    if spec == "auto":
        mps = torch.backends.mps.is_available()
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r}: CUDA is not available here; use device: auto or cpu")
        if int(spec.partition(":")[2] or 0) >= (count := torch.cuda.device_count()):
            raise UserError(f"device {spec!r}: only {count} CUDA device(s) here (0..{count - 1})")
    elif spec == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps': MPS is not available here; use device: auto or cpu")
    elif spec not in ("cpu", "mps"):
        raise UserError(f"device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps")
    return torch.device(spec)
