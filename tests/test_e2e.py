"""End-to-end: real dvc commands in a temporary copy of the repo, on tiny synthetic data."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from project import REPO_MODELS, dvc, git, lock_md5s, make_project

pytestmark = pytest.mark.e2e

ALL_MODELS = tuple(REPO_MODELS())
# Outputs that hold wall-clock times, so they differ between runs by design.
TIMING = ("metrics/train/", "metrics/summary.md")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Every model of params.yaml, reproduced once."""
    project = make_project(tmp_path_factory.mktemp("e2e"), models=ALL_MODELS)
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline run")
    return project


def test_repro_outputs_then_nothing_to_do(project):
    for split in ("train", "valid", "test"):
        assert (project / "data" / "prepared" / f"{split}.pt").is_file()
    for name in ALL_MODELS:
        assert (project / "models" / f"{name}.pt").is_file()
        metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert {"val_loss", "val_acc", "test_acc", "test_loss", "parameters"} <= set(metrics)
    summary = (project / "metrics" / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in ALL_MODELS)

    # Nothing is written outside the output folders (and DVC's own .dvc/ and dvc.lock).
    untracked = git(project, "ls-files", "--others", "--ignored", "--exclude-standard").stdout
    tops = {line.split("/")[0] for line in untracked.splitlines()}
    tops |= {line.split("/")[0] for line in git(project, "ls-files", "--others").stdout.split()}
    assert tops <= {"data", "models", "metrics", "plots", ".dvc", "dvc.lock"}, tops

    again = dvc(project, "repro")
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in again.stdout
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."


def test_every_declared_plot_exists_and_plots_show_writes_html(project):
    import yaml

    plots = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    files = []
    for entry in plots:
        if isinstance(entry, str):
            files.append(entry)
        else:
            ((name, spec),) = entry.items()
            files.extend(spec["y"] if isinstance(spec.get("y"), dict) else [name])
    assert files
    for path in files:
        assert (project / path).is_file(), f"declared plot {path} was not produced"
    out = project / "plots_html"
    dvc(project, "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    for name in ALL_MODELS:
        assert name in html


def test_exp_run_retrains_and_metrics_diff_lists_every_model(project):
    result = dvc(project, "exp", "run", "-S", "lr=0.1")
    for name in ALL_MODELS:
        assert f"Running stage 'train@{name}'" in result.stdout
    assert "Running stage 'fetch'" not in result.stdout  # data stages are cached

    exps = json.loads(dvc(project, "exp", "show", "--json").stdout)
    lrs = [
        rev["data"]["params"]["params.yaml"]["data"]["lr"]
        for baseline in exps
        for rev in [baseline, *(e for x in baseline.get("experiments") or [] for e in x["revs"])]
        if rev.get("data")
    ]
    assert 0.1 in lrs and 0.05 in lrs

    diff = json.loads(dvc(project, "metrics", "diff", "--json").stdout)
    for name in ALL_MODELS:
        changes = diff[f"metrics/{name}.json"]
        assert "val_loss" in changes and changes["val_loss"]["old"] is not None
        assert changes["val_loss"]["new"] is not None


def test_misspelled_param_fails_loudly(project):
    # DVC itself refuses to override a key that does not exist...
    result = dvc(project, "exp", "run", "-S", "lrr=0.1", check=False)
    assert result.returncode != 0 and "lrr" in result.stderr
    # ...and a key added on purpose with `+` is refused by check_params before any training.
    result = dvc(project, "exp", "run", "-S", "+lrr=0.1", check=False)
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "error: params.yaml: unknown key 'lrr'" in output
    assert "Running stage 'train@" not in output
    git(project, "checkout", "--", "params.yaml")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A one-model project, reproduced and committed once; tests work on copies of it."""
    project = make_project(tmp_path_factory.mktemp("small"), models=("cnn",))
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline run")
    return project


def copy_of(project, tmp_path):
    """A copy with its git history and DVC cache: as if reproduced there."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    return copy


def test_two_forced_runs_are_byte_identical(small, tmp_path):
    project = copy_of(small, tmp_path)
    first = lock_md5s(project)
    dvc(project, "repro", "--force")
    second = lock_md5s(project)
    exact = {p for p in first if not p.startswith(TIMING)}
    assert {"models/cnn.pt", "plots/history/cnn.tsv", "metrics/cnn.json", "data/prepared"} <= exact
    assert {p: first[p] for p in exact} == {p: second[p] for p in exact}


def test_fresh_clone_of_a_committed_experiment_reproduces_it(small, tmp_path):
    project = copy_of(small, tmp_path)
    dvc(project, "exp", "run", "-S", "lr=0.2", "-n", "lr-0.2")
    dvc(project, "exp", "apply", "lr-0.2")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "adopt lr-0.2")
    committed = lock_md5s(project)
    assert committed["models/cnn.pt"] != lock_md5s(small)["models/cnn.pt"]  # a new model

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "repro")
    reproduced = lock_md5s(clone)
    assert {p: h for p, h in reproduced.items() if not p.startswith(TIMING)} == {
        p: h for p, h in committed.items() if not p.startswith(TIMING)
    }


def test_remote_push_then_pull_in_a_fresh_clone_reruns_nothing(small, tmp_path):
    project = copy_of(small, tmp_path)
    dvc(project, "remote", "add", "-d", "shared", str(tmp_path / "remote-store"))
    dvc(project, "push")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "remote")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    result = dvc(clone, "repro")
    assert "Running stage" not in result.stdout
    assert "Data and pipelines are up to date" in result.stdout
    for rel in ("metrics/cnn.json", "models/cnn.pt", "data/prepared/train.pt"):
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
                acc = data.get("metrics", {}).get("metrics/cnn.json", {}).get("data", {})
                runs[lr] = acc.get("val_acc")
    assert set(runs) == {0.02, 0.2}, runs
    assert all(isinstance(acc, float) for acc in runs.values()), runs
    shutil.rmtree(project / ".dvc" / "tmp", ignore_errors=True)
