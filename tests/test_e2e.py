"""End-to-end: real dvc commands in a temporary copy of the repo, on tiny synthetic data."""

from __future__ import annotations

import json

import pytest
from project import REPO_MODELS, dvc, git, reproduced_project

pytestmark = pytest.mark.e2e

ALL_MODELS = tuple(REPO_MODELS())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Every model of params.yaml, reproduced once."""
    return reproduced_project(tmp_path_factory.mktemp("e2e"), ALL_MODELS)


def test_repro_outputs_then_nothing_to_do(project):
    for split in ("train", "valid", "test"):
        assert (project / "data" / "prepared" / f"{split}.pt").is_file()
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    assert set(metrics) == set(ALL_MODELS)
    for name in ALL_MODELS:
        assert (project / "models" / f"{name}.pt").is_file()
        assert set(metrics[name]) == {"val_loss", "val_acc", "test_acc", "test_loss"}
    summary = (project / "metrics" / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in ALL_MODELS)

    # Nothing is written outside the output folders (and DVC's own .dvc/ and dvc.lock).
    untracked = git(project, "ls-files", "--others", "--ignored", "--exclude-standard").stdout
    tops = {line.split("/")[0] for line in untracked.splitlines()}
    tops |= {line.split("/")[0] for line in git(project, "ls-files", "--others").stdout.split()}
    assert tops <= {"data", "models", "metrics", "plots", "logs", ".dvc", "dvc.lock"}, tops

    again = dvc(project, "repro")
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date" in again.stdout
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."


def test_every_declared_plot_exists_and_plots_show_writes_html(project):
    import yaml

    plots = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    paths = [entry if isinstance(entry, str) else next(iter(entry)) for entry in plots]
    assert paths
    for path in paths:
        if (project / path).is_dir():  # a folder stands for one file per model
            assert {p.stem for p in (project / path).iterdir()} == set(ALL_MODELS), path
        else:
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

    # Results only, and only those that changed: every model on the shared lr has its
    # val_loss row; fast, with its own AdamW lr, comes out byte-identical, so has no row;
    # and nothing else (no timings, no settings) is a metric.
    diff = json.loads(dvc(project, "metrics", "diff", "--json").stdout)
    assert set(diff) == {"metrics/eval.json"}, diff
    rows = diff["metrics/eval.json"]
    assert {key.split(".")[0] for key in rows} == set(ALL_MODELS) - {"fast"}, rows
    assert {key.split(".")[1] for key in rows} <= {"val_loss", "val_acc", "test_loss", "test_acc"}
    for name in set(ALL_MODELS) - {"fast"}:
        change = rows[f"{name}.val_loss"]
        assert None not in (change["old"], change["new"]) and change["old"] != change["new"]


def test_an_edit_reruns_exactly_the_stages_whose_code_it_touches(project):
    def stale_after_editing(module: str) -> set[str]:
        path = project / "src" / "mnist_pipeline" / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        try:
            status = dvc(project, "status").stdout
        finally:
            path.write_text(original)
        return {line.strip().rstrip(":") for line in status.splitlines() if line[:1] not in " \t"}

    trains = {f"train@{name}" for name in ALL_MODELS}
    # atomic.py decides the bytes of every output: every stage that writes through it.
    # (check_params writes its stamp through it.)
    stages = {"check_params", "fetch", "prepare", "evaluate", *trains}
    assert stale_after_editing("atomic.py") == stages
    # The training loop: every train stage, and no evaluation.
    assert stale_after_editing("train.py") == trains


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
