"""Resume an interrupted training run from the last completed epoch: all of it lives here.

After each epoch a train stage saves a ``snapshot`` (weights, optimizer buffers, schedule
position, shuffle generator, history) to a state file that DVC neither caches nor deletes
(``.resume/<model>.pt``, git- and dvc-ignored). The file is keyed by everything that decides
the result: the resolved model config, the prepared data and the training code. The next run
continues from it only if the file's checksum and key match; the stage removes it once its
outputs are written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

from .atomic import atomic_open, remove_stale
from .checkpoints import cpu_state_dict
from .errors import first_line

FORMAT = 1
# A state file: this line, a JSON line {"key", "sha256"}, then the torch.save payload.
MAGIC = b"mnist-pipeline resume state 2\n"


def snapshot(model, opt, scheduler, train_dl, history: list[dict]) -> dict:
    """Everything a later run needs to continue after ``history`` exactly: plain tensors."""
    return {
        "model": cpu_state_dict(model),
        "optimizer": opt.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": train_dl.generator.get_state(),
        "history": history,
    }


def restore(state: dict, model, opt, scheduler, train_dl) -> list[dict]:
    """Load a ``snapshot`` back into fresh objects; return the history it had reached."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    train_dl.generator.set_state(state["generator"])
    return state["history"]


def _file_digest(path: Path, h) -> None:
    h.update(path.name.encode() + b"\0")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def code_files(script: str | os.PathLike) -> list[Path]:
    """The training code: the stage script and every module of this package it has loaded."""
    package = Path(__file__).parent
    loaded = {
        Path(m.__file__).resolve()
        for name, m in list(sys.modules.items())
        if name.startswith(__package__ + ".") and getattr(m, "__file__", None)
    }
    return [Path(script).resolve(), *sorted(p for p in loaded if p.is_relative_to(package))]


def state_key(config: dict, data_files: list[Path], code: list[Path]) -> str:
    """sha256 over the resolved config, the data files' bytes and the code files' bytes."""
    h = hashlib.sha256(json.dumps([FORMAT, config], sort_keys=True).encode())
    for path in [*data_files, *code]:
        _file_digest(Path(path), h)
    return h.hexdigest()


def _say(message: str) -> None:
    print(f"train: {message}", flush=True)


class ResumeState:
    """The state file of one model: ``load`` what matches ``key``, ``save`` after each epoch."""

    def __init__(self, path: str | os.PathLike, key: str, *, verbose: bool = True) -> None:
        import torch

        # The CPU's arithmetic also depends on the torch version and the thread count: the
        # stage sets it from params.yaml's `threads` before it makes this key.
        self.key = f"{key}:{torch.__version__}:{torch.get_num_threads()}"
        self.path, self.verbose = Path(path), verbose
        self.restart = ""

    def load(self, epochs: int, *, restart: str = "") -> dict | None:
        """The saved snapshot, if it is intact, readable and made for this key; else None.

        The payload's sha256 is checked before anything in it is unpickled: a state that was
        damaged on disk would load, and resume to another model than an uninterrupted run.
        ``restart`` (``restart 1 of 3``, under torch elastic) leads the line said about it.
        """
        import torch

        self.restart = restart

        remove_stale(self.path)  # what a save that was killed left
        if not self.path.exists():
            if restart and self.verbose:
                _say(f"{restart}: starting from epoch 0")
            return None
        try:
            with open(self.path, "rb") as f:
                magic, header, payload = f.readline(), f.readline(), f.read()
            if magic != MAGIC:
                raise ValueError("not a resume state of this pipeline")
            header = json.loads(header)
            key, digest = header["key"], header["sha256"]
        except Exception as err:  # truncated, corrupt or foreign: one line, then a fresh start
            return self._ignore(f"unreadable ({type(err).__name__}: {first_line(err, 120)})")
        if hashlib.sha256(payload).hexdigest() != digest:
            return self._ignore("damaged (checksum mismatch)")
        if key != self.key:
            return self._ignore("made with other settings, data or code")
        try:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            done = len(state["history"])
        except Exception as err:  # intact, yet not loadable: another torch, a foreign payload
            return self._ignore(f"unreadable ({type(err).__name__}: {first_line(err, 120)})")
        if not 0 < done <= epochs:  # the key has epochs in it: only a damaged state gets here
            return self._ignore(f"it holds {done} epochs, this run trains {epochs}")
        if self.verbose:
            where = f"{restart}: resuming" if restart else f"resuming from {self.path}"
            _say(f"{where} at epoch {done} of {epochs}")
        return state

    def _ignore(self, why: str) -> None:
        if self.verbose:
            lead = f"{self.restart}: " if self.restart else ""
            _say(f"{lead}ignoring {self.path}: {why}; starting from epoch 0")
        return None

    def save(self, state: dict) -> None:
        """Write the state, its key and its payload's sha256 atomically."""
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        header = {"key": self.key, "sha256": hashlib.sha256(payload).hexdigest()}
        with atomic_open(self.path, "wb") as f:
            f.write(MAGIC + json.dumps(header).encode() + b"\n" + payload)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
