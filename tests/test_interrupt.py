"""Interruption and resume, through the real `dvc repro`: a train stage stopped mid-run leaves no
partial output, the next run continues from the last completed epoch, and the result is
byte-identical to a run that was never stopped."""

from __future__ import annotations

import io
import signal
import struct
import zipfile

import pytest
import yaml
from project import dvc, lock_md5s, make_project, set_params, stop_after_epoch

pytestmark = pytest.mark.e2e

EPOCHS = 4


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
    stop_after_epoch(project, "cnn", 0, signal.SIGINT, EPOCHS)
    assert state.is_file()
    assert "train@cnn" in dvc(project, "status", "train@cnn").stdout  # must run again
    # The next run resumes at epoch 1; SIGKILL it after epoch 1.
    log = stop_after_epoch(project, "cnn", 1, signal.SIGKILL, EPOCHS)
    assert f"train: resuming from .resume/cnn.pt at epoch 1 of {EPOCHS}" in log
    assert "cnn epoch 0:" not in log  # epoch 0 was not trained again
    # The next full repro resumes at epoch 2 and finishes; success removes the state.
    result = dvc(project, "repro")
    assert f"train: resuming from .resume/cnn.pt at epoch 2 of {EPOCHS}" in result.stdout
    assert not state.exists()
    resumed = lock_md5s(project)
    # The same run, never interrupted: byte-identical model, history and metrics.
    dvc(project, "repro", "--force", "--single-item", "train@cnn")
    dvc(project, "repro")
    assert lock_md5s(project) == resumed
    assert {"models/cnn.pt", "plots/history/cnn.tsv", "metrics/eval.json"} <= set(resumed)


def test_one_cycle_resume_is_exact_and_a_changed_setting_or_corrupt_state_starts_over(project):
    state = project / ".resume" / "fast.pt"
    stop_after_epoch(project, "fast", 0, signal.SIGKILL, EPOCHS)
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
    stop_after_epoch(project, "fast", 0, signal.SIGKILL, EPOCHS)
    models = yaml.safe_load((project / "params.yaml").read_text())["models"]
    models["fast"]["lr"] = models["fast"]["lr"] / 2  # fast sets its own lr
    set_params(project, models=models)
    result = dvc(project, "repro", "train@fast")
    assert "ignoring .resume/fast.pt: made with other settings, data or code" in result.stdout
    assert "fast epoch 0:" in result.stdout and "resuming" not in result.stdout


def flip_a_byte_inside_a_tensor(state) -> None:
    """Flip one byte in the middle of the largest tensor stored in a resume state file."""
    data = state.read_bytes()
    start = data.index(b"\n", data.index(b"\n") + 1) + 1  # past the magic and header lines
    with zipfile.ZipFile(io.BytesIO(data[start:])) as archive:
        member = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
        local = archive.fp
        local.seek(member.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", local.read(4))
    at = start + member.header_offset + 30 + name_len + extra_len + member.file_size // 2
    state.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :])


def test_a_state_damaged_on_disk_is_ignored_and_the_model_is_exact(project):
    dvc(project, "repro", "train@cnn")
    uninterrupted = (project / "models" / "cnn.pt").read_bytes()
    stop_after_epoch(project, "cnn", 1, signal.SIGKILL, EPOCHS)
    flip_a_byte_inside_a_tensor(project / ".resume" / "cnn.pt")
    result = dvc(project, "repro", "train@cnn")
    assert (
        "train: ignoring .resume/cnn.pt: damaged (checksum mismatch); starting from epoch 0"
        in result.stdout
    )
    assert "resuming" not in result.stdout
    assert (project / "models" / "cnn.pt").read_bytes() == uninterrupted


def test_a_state_made_by_other_model_code_is_ignored_and_the_model_is_the_edited_codes(project):
    """Issue 24 case 1: killed after epoch 0, the model's forward edited, rerun. The state's key
    covers the model's own module, so the run starts over and equals a fresh run of the edit."""
    tutorial = project / "src" / "mnist_pipeline" / "models" / "tutorial.py"
    original = tutorial.read_text()
    old = "        return xb.view(-1, xb.size(1))\n"
    assert original.count(old) == 1
    stop_after_epoch(project, "cnn", 0, signal.SIGKILL, EPOCHS)
    assert (project / ".resume" / "cnn.pt").is_file()
    try:
        tutorial.write_text(original.replace(old, "        return xb.view(-1, xb.size(1)) * 2\n"))
        result = dvc(project, "repro", "train@cnn")
        assert (
            "train: ignoring .resume/cnn.pt: made with other settings, data or code; "
            "starting from epoch 0" in result.stdout
        ), result.stdout
        assert "resuming" not in result.stdout and "cnn epoch 0:" in result.stdout
        after_kill = (project / "models" / "cnn.pt").read_bytes()
        dvc(project, "repro", "--force", "--single-item", "train@cnn")  # fresh, edited code
        assert (project / "models" / "cnn.pt").read_bytes() == after_kill
    finally:
        tutorial.write_text(original)
