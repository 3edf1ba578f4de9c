"""Interruption: a train stage killed mid-epoch leaves no partial output, and the next
`dvc repro` trains again and ends in a clean, consistent state."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest
from project import dvc, env, make_project

pytestmark = pytest.mark.e2e

OUTPUTS = ("models/cnn.pt", "plots/history/cnn.tsv", "metrics/train/cnn.json")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_mid_epoch_leaves_nothing_and_repro_recovers(tmp_path, sig):
    # Enough data that an epoch takes a few seconds, and 3 epochs: the kill lands mid-training.
    project = make_project(tmp_path, models=("cnn",), sizes=(12000, 200, 50), epochs=3)
    dvc(project, "repro", "prepare")
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@cnn"],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = []
    for line in repro.stdout:  # wait until epoch 0 is done: epoch 1 is then under way
        log.append(line)
        if line.startswith("cnn epoch 0:"):
            break
    stage = [
        p
        for p in psutil.Process(repro.pid).children(recursive=True)
        if "stages/train.py" in " ".join(p.cmdline())
    ]
    assert stage, "".join(log)
    stage[0].send_signal(sig)
    rest, _ = repro.communicate(timeout=120)
    assert repro.returncode != 0, "".join(log) + rest
    assert "cnn epoch 2:" not in rest  # it really was stopped before the end
    for rel in OUTPUTS:
        assert not (project / rel).exists(), f"partial output {rel} left behind"
    leftovers = list(project.rglob(".*.tmp"))
    assert not leftovers

    status = dvc(project, "status").stdout
    assert "train@cnn" in status  # DVC knows the stage must run again

    result = dvc(project, "repro")
    assert "Running stage 'train@cnn'" in result.stdout
    for rel in OUTPUTS:
        assert (project / rel).is_file()
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."
