"""Per-epoch history files: TSV with epoch, train_loss, val_loss, val_acc.

Wall-clock seconds are left out so the file is byte-identical on a rerun; they go to the
timing JSON instead.
"""

from __future__ import annotations

import csv
import math
import os

from .atomic import atomic_open, check_input
from .errors import UserError

COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc")


def write_history(path: str | os.PathLike, history: list[dict]) -> None:
    with atomic_open(path, "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for row in history:
            values = [str(row["epoch"])] + [f"{row[c]:.6f}" for c in COLUMNS[1:]]
            f.write("\t".join(values) + "\n")


def read_history(path: str | os.PathLike) -> list[dict]:
    """The rows of a history file; a missing or malformed one is said in one line."""
    try:
        check_input(path)  # a FIFO would block the read
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            raise ValueError("no epochs")
        return [{"epoch": int(r["epoch"])} | {c: _finite(r, c) for c in COLUMNS[1:]} for r in rows]
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run dvc repro to produce it") from None
    except (KeyError, ValueError, TypeError) as err:  # TypeError: a short row's None
        raise UserError(f"{path}: not a history file ({type(err).__name__}: {err})") from None


def _finite(row: dict, column: str) -> float:
    """A row's value as a float; nan and inf are refused (training stops before writing one)."""
    value = float(row[column])
    if not math.isfinite(value):
        raise ValueError(f"{column} is {value} in epoch {row['epoch']}")
    return value
