"""Write outputs atomically: to a temporary file beside the target, then rename into place.

An interrupted or failed write leaves the old file or none, never half a file. An output
replaces only a regular file (or a symlink to one inside the project): a FIFO, a device or a
folder at its path is refused in one line, and nothing changes.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import UserError

KINDS = {
    stat.S_ISREG: "a regular file",
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
    stat.S_ISLNK: "a symlink",
}


def kind(mode: int) -> str:
    """What a file of ``st_mode`` is, in words: 'a regular file', 'a FIFO', 'a folder'..."""
    return next((k for is_kind, k in KINDS.items() if is_kind(mode)), "a special file")


def check_input(path: str | os.PathLike) -> None:
    """Refuse, in one line, an input that is not a regular file (a FIFO would block its
    reader, /dev/zero never end); one that is absent is the caller's to say."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: {kind(mode)}, not a regular file")


def check_output(path: str | os.PathLike) -> None:
    """Refuse, in one line, an existing ``path`` that an output may not replace: anything but
    a regular file, or a symlink to a regular file inside the project (the working folder)."""
    path = Path(path)
    folder = next((p for p in path.parents if os.path.lexists(p)), None)
    if folder is not None and not folder.is_dir():  # a file or a FIFO where a folder must be
        what = kind((os.lstat if folder.is_symlink() else os.stat)(folder).st_mode)
        raise UserError(f"{path}: {folder} is {what}, not a folder")
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # absent
        return
    if stat.S_ISLNK(mode):
        target = path.resolve()
        if target.is_file() and target.is_relative_to(Path.cwd().resolve()):
            return
        raise UserError(
            f"{path}: a symlink to {target}, not to a regular file inside the project; "
            "an output replaces only a regular file"
        )
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: {kind(mode)}, not a regular file; an output replaces only one")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    check_output(path)  # before anything is made
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:  # full disk, unwritable folder: the user's to fix, named in one line
        raise UserError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def remove_stale(path: str | os.PathLike) -> list[str]:
    """Remove and name the ``.<name>.*.tmp`` that killed writes of ``path`` left beside it."""
    path = Path(path)
    stale = sorted(p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if p.is_file())
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return [p.name for p in stale]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as stable, sorted, indented JSON (byte-identical for equal objects)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically; a full disk is the one-line "cannot write"."""
    import torch

    with atomic_open(path, "wb") as f:
        failed = []

        def write(data) -> int:
            try:
                return f.write(data)
            except OSError as err:
                failed.append(err)
                raise

        try:
            # Through a file object, torch names the archive's root 'archive', not after the
            # random temporary file: equal objects give byte-identical files.
            torch.save(obj, types.SimpleNamespace(write=write, flush=f.flush))
        except Exception:
            # torch.save turns its write's OSError (a full disk) into a RuntimeError of its own
            # ("[enforce fail at inline_container.cc:...] unexpected pos"): the real reason is
            # raised instead, which atomic_path makes the one-line "cannot write".
            if failed:
                raise failed[0] from None
            raise
