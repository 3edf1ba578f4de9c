"""Interruption and resume, through the real `dvc repro`: a train stage stopped mid-run leaves no
partial output, the next run continues from the last completed epoch, and the result is
byte-identical to a run that was never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest
import yaml
from project import dvc, env, lock_md5s, make_project, set_params

pytestmark = pytest.mark.e2e

EPOCHS = 4
# Outputs that hold wall-clock times, so they differ between runs by design.
TIMING = ("metrics/train/", "metrics/summary.md")


def outputs(name: str) -> tuple[str, ...]:
    return (f"models/{name}.pt", f"plots/history/{name}.tsv", f"metrics/train/{name}.json")


def restore_default_sigint() -> None:
    # A shell that starts jobs in the background (`make test &`, some CI runners) leaves SIGINT
    # ignored in every child, and Python then never raises KeyboardInterrupt. A terminal's
    # Ctrl-C would reach the stage; give the processes we start that same disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_after_epoch(project, name: str, epoch: int, sig) -> str:
    """Run `dvc repro -f -s train@<name>`; once it prints ``epoch``'s line, send ``sig`` to the
    stage. Return everything the run printed."""
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", f"train@{name}"],
        cwd=project,
        env=env(),
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
    assert f"{name} epoch {EPOCHS - 1}:" not in rest, text  # it really stopped before the end
    for rel in outputs(name):
        assert not (project / rel).exists(), f"{sig!r}: partial output {rel} left behind"
    assert not list(project.rglob(".*.tmp"))
    return text


def exact(md5s: dict) -> dict:
    return {path: md5 for path, md5 in md5s.items() if not path.startswith(TIMING)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # Enough data that an epoch takes a moment: the signal lands in the epoch after the line.
    root = tmp_path_factory.mktemp("interrupt")
    project = make_project(root, models=("cnn", "fast"), sizes=(6000, 100, 50), epochs=EPOCHS)
    dvc(project, "repro", "prepare")
    return project


def test_interrupted_runs_resume_and_match_an_uninterrupted_run(project):
    state = project / ".resume" / "cnn.pt"
    # Ctrl-C after epoch 0: no output, but the state of epoch 0 is kept.
    stop_after_epoch(project, "cnn", 0, signal.SIGINT)
    assert state.is_file()
    assert "train@cnn" in dvc(project, "status", "train@cnn").stdout  # must run again
    # The next run resumes at epoch 1; SIGKILL it after epoch 1.
    log = stop_after_epoch(project, "cnn", 1, signal.SIGKILL)
    assert f"train: resuming from .resume/cnn.pt at epoch 1 of {EPOCHS}" in log
    assert "cnn epoch 0:" not in log  # epoch 0 was not trained again
    # The next full repro resumes at epoch 2 and finishes; success removes the state.
    result = dvc(project, "repro")
    assert f"train: resuming from .resume/cnn.pt at epoch 2 of {EPOCHS}" in result.stdout
    assert not state.exists()
    resumed = exact(lock_md5s(project))
    # The same run, never interrupted: byte-identical model, history and metrics.
    dvc(project, "repro", "--force", "--single-item", "train@cnn")
    dvc(project, "repro")
    assert exact(lock_md5s(project)) == resumed
    assert {"models/cnn.pt", "plots/history/cnn.tsv", "metrics/eval"} <= set(resumed)


def test_one_cycle_resume_is_exact_and_a_changed_setting_or_corrupt_state_starts_over(project):
    state = project / ".resume" / "fast.pt"
    stop_after_epoch(project, "fast", 0, signal.SIGKILL)
    result = dvc(project, "repro", "train@fast")
    assert f"train: resuming from .resume/fast.pt at epoch 1 of {EPOCHS}" in result.stdout
    resumed = (project / "models" / "fast.pt").read_bytes()
    history = (project / "plots" / "history" / "fast.tsv").read_text()
    # A corrupt state: one line, then a fresh and uninterrupted run, equal to the resumed one.
    state.parent.mkdir(exist_ok=True)
    state.write_bytes(b"not a state file")
    result = dvc(project, "repro", "--force", "--single-item", "train@fast")
    notes = [line for line in result.stdout.splitlines() if "ignoring .resume/fast.pt" in line]
    assert len(notes) == 1 and "unreadable" in notes[0] and "starting from epoch 0" in notes[0]
    assert (project / "models" / "fast.pt").read_bytes() == resumed
    assert (project / "plots" / "history" / "fast.tsv").read_text() == history
    # A state saved under another lr is not used.
    stop_after_epoch(project, "fast", 0, signal.SIGKILL)
    models = yaml.safe_load((project / "params.yaml").read_text())["models"]
    models["fast"]["lr"] = models["fast"]["lr"] / 2  # fast sets its own lr
    set_params(project, models=models)
    result = dvc(project, "repro", "train@fast")
    assert "ignoring .resume/fast.pt: made with other settings, data or code" in result.stdout
    assert "fast epoch 0:" in result.stdout and "resuming" not in result.stdout
