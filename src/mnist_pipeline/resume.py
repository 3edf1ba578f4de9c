"""Resume an interrupted training run from the last completed epoch: all of it lives here.

After each epoch a train stage saves a ``snapshot`` (weights, optimizer buffers, schedule
position, shuffle generator, history) to a state file that DVC neither caches nor deletes
(``.resume/<model>.pt``, git- and dvc-ignored), keyed by everything that decides the result
(``key_parts``). The next run continues from it only if the file's checksum and key match; the
stage removes it once its outputs are written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from .atomic import atomic_open, check_input, kind, remove_stale
from .errors import first_line

# A state file: this line, a JSON line {"key", "sha256"}, then the torch.save payload. The one
# version marker: a new layout of the file or of its snapshot is a new line.
MAGIC = b"mnist-pipeline resume state 2\n"
MAX_BYTES = 1 << 31  # the most read from a state file: ample for any model's weights and buffers


def snapshot(model, opt, scheduler, train_dl, history: list[dict]) -> dict:
    """Everything a later run needs to continue after ``history`` exactly: plain tensors."""
    from .checkpoints import cpu_state_dict  # imports torch: this module does not, at first

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


def _digest(files: list[Path], text: str = "") -> str:
    """sha256 of ``text``, then each file's name and bytes."""
    h = hashlib.sha256(text.encode())
    for path in files:
        h.update(Path(path).name.encode() + b"\0")
        check_input(path)  # a FIFO would block the read (and, on the early thread, the exit)
        with open(path, "rb") as f:  # large reads: hashlib and read let go of the GIL
            for chunk in iter(lambda: f.read(1 << 23), b""):
                h.update(chunk)
    return h.hexdigest()


_early: dict[tuple[Path, ...], Future] = {}


def data_files(prepared: str | os.PathLike) -> list[Path]:
    """The prepared files a train stage reads: the key's ``data`` part."""
    return [Path(prepared, f"{split}.pt") for split in ("train", "valid")]


