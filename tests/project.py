"""A temporary copy of this repository, pointed at tiny synthetic data, for real dvc runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
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


def project_env(cwd: Path) -> dict:
    """env(), with a project copy's own src/ first on the path: its stages run its code."""
    src = Path(cwd) / "src"
    return env() | ({"PYTHONPATH": str(src)} if (src / "mnist_pipeline").is_dir() else {})


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600):
    result = subprocess.run(
        cmd, cwd=cwd, env=project_env(cwd), capture_output=True, text=True, timeout=timeout
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
    write_sources(project, {"url": str(data), "checksums": [f"sha256:{digest}"]})
    repo_models = REPO_MODELS()
    # One epoch whatever params.yaml says: a user's `epochs` edit must not slow or fail a test.
    chosen = {
        name: {k: v for k, v in repo_models[name].items() if k != "epochs"} for name in models
    }
    set_params(
        project,
        # One torch thread per stage: pytest runs one worker per core.
        **(
            {"fetch": {"timeout": 5}, "epochs": 1, "lr": 0.05, "bs": 32, "threads": 1}
            | {"models": chosen}
            | params
        ),
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


def write_sources(project: Path, *sources: dict) -> None:
    """Point ``project``'s fetch stage at ``sources`` (its sources.yaml)."""
    text = yaml.safe_dump({"sources": list(sources)}, sort_keys=False)
    (project / "sources.yaml").write_text(text)


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


def outputs(name: str) -> tuple[str, ...]:
    """What a train stage writes once it ends (its history grows epoch by epoch before). Not its
    timing log: no DVC output, so DVC leaves an earlier run's in place."""
    return (f"models/{name}.pt",)


def restore_default_sigint() -> None:
    # A shell that starts jobs in the background (`make test &`, some CI runners) leaves SIGINT
    # ignored in every child, and Python then never raises KeyboardInterrupt. A terminal's
    # Ctrl-C would reach the stage; give the processes we start that same disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_after_epoch(project, name: str, epoch: int, sig, epochs: int) -> str:
    """Run `dvc repro -f -s train@<name>`; once it prints ``epoch``'s line, send ``sig`` to the
    stage. Return everything the run printed."""
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", f"train@{name}"],
        cwd=project,
        env=project_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=restore_default_sigint,
    )
    log = []
    for line in repro.stdout:  # the state of this epoch is saved before its line is printed
        log.append(line)
        if line.startswith(f"{name} epoch {epoch}:"):
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
    text = "".join(log) + rest
    assert repro.returncode != 0, text
    assert f"{name} epoch {epochs - 1}:" not in rest, text  # it really stopped before the end
    for rel in outputs(name):
        assert not (project / rel).exists(), f"{sig!r}: partial output {rel} left behind"
    history = project / "plots" / "history" / f"{name}.tsv"
    printed = [
        int(line.split()[2].rstrip(":"))
        for line in text.splitlines()
        if line.startswith(f"{name} epoch")
    ]
    if history.exists():  # the epochs done so far (a resumed run's too), each once, in order
        epochs = [int(row.split("\t")[0]) for row in history.read_text().splitlines()[1:]]
        assert epochs == list(range(len(epochs))) and len(epochs) > max(printed), epochs
    assert not list(project.rglob(".*.tmp"))
    return text
