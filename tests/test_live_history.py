"""plots/history/<model>.tsv grows while its train stage runs, through the real `dvc repro`,
and ends byte-identical to the history of the same training written once."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch
from project import dvc, lock_md5s, make_project, project_env

from mnist_pipeline.data import load_datasets
from mnist_pipeline.history import write_history
from mnist_pipeline.params import load_params
from mnist_pipeline.train import train_model

pytestmark = pytest.mark.e2e

EPOCHS = 3


def test_history_grows_epoch_by_epoch_and_ends_as_if_written_once(tmp_path):
    project = make_project(tmp_path, models=("cnn",), sizes=(6000, 200, 100), epochs=EPOCHS)
    dvc(project, "repro", "prepare")
    history = project / "plots" / "history" / "cnn.tsv"
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@cnn"],
        cwd=project,
        env=project_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = {}  # epoch line -> the history's epochs at that moment, while the stage still runs
    for line in repro.stdout:
        if line.startswith("cnn epoch ") and len(seen) < EPOCHS - 1:
            rows = history.read_text().splitlines()
            assert repro.poll() is None
            seen[line.split(":")[0]] = [row.split("\t")[0] for row in rows[1:]]
    assert repro.wait(timeout=300) == 0
    assert seen == {"cnn epoch 0": ["0"], "cnn epoch 1": ["0", "1"]}

    # The same training in this process, its history written once at the end.
    config = load_params(project / "params.yaml").model("cnn")
    datasets = load_datasets(project / "data" / "prepared", splits=("train", "valid"))
    _, rows = train_model(config, *datasets, torch.device("cpu"))
    write_history(tmp_path / "once.tsv", rows)
    assert history.read_bytes() == (tmp_path / "once.tsv").read_bytes()
    md5 = hashlib.md5(history.read_bytes()).hexdigest()
    assert lock_md5s(project)["plots/history/cnn.tsv"] == md5
