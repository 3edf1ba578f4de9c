"""Device choice: ``auto`` picks CUDA, then MPS, then the CPU; an absent device is an error."""

from __future__ import annotations

import torch

from .errors import UserError


def select_device(spec: str) -> torch.device:
    """The torch device for a params ``device`` value; never a silent fallback."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r}: CUDA is not available here; use device: auto or cpu")
        index = int(spec.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UserError(f"device {spec!r}: only {count} CUDA device(s) here (0..{count - 1})")
    elif spec == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps': MPS is not available here; use device: auto or cpu")
    elif spec not in ("cpu", "mps") and not spec.startswith("cuda"):
        raise UserError(f"device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps")
    return torch.device(spec)
