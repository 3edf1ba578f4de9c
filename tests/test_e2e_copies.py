"""End-to-end on copies of one small reproduced project: exact reruns, a committed
experiment cloned fresh, a remote, and a queued sweep. Real dvc, tiny synthetic data."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from project import commit_all, dvc, git, lock_md5s, reproduced_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A one-model project, reproduced and committed once; tests work on copies of it."""
    return reproduced_project(tmp_path_factory.mktemp("small"), ("cnn",))


def copy_of(project, tmp_path):
    """A copy with its git history and DVC cache: as if reproduced there."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    return copy


def test_a_forced_rerun_changes_no_tracked_byte(small, tmp_path):
    project = copy_of(small, tmp_path)
    first = lock_md5s(project)
    dvc(project, "repro", "--force")
    assert {"models/cnn.pt", "plots/history/cnn.tsv", "metrics/eval.json"} <= set(first)
    assert lock_md5s(project) == first
    # dvc.lock, metrics and plots are committed: a rerun that reproduces them leaves git clean,
    # and so does the page `dvc plots show` writes by default (dvc_plots/, git-ignored).
    dvc(project, "plots", "show")
    assert (project / "dvc_plots" / "index.html").is_file()
    assert git(project, "status", "--porcelain").stdout == ""


def test_a_training_loop_edit_retrains_and_leaves_evaluation_unchanged(small, tmp_path):
    project = copy_of(small, tmp_path)
    train_py = project / "src" / "mnist_pipeline" / "train.py"
    train_py.write_text(train_py.read_text() + "\n# an edit to the training loop\n")
    before = lock_md5s(project)
    result = dvc(project, "repro")
    assert "Running stage 'train@cnn'" in result.stdout
    assert "Stage 'evaluate' didn't change, skipping" in result.stdout, result.stdout
    assert lock_md5s(project)["models/cnn.pt"] == before["models/cnn.pt"]


def test_fresh_clone_of_a_committed_experiment_reproduces_it(small, tmp_path):
    project = copy_of(small, tmp_path)
    dvc(project, "exp", "run", "-S", "lr=0.2", "-n", "lr-0.2")
    dvc(project, "exp", "apply", "lr-0.2")
    commit_all(project, "adopt lr-0.2")
    committed = lock_md5s(project)
    assert committed["models/cnn.pt"] != lock_md5s(small)["models/cnn.pt"]  # a new model

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "repro")
    reproduced = lock_md5s(clone)
    assert reproduced == committed


def test_remote_push_then_pull_in_a_fresh_clone_reruns_nothing(small, tmp_path):
    project = copy_of(small, tmp_path)
    dvc(project, "remote", "add", "-d", "shared", str(tmp_path / "remote-store"))
    dvc(project, "push")
    commit_all(project, "remote")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    result = dvc(clone, "repro")
    assert "Running stage" not in result.stdout
    assert "Data and pipelines are up to date" in result.stdout
    for rel in ("metrics/eval.json", "models/cnn.pt", "data/prepared/train.pt"):
        assert (clone / rel).read_bytes() == (project / rel).read_bytes()


def test_queued_sweep_runs_two_experiments(small, tmp_path):
    project = copy_of(small, tmp_path)
    dvc(project, "exp", "run", "--queue", "-S", "lr=0.02,0.2")
    try:
        dvc(project, "queue", "start", "-j", "2")
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            status = dvc(project, "queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        assert "Failed" not in status, status
    finally:
        dvc(project, "queue", "stop", "--kill", check=False)
    exps = json.loads(dvc(project, "exp", "show", "--json").stdout)
    runs = {}
    for baseline in exps:
        for group in baseline.get("experiments") or []:
            for rev in group["revs"]:
                data = rev.get("data") or {}
                lr = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("lr")
                acc = data.get("metrics", {}).get("metrics/eval.json", {}).get("data", {})
                runs[lr] = acc.get("cnn", {}).get("val_acc")
    assert set(runs) == {0.02, 0.2}, runs
    assert all(isinstance(acc, float) for acc in runs.values()), runs
    shutil.rmtree(project / ".dvc" / "tmp", ignore_errors=True)
