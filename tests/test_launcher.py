"""The launcher's one line, read from torch elastic's error files (no torchrun run here: fast);
the same lines through real torchrun runs are in test_distributed.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import tiny_params

from mnist_pipeline import launcher
from mnist_pipeline.distributed import STARTED
from mnist_pipeline.errors import UserError
from mnist_pipeline.params import parse_params

CONFIG = parse_params(
    tiny_params(distributed={"nnodes": 2, "rdzv_endpoint": "node1:29500", "max_restarts": 3})
).distributed


def rank_error(folder: Path, rank: int, own: bool, line: str, attempt: int = 0) -> None:
    """An error file as distributed.recorded writes it, where torch elastic puts it."""
    path = folder / "ranks" / "run_x" / f"attempt_{attempt}" / str(rank) / "error.json"
    path.parent.mkdir(parents=True)
    info = {"py_callstack": "", "timestamp": "0", "rank": rank, "own": own, "line": line}
    path.write_text(json.dumps({"message": {"message": "X: y", "extraInfo": info}}))


def test_a_ranks_own_error_is_its_line_and_a_crash_is_not(tmp_path):
    rank_error(tmp_path, 1, False, "lost its connection to the other ranks (a node died or left)")
    assert launcher._own_errors(tmp_path) == []  # a crash: torch elastic restarts it
    rank_error(tmp_path, 3, True, "model 'cnn' diverged in epoch 0", attempt=1)
    rank_error(tmp_path, 2, True, "distributed: the nodes disagree on data", attempt=2)
    assert launcher._why(CONFIG, tmp_path, True) == (
        "rank 2 failed: distributed: the nodes disagree on data"  # the lowest rank's
    )


@pytest.mark.parametrize(
    "why, cause",
    [
        (
            {"rank": 1, "signal": "SIGKILL", "exitcode": -9, "line": None},
            "rank 1 was killed by SIGKILL",
        ),
        (
            {"rank": 0, "signal": None, "exitcode": 1, "line": "failed with E: x"},
            "rank 0 failed with E: x",
        ),
        ({"rank": 0, "signal": None, "exitcode": 3, "line": None}, "rank 0 exited with status 3"),
    ],
)
def test_the_last_attempts_first_failure_once_restarts_are_spent(tmp_path, why, cause):
    (tmp_path / launcher.WHY).write_text(json.dumps(why))
    assert launcher._why(CONFIG, tmp_path, True) is None  # before training began: no line
    (tmp_path / STARTED).touch()
    assert launcher._why(CONFIG, tmp_path, False) == (
        f"distributed: {cause}, and distributed.max_restarts (3) spent; "
        "start this worker again for the next run"
    )


@pytest.mark.parametrize(
    "error, started, writer, line",
    [
        (
            "RendezvousTimeoutError",
            False,
            True,
            "not all 2 nodes joined the rendezvous at node1:29500",
        ),
        ("RendezvousTimeoutError", True, True, "a node left and did not rejoin the rendezvous"),
        ("RendezvousClosedError", True, True, "another node ended the run (see the error there)"),
        ("RendezvousConnectionError", True, False, "lost the rendezvous at node1:29500"),
        ("RendezvousConnectionError", True, True, None),  # the writer hosts it: not this line
        ("SignalException", True, True, None),
    ],
)
def test_torchruns_own_exception_by_class(tmp_path, error, started, writer, line):
    # As the launcher's torchrun writes it: the class and its bases, so a subclass still reads.
    (tmp_path / launcher.WHY).write_text(json.dumps({"errors": [error, "RendezvousError"]}))
    if started:
        (tmp_path / STARTED).touch()
    why = launcher._why(CONFIG, tmp_path, writer)
    assert why == line if line is None else line in why


def test_no_file_says_nothing_so_the_log_is_named(tmp_path):
    assert launcher._why(CONFIG, tmp_path, True) is None
    (tmp_path / launcher.WHY).write_text("{trunc")
    assert launcher._why(CONFIG, tmp_path, True) is None


def test_a_rendezvous_host_that_does_not_resolve_is_refused_within_the_timeout():
    launcher._resolve("127.0.0.1:29500", 5)  # the good case
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        launcher._resolve("nohost.invalid:29500", 2)
    assert time.monotonic() - start < 3
    assert str(err.value).startswith(
        "distributed: rdzv_endpoint nohost.invalid:29500: host 'nohost.invalid' does not resolve ("
    )