def hash_data_early(files: list[Path]) -> None:
    """Start hashing ``files`` on another thread for ``key_parts`` to take: it runs beside
    the stage's ``import torch`` (the hash was 0.13 s of a train stage, BENCHMARKS.md). A
    daemon thread: a stage that fails first exits at once, not after the hash."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(_digest(files))
        except BaseException as err:  # taken by key_parts, as _digest there would raise it
            future.set_exception(err)

    threading.Thread(target=run, name="hash-data", daemon=True).start()
    _early[tuple(files)] = future


def code_files(script: str | os.PathLike) -> list[Path]:
    """The training code: the stage script, every module of this package it has loaded, and
    every module of models/ (a model may import a helper of its folder late, in ``build``)."""
    package = Path(__file__).parent
    loaded = {
        Path(m.__file__).resolve()
        for name, m in list(sys.modules.items())
        if name.startswith(__package__ + ".") and getattr(m, "__file__", None)
    }
    loaded |= {p.resolve() for p in (package / "models").glob("*.py")}
    return [Path(script).resolve(), *sorted(p for p in loaded if p.is_relative_to(package))]


# The parts of a run's key, in the order a refusal names them, and where to look when the
# nodes of a run differ in one (``distributed.agree``).
PARTS = {
    "code": "src/, stages/ or torch",
    "params": "the model's settings in params.yaml",
    "data": "data/prepared",
    "threads": "torch threads per rank: params.yaml threads, or the cores with threads 0",
    "world size": "the number of processes: distributed.nnodes (a worker's --nnodes) x nproc",
}


def key_parts(config: dict, data_files: list[Path], script, world: int) -> dict[str, str]:
    """What decides the bytes of a training run, one hash or value per part of ``PARTS``.

    The resume key (``state_key``) and the nodes' agreement (``distributed.agree``) are both
    made from this, so neither leaves a part out. ``code`` is ``code_files`` (once the model's
    module is imported) and torch's version; ``threads`` those in use (the stage sets them).
    """
    import torch

    from .models import get_model

    get_model(config["arch"])  # imports the model's module, and what that module imports
    early = _early.pop(tuple(data_files), None)
    return {
        "code": _digest(code_files(script), torch.__version__),
        "params": _digest([], json.dumps(config, sort_keys=True)),
        "data": early.result() if early else _digest(data_files),
        "threads": str(torch.get_num_threads()),
        "world size": str(world),
    }


def state_key(parts: dict[str, str]) -> str:
    """One sha256 over the parts of ``key_parts``: the key a resume state is saved under."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ResumeState:
    """The state file of one model: ``load`` what matches ``key``, ``save`` after each epoch."""

    def __init__(self, path: str | os.PathLike, key: str) -> None:
        self.key = key  # state_key(key_parts(...))
        self.path = Path(path)
        self.restart = ""
        self.saving = True  # False once load finds no place a state may be saved

    def load(self, epochs: int, *, restart: str = "") -> dict | None:
        """The saved snapshot, if it is intact, readable and made for this key; else None.

        The payload's sha256 is checked before anything in it is unpickled: a state that was
        damaged on disk would load, and resume to another model than an uninterrupted run.
        ``restart`` (``restart 1 of 3``, under torch elastic) leads the line said about it.
        """
        import torch

        self.restart = restart
        if self.path.parent.exists() and not self.path.parent.is_dir():
            self.saving = False
            return self._ignore(f"{self.path.parent} is not a folder; this run saves no state")
        remove_stale(self.path)  # what a save that was killed left
        try:
            found = os.lstat(self.path)
        except FileNotFoundError:
            if restart:
                print(f"train: {restart}: starting from epoch 0", flush=True)
            return None
        except OSError as err:
            return self._ignore(f"unreadable ({err.strerror or err})")
        # A symlink: dangling, or to a file a save may not replace. A FIFO would block open(),
        # /dev/zero never end.
        if not stat.S_ISREG(found.st_mode):
            self.saving = False
            what = f"{kind(found.st_mode)}, not a regular file"
            if stat.S_ISLNK(found.st_mode):
                what = f"a symlink to {os.readlink(self.path)}"
            return self._ignore(f"{what}; this run saves no state")
        if found.st_size > MAX_BYTES:
            return self._ignore(f"{found.st_size} bytes, over the {MAX_BYTES} a state may have")
        try:
            with open(self.path, "rb", opener=lambda p, fl: os.open(p, fl | os.O_NONBLOCK)) as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the stat
                    raise ValueError("not a regular file")
                magic, header = f.readline(len(MAGIC)), f.readline(1000)
                payload = f.read(MAX_BYTES)
            if magic != MAGIC:
                raise ValueError("not a resume state of this pipeline")
            header = json.loads(header)
            if hashlib.sha256(payload).hexdigest() != header["sha256"]:
                return self._ignore("damaged (checksum mismatch)")
            if header["key"] != self.key:
                return self._ignore("made with other settings, data or code")
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            done = len(state["history"])
        except Exception as err:  # truncated, corrupt, foreign, another torch's: one line
            return self._ignore(f"unreadable ({type(err).__name__}: {first_line(err, 120)})")
        if not 0 < done <= epochs:  # the key has epochs in it: only a damaged state gets here
            return self._ignore(f"it holds {done} epochs, this run trains {epochs}")
        where = f"{restart}: resuming" if restart else f"resuming from {self.path}"
        print(f"train: {where} at epoch {done} of {epochs}", flush=True)
        return state

    def _ignore(self, why: str) -> None:
        lead = f"{self.restart}: " if self.restart else ""
        print(f"train: {lead}ignoring {self.path}: {why}; starting from epoch 0", flush=True)

    def save(self, state: dict) -> None:
        """Write the state, its key and its payload's sha256 atomically (no-op once ``load``
        found no place a state may be saved)."""
        import torch

        if not self.saving:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        header = {"key": self.key, "sha256": hashlib.sha256(payload).hexdigest()}
        with atomic_open(self.path, "wb") as f:
            f.write(MAGIC + json.dumps(header).encode() + b"\n" + payload)

    def clear(self) -> None:
        if self.saving:
            self.path.unlink(missing_ok=True)
