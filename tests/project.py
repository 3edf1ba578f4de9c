"""A temporary copy of this repository, pointed at tiny synthetic data, for real dvc runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO, make_mnist, write_pickle_gz

# Produced by the pipeline or by tools: never copied into a test project.
SKIP = ("dvc.lock", "metrics/", "plots/", "BENCHMARKS.md")


def env() -> dict:
    """The environment for dvc and the stages: this venv's python first, no analytics."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600):
    result = subprocess.run(
        cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc(cwd: Path, *args: str, check: bool = True, timeout: float = 600):
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, timeout=timeout)


def git(cwd: Path, *args: str, check: bool = True):
    return run(["git", *args], cwd, check=check)


def train_args(params, model: str, prepared, out, history, timing) -> list[str]:
    """The arguments of stages/train.py, as dvc.yaml's train stage passes them."""
    return [
        *("--params", str(params), "--model", model, "--prepared", str(prepared)),
        *("--out", str(out), "--history", str(history), "--timing", str(timing)),
    ]


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if not f.startswith(SKIP) and (REPO / f).is_file()]


def plots_page(root: Path) -> Path:
    """The page template of `dvc plots show` that ``root``'s .dvc/config names."""
    from configobj import ConfigObj

    config = ConfigObj(str(root / ".dvc" / "config"))
    return root / ".dvc" / config["plots"]["html_template"]


def copy_repo(project: Path) -> Path:
    """Copy this repository's source files (no outputs) to ``project``."""
    for rel in tracked_files():
        dest = project / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    # Made by `make install` and git-ignored, as in a user's checkout: copy it, or make it.
    page, dest = plots_page(REPO), plots_page(project)
    if page.is_file():
        shutil.copy2(page, dest)
    else:
        from mnist_pipeline import plots_page as make_page

        make_page.main([str(dest)])
    return project


def commit_all(project: Path, message: str) -> None:
    """Make ``project`` a git repository (if it is not yet) and commit everything in it."""
    if not (project / ".git").exists():
        git(project, "init", "-q")
        git(project, "config", "user.name", "test")  # for dvc exp's own commits
        git(project, "config", "user.email", "test@example.com")
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)


def make_project(root: Path, models=("logistic", "cnn"), sizes=(256, 128, 128), **params):
    """Copy the repo to ``root/project``, point fetch at a synthetic file, commit it."""
    project = copy_repo(root / "project")
    data = root / "synthetic-mnist.pkl.gz"
    digest = write_pickle_gz(data, make_mnist(sizes))
    fetch = {"timeout": 5, "sources": [{"url": str(data), "checksums": [f"sha256:{digest}"]}]}
    repo_models = REPO_MODELS()
    # One epoch whatever params.yaml says: a user's `epochs` edit must not slow or fail a test.
    chosen = {
        name: {k: v for k, v in repo_models[name].items() if k != "epochs"} for name in models
    }
    set_params(
        project,
        **({"fetch": fetch, "epochs": 1, "lr": 0.05, "bs": 32, "models": chosen} | params),
    )
    commit_all(project, "test project")
    return project


def reproduced_project(root: Path, models) -> Path:
    """make_project, then `dvc repro` and a commit of the results: a baseline to build on."""
    project = make_project(root, models=models)
    dvc(project, "repro")
    commit_all(project, "baseline run")
    return project


def REPO_MODELS() -> dict:  # noqa: N802 - reads like a constant
    return yaml.safe_load((REPO / "params.yaml").read_text())["models"]


def set_params(project: Path, **values) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw.update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def lock_md5s(project: Path) -> dict[str, str]:
    """path -> md5 of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }
