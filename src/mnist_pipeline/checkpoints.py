"""models/<name>.pt: what a checkpoint holds, and loading it back with ``weights_only=True``."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch

from .atomic import check_input
from .errors import UserError, first_line
from .models import get_model
from .params import TrainConfig


def cpu_state_dict(model) -> dict:
    """The model's weights as CPU tensors, detached: what a file holds, whatever the device."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def checkpoint(model, config: TrainConfig, device) -> dict:
    """What models/<name>.pt holds: CPU tensors and plain values, loadable with weights_only."""
    return {
        "state_dict": cpu_state_dict(model),
        "config": config.to_dict(),
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def load_checkpoint(path, config: TrainConfig | None = None, device="cpu", *, strict=True):
    """(model, checkpoint dict, its ``models.Model``) from models/<name>.pt, loaded with
    weights_only=True and rebuilt on ``device``; every error is one line.

    ``path`` may also be a binary file object, such as ``dvc.api.open(..., mode="rb")`` gives.
    With ``config``, the checkpoint's recorded config must be it: one made under other
    settings (``dvc exp run -S`` rewrote params.yaml during a run, say) is refused naming the
    keys, or with ``strict=False`` (predict) said in one warning line on stderr.
    """
    source = path
    if isinstance(path, str | os.PathLike):
        path = source = Path(path)
        check_input(path)
    else:  # a file object: read whole, since torch.load seeks and a stream may not
        path = getattr(source, "name", None) or "checkpoint file object"
        try:
            data = source.read()
        except (OSError, ValueError, UnicodeDecodeError) as err:  # closed, text of bytes...
            raise UserError(f"{path}: cannot read the checkpoint ({first_line(err)})") from None
        if not isinstance(data, bytes):
            raise UserError(f"{path}: a text file object; open the checkpoint with mode='rb'")
        source = io.BytesIO(data)
    try:
        ckpt = torch.load(source, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found; run its train stage first") from None
    except Exception as err:
        raise UserError(
            f"{path}: not a loadable weights-only checkpoint ({first_line(err)})"
        ) from None
    if not isinstance(ckpt, dict) or not {"state_dict", "config"} <= set(ckpt):
        raise UserError(f"{path}: not a checkpoint of this pipeline (no state_dict/config)")
    for key, kind in (("config", "settings"), ("state_dict", "tensors")):
        if not isinstance(ckpt[key], dict):  # a string, a list...: one line, not a traceback
            got = type(ckpt[key]).__name__
            raise UserError(f"{path}: {key} is a {got}, not a mapping of names to {kind}")
    arch_name = ckpt["config"].get("arch")
    if not isinstance(arch_name, str):
        raise UserError(f"{path}: config has no architecture name ('arch')")
    if config is not None:
        if arch_name != config.arch:
            raise UserError(
                f"{path}: checkpoint architecture {arch_name!r} does not match params "
                f"arch {config.arch!r}; retrain with dvc repro"
            )
        recorded, wanted = ckpt["config"], config.to_dict()
        if keys := sorted(k for k in {*recorded, *wanted} if recorded.get(k) != wanted.get(k)):
            diff = "; ".join(  # lr 0.08 in the checkpoint, 0.1 in params.yaml; ...
                f"{k} {recorded.get(k)!r} in the checkpoint, {wanted.get(k)!r} in params.yaml"
                for k in keys
            )
            message = (
                f"{path}: model {config.name!r} was trained with other settings than "
                f"params.yaml gives it ({diff}); retrain it: dvc repro -f -s train@{config.name}"
            )
            if strict:
                raise UserError(message)
            print(f"warning: {message}", file=sys.stderr, flush=True)
    spec = get_model(arch_name)
    model = spec.build()
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit architecture {arch_name!r} ({err})") from None
    return model.to(device), ckpt, spec
