"""The committed dvc.yaml and dvc.lock describe this checkout: no data or training needed."""

from __future__ import annotations

import json
import shutil

import yaml
from conftest import REPO
from project import commit_all, copy_repo, dvc

CODE = ("src/", "stages/", "params.yaml", "sources.yaml")


def changed_code_deps(root) -> dict[str, str]:
    """stage -> code dependency that `dvc status` finds changed since dvc.lock was written."""
    status = json.loads(dvc(root, "status", "--json").stdout or "{}")
    changed = {}
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            for path, how in entry.get("changed deps", {}).items():
                if path.startswith(CODE):
                    changed[stage] = f"{path}: {how}"
    return changed


def test_the_committed_lock_matches_the_code(tmp_path):
    """A fresh clone reruns nothing for code: every code dep's hash in dvc.lock is the file's.

    Copied (with dvc.lock) and committed, as a fresh clone would be; the check is shown to
    fail on the same copy after a one-byte edit."""
    project = copy_repo(tmp_path / "project")
    shutil.copy2(REPO / "dvc.lock", project / "dvc.lock")
    commit_all(project, "as committed")
    assert changed_code_deps(project) == {}, "dvc.lock is stale: run dvc repro and commit it"

    train = project / "src" / "mnist_pipeline" / "train.py"
    train.write_text(train.read_text() + "\n")
    changed = changed_code_deps(project)
    assert changed and all("train.py: modified" in v for v in changed.values()), changed


def test_every_model_is_an_artifact():
    """`dvc artifacts get <repo> <model>` works for each model of params.yaml, and only those."""
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    artifacts = dvc_yaml.get("artifacts", {})
    assert sorted(artifacts) == sorted(models)
    for name, artifact in artifacts.items():
        assert artifact["path"] == f"models/{name}.pt" and artifact["type"] == "model", name
