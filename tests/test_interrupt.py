"""Interruption: a train stage killed mid-epoch leaves no partial output, and the next
`dvc repro` trains again and ends in a clean, consistent state."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest
from project import dvc, env, make_project, set_params

pytestmark = pytest.mark.e2e

OUTPUTS = ("models/cnn.pt", "plots/history/cnn.tsv", "metrics/train/cnn.json")
# Far more epochs than the kill needs: on a loaded machine the signal may land seconds
# after epoch 0 is printed, and it must still land before training ends.
EPOCHS = 50


def kill_mid_epoch(project, sig) -> None:
    """Start `dvc repro train@cnn`, and once epoch 0 is done send ``sig`` to the stage."""
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@cnn"],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = []
    for line in repro.stdout:  # epoch 1 is under way right after this line
        log.append(line)
        if line.startswith("cnn epoch 0:"):
            break
    # DVC runs the command through $SHELL or /bin/sh; a shell such as dash does not exec
    # it, and a signal to that shell would wait for training to end. Signal the process
    # that trains: the one whose command line names the script and has no such child.
    named = [
        p
        for p in psutil.Process(repro.pid).children(recursive=True)
        if "stages/train.py" in " ".join(p.cmdline())
    ]
    stage = [p for p in named if not any(c in named for c in p.children(recursive=True))]
    assert len(stage) == 1, "".join(log)
    stage[0].send_signal(sig)
    rest, _ = repro.communicate(timeout=120)
    assert repro.returncode != 0, "".join(log) + rest
    assert f"cnn epoch {EPOCHS - 1}:" not in rest  # it really was stopped before the end


def test_killed_mid_epoch_leaves_nothing_and_repro_recovers(tmp_path):
    # Enough data that an epoch takes a moment, and many epochs: the kill lands mid-training.
    project = make_project(tmp_path, models=("cnn",), sizes=(6000, 100, 50), epochs=EPOCHS)
    dvc(project, "repro", "prepare")
    for sig in (signal.SIGINT, signal.SIGKILL):
        kill_mid_epoch(project, sig)
        for rel in OUTPUTS:
            assert not (project / rel).exists(), f"{sig!r}: partial output {rel} left behind"
        assert not list(project.rglob(".*.tmp"))
        assert "train@cnn" in dvc(project, "status", "train@cnn").stdout  # must run again

    # Recovery: one epoch is enough to show the stage runs again from a clean state.
    set_params(project, epochs=1)
    result = dvc(project, "repro", "train@cnn")
    assert "Running stage 'train@cnn'" in result.stdout
    for rel in OUTPUTS:
        assert (project / rel).is_file()
    status = dvc(project, "status", "train@cnn").stdout.strip()
    assert status == "Data and pipelines are up to date."
