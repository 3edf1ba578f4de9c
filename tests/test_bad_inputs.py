"""Bad inputs through the real stage scripts: exit code 1, exactly one `error: ` line on stderr
naming the file, key or value, and no output (nor temporary file) left behind.

Each message is pinned where it is raised, by a unit test (test_params, test_data, test_fetch,
test_train). Here: one case per stage, proving its script turns the error into that line, and
the cases that only exist end to end. README.md's "Bad inputs" table lists them all.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, code_running_pickle, make_mnist, tiny_params, write_pickle_gz
from project import commit_all, dvc, make_project, set_params, train_args, write_sources

from mnist_pipeline import atomic
from mnist_pipeline.data import prepare

MODEL = "logistic_scratch"
BAD_HISTORY = "epoch\ttrain_loss\tval_loss\tval_acc\nzero\t1\t1\t1\n"
SHORT_ROW = "epoch\ttrain_loss\tval_loss\tval_acc\n0\t1.0\n"
NAN_ROW = "epoch\ttrain_loss\tval_loss\tval_acc\n0\t1.0\tnan\t0.5\n"


def fifo(path: Path) -> None:
    """``path`` made a FIFO: a reader that opened it would wait for ever."""
    path.unlink()
    os.mkfifo(path)


# What each stage writes, relative to the work folder; train's outputs are evaluate's inputs.
OUTPUTS = {
    "fetch": ["raw/mnist.pkl.gz"],
    "prepare": ["prepared"],
    "train": [f"models/{MODEL}.pt", f"history/{MODEL}.tsv", f"timing/{MODEL}.json"],
    "evaluate": ["eval"],
}


def evaluate_args(w: Path) -> list[str]:
    """stages/evaluate.py's arguments as dvc.yaml passes them, for the work folder w."""
    args = ["--params", str(w / "params.yaml"), "--prepared", str(w / "prepared")]
    for name in ("models", "history"):
        args += [f"--{name}-dir", str(w / name)]
    args += ["--metrics", str(w / "eval" / "metrics.json")]
    for name in ("details", "confusion-counts", "confusion", "misclassified"):
        args += [f"--{name}-dir", str(w / "eval" / name)]
    for flag, name in (("summary", "summary.md"), ("curves-png", "c.png"), ("digits-png", "d.png")):
        args += [f"--{flag}", str(w / "eval" / name)]
    return args


def stage_args(stage: str, w: Path) -> list[str]:
    params, raw = w / "params.yaml", w / "raw" / "mnist.pkl.gz"
    return {
        "fetch": ["--params", str(params), "--sources", str(w / "sources.yaml"), "--out", str(raw)],
        "prepare": ["--raw", str(raw), "--out", str(w / "prepared")],
        "train": train_args(params, MODEL, w / "prepared", *(w / o for o in OUTPUTS["train"])),
        "evaluate": evaluate_args(w),
    }[stage]


def run_stage(stage: str, w: Path) -> None:
    old = sys.argv
    sys.argv = [f"stages/{stage}.py", *stage_args(stage, w)]
    try:
        runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="__main__")
    finally:
        sys.argv = old


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A work folder with every stage's inputs: good data, prepared tensors, a trained model."""
    w = tmp_path_factory.mktemp("template")
    digest = write_pickle_gz(w / "good.pkl.gz", make_mnist())
    source = {"url": str(w / "good.pkl.gz"), "checksums": [f"sha256:{digest}"]}
    params = tiny_params(lr=0.05, fetch={"timeout": 2}, models={MODEL: {"arch": MODEL}})
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    write_sources(w, source)
    (w / "raw").mkdir()
    shutil.copy(w / "good.pkl.gz", w / "raw" / "mnist.pkl.gz")
    prepare(w / "good.pkl.gz", w / "prepared")
    run_stage("train", w)
    return w


@pytest.fixture
def work(template, tmp_path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "w"))


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def fails_cleanly(stage: str, w: Path, capsys, expected: str, may_leave=()) -> str:
    """Run stage in w with its outputs removed; return its error line after checking the rules.

    ``may_leave``: outputs that a failure may leave whole (never a temporary file)."""
    for out in OUTPUTS[stage]:
        path = w / out
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    before = files(w)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage, w)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err  # fetch first lists failed sources
    assert expected in errors[0], errors[0]
    left = sorted(str(p.relative_to(w)) for p in files(w) - before)  # .tmp files included
    assert not set(left) - set(may_leave), f"left behind: {left}"
    return errors[0]


# The train stage rewrites its history after every epoch (for `dvc plots show` during a run):
# a failure at the model's save leaves the history of the epochs done, whole.
LIVE_HISTORY = f"history/{MODEL}.tsv"


def test_fetch_with_a_wrong_checksum(work, capsys):
    source = {"url": str(work / "good.pkl.gz"), "checksums": ["sha256:" + "1" * 64]}
    write_sources(work, source)
    fails_cleanly("fetch", work, capsys, f"{work}/good.pkl.gz: checksum mismatch (got sha256:")


def test_prepare_refuses_a_pickle_that_runs_code(work, capsys):
    raw, marker = work / "raw" / "mnist.pkl.gz", work / "code-ran"
    code_running_pickle(raw, marker)
    fails_cleanly("prepare", work, capsys, f"{raw}: unsafe or invalid pickle: refused to load")
    assert not marker.exists()


def test_train_on_an_absent_device(work, capsys):
    absent = f"cuda:{torch.cuda.device_count()}"  # absent on every machine
    set_params(work, device=absent)
    fails_cleanly("train", work, capsys, f"device '{absent}': ")


def test_train_refuses_a_state_path_that_is_an_output(work, capsys):
    """The state is removed once a run ends: at an output's path it would delete the model."""
    model = work / OUTPUTS["train"][0]
    old = sys.argv
    sys.argv = ["stages/train.py", *stage_args("train", work), "--state", str(model)]
    try:
        with pytest.raises(SystemExit):
            runpy.run_path(str(REPO / "stages" / "train.py"), run_name="__main__")
    finally:
        sys.argv = old
    assert capsys.readouterr().err == (
        f"error: --state {model}: also an output; a finished run removes its state, "
        "so give it its own file\n"
    )
    assert model.is_file()


def test_train_diverging_at_a_huge_lr(work, capsys):
    set_params(work, lr=100)
    fails_cleanly("train", work, capsys, f"model '{MODEL}' diverged in epoch 0: loss is")


def test_train_refuses_a_special_file_at_an_output_before_it_trains(work, capsys):
    timing = work / OUTPUTS["train"][2]
    for out in OUTPUTS["train"]:
        (work / out).unlink()
    os.mkfifo(timing)  # a FIFO where the timing JSON goes: refused, not replaced
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_stage("train", work)
    err = capsys.readouterr().err
    assert err == f"error: {timing}: a FIFO, not a regular file; an output replaces only one\n"
    assert not any((work / out).is_file() for out in OUTPUTS["train"])  # no epoch was trained
    assert timing.exists() and not timing.is_file()
    timing.unlink()  # the good case beside it: a fresh path is written
    run_stage("train", work)
    assert all((work / out).is_file() for out in OUTPUTS["train"])


def test_evaluate_refuses_a_model_trained_under_other_settings(work, capsys):
    """Issue 24 case 4: `dvc exp run -S lr=...` rewrote params.yaml while `dvc repro` trained,
    so dvc.lock records an lr the checkpoint was not trained with: evaluate says so."""
    set_params(work, lr=0.1)  # the checkpoint says 0.05
    fails_cleanly(
        "evaluate",
        work,
        capsys,
        f"{work}/models/{MODEL}.pt: model '{MODEL}' was trained with other settings than "
        "params.yaml gives it (lr 0.05 in the checkpoint, 0.1 in params.yaml); retrain it: "
        f"dvc repro -f -s train@{MODEL}",
    )


class NotATensor:
    pass


UNLOADABLE = "not a loadable weights-only checkpoint ("


def relabel_as_cnn(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["arch"] = "cnn"
    torch.save(ckpt, path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (Path.unlink, "model file not found; run its train stage first"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), UNLOADABLE),
        (lambda p: torch.save({"state_dict": NotATensor()}, p), UNLOADABLE),
        (relabel_as_cnn, f"checkpoint architecture 'cnn' does not match params arch '{MODEL}'"),
        (
            lambda p: torch.save({"state_dict": {}, "config": "cnn"}, p),
            "config is a str, not a mapping of names to settings",
        ),
        (
            lambda p: torch.save({"state_dict": [1.0], "config": {"arch": MODEL}}, p),
            "state_dict is a list, not a mapping of names to tensors",
        ),
    ],
    ids=[
        "missing",
        "truncated",
        "pickled-object",
        "wrong-architecture",
        "config-a-string",
        "state_dict-a-list",
    ],
)
def test_evaluate_with_a_bad_checkpoint(damage, message, work, capsys):
    damage(work / "models" / f"{MODEL}.pt")
    fails_cleanly("evaluate", work, capsys, f"{work}/models/{MODEL}.pt: {message}")


class RunsShell:
    """Unpickling this would run a shell command (os.system: posix.system on Linux)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_refused_checkpoint_names_the_refused_global(work, capsys):
    """Not PyTorch's advice cut at 160 characters: the global it refused (issue 18, case 8)."""
    marker = work / "code-ran"
    ckpt = work / "models" / f"{MODEL}.pt"
    torch.save({"state_dict": RunsShell(marker), "config": {"arch": MODEL}}, ckpt)
    line = fails_cleanly("evaluate", work, capsys, f"{ckpt}: ")
    assert line == (
        f"error: {ckpt}: not a loadable weights-only checkpoint "
        f"(Unsupported global: {os.system.__module__}.system)"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "rel, damage, message",
    [
        (f"history/{MODEL}.tsv", Path.unlink, "not found; run dvc repro"),
        (f"history/{MODEL}.tsv", lambda p: p.write_text(BAD_HISTORY), "not a history file"),
        (f"history/{MODEL}.tsv", lambda p: p.write_text(SHORT_ROW), "not a history file"),
        (f"history/{MODEL}.tsv", lambda p: p.write_text(""), "not a history file"),
        (
            f"history/{MODEL}.tsv",
            lambda p: p.write_text(NAN_ROW),
            "not a history file (ValueError: val_loss is nan in epoch 0)",
        ),
        (f"history/{MODEL}.tsv", fifo, "a FIFO, not a regular file"),
    ],
    ids=[
        "missing-history",
        "garbled-history",
        "short-row",
        "empty-history",
        "nan-history",
        "fifo-history",
    ],
)
def test_evaluate_with_a_missing_or_broken_input(rel, damage, message, work, capsys):
    """Every input is read before any output is written: nothing new is left behind."""
    path = work / rel
    damage(path)
    fails_cleanly("evaluate", work, capsys, f"{path}: {message}")


@pytest.mark.parametrize("stage", ["fetch", "prepare", "train", "evaluate"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES], ids=["disk-full", "unwritable"])
def test_write_failures_are_one_line_errors(stage, err, work, capsys, monkeypatch):
    """A full disk or an unwritable folder, injected where every output is written."""

    def failing_mkstemp(*args, dir="?", **kwargs):
        raise OSError(err, os.strerror(err), dir)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", failing_mkstemp)
    line = fails_cleanly(stage, work, capsys, f": cannot write ({os.strerror(err)})")
    assert re.search(rf"{re.escape(str(work))}/\S+: cannot write", line), line  # names the file


def test_check_params_in_its_own_process_is_one_stderr_line(work):
    set_params(work, lr="fast")
    params = work / "params.yaml"
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "check_params.py"), "--params", str(params)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {params}: lr: expected a positive number, got 'fast'"
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "seed: 18446744073709551616",
            "seed: expected an integer 0..18446744073709551615, got 18446744073709551616",
        ),
        ("lr: 1e-3", None),  # YAML 1.2, as DVC reads it: a float
        (
            "fetch: {timeout: .inf}",
            "fetch.timeout: expected a number of seconds in (0, 86400], got inf",
        ),
    ],
    ids=["huge-seed", "lr-1e-3", "infinite-timeout"],
)
def test_numbers_through_check_params_are_one_line(line, message, work):
    """Issue 18, case 6: each of these was a traceback (or a refusal of 1e-3)."""
    params = work / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw.pop(line.split(":")[0])
    params.write_text(yaml.safe_dump(raw) + line + "\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "check_params.py"), "--params", str(params)],
        capture_output=True,
        text=True,
    )
    if message is None:
        assert result.returncode == 0 and result.stderr == "", result.stderr
        return
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {params}: {message}"]


def test_a_real_bug_keeps_its_traceback():
    from mnist_pipeline.errors import stage_main

    @stage_main
    def buggy():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        buggy()


# Issue 18, case 2: a full disk, through torch.save too. torch.save turns the ENOSPC of its
# write into "RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos".


class SmallDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: a write past it raises ENOSPC."""

    room = 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > SmallDisk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        SmallDisk.room -= size
        return super().write(data)


def small_disk(monkeypatch, room: int) -> None:
    """atomic.py's binary writes go to a disk with ``room`` bytes left (a stub of the disk)."""
    real_open = open

    def stub_open(file, mode="r", *args, **kwargs):
        return SmallDisk(file, "wb") if mode == "wb" else real_open(file, mode, *args, **kwargs)

    SmallDisk.room = room
    monkeypatch.setattr(atomic, "open", stub_open, raising=False)


@pytest.mark.parametrize("stage", ["prepare", "train"])
def test_a_full_disk_inside_torch_save_is_one_line(stage, work, capsys, monkeypatch):
    """Stub: the disk fills 4 KB into the archive, so torch.save's own write hits ENOSPC."""
    small_disk(monkeypatch, room=4096)
    expected = ": cannot write (No space left on device)"
    line = fails_cleanly(stage, work, capsys, expected, may_leave=[LIVE_HISTORY])
    out = {"prepare": "prepared/train.pt", "train": f"models/{MODEL}.pt"}[stage]
    assert line == f"error: {work / out}: cannot write (No space left on device)"
    assert SmallDisk.room < 4096  # torch.save wrote the first records before the disk was full


def test_a_full_disk_keeps_the_file_already_there(tmp_path, monkeypatch):
    """The per-epoch resume state takes this path: the state saved before stays whole."""
    path = tmp_path / "state.pt"
    atomic.torch_save({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    small_disk(monkeypatch, room=100)
    with pytest.raises(atomic.UserError, match=f"^{path}: cannot write \\(No space left"):
        atomic.torch_save({"epoch": 2, "w": torch.zeros(10_000)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["state.pt"]


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 64 KB tmpfs, filled up: a real full disk. Needs root and mount (CI runs as root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)]
    try:
        result = subprocess.run(mount, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command: the stub tests above cover a full disk")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): stub tests cover it")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize(
    "stage, room",
    [("fetch", 8192), ("prepare", 8192), ("train", 8192), ("evaluate", 0)],
)
def test_a_real_full_disk_is_one_line_and_leaves_nothing(stage, room, work, capsys, full_tmpfs):
    """Each stage's output folders moved onto the full tmpfs; its inputs stay where they are.

    ``room`` bytes are left free: torch.save (prepare, train) then writes its first records
    before the disk is full, the case that gave the RuntimeError. evaluate's first output is
    a small JSON file, so its disk is left full.
    """
    filler = full_tmpfs / "filler"
    os.truncate(filler, filler.stat().st_size - room)
    folders = {
        "fetch": ["raw"],
        "prepare": ["prepared"],
        "train": ["models", "history", "timing"],
        "evaluate": ["eval"],
    }[stage]
    for name in folders:
        shutil.rmtree(work / name, ignore_errors=True)
        (full_tmpfs / name).mkdir(exist_ok=True)
        (work / name).symlink_to(full_tmpfs / name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage, work)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    full = rf"error: {re.escape(str(work))}/\S+: cannot write \(No space left on device\)"
    assert re.fullmatch(full, line), line
    left = sorted(str(p.relative_to(full_tmpfs)) for p in full_tmpfs.rglob("*") if p.is_file())
    assert set(left) - {LIVE_HISTORY} == {"filler"}, f"left behind: {left}"


# Issue 18, case 5: dvc.yaml puts a model's name (${key}) into train's shell command.


@pytest.mark.e2e
def test_a_model_name_never_reaches_the_shell(tmp_path):
    """Real dvc repro: check_params refuses the name before any train stage's command runs,
    even when only that stage is asked for (train stages depend on check_params's stamp)."""
    project = make_project(tmp_path, models=("logistic",))
    evil = "x;touch PWNED;"
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["models"][evil] = {"arch": "logistic"}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    commit_all(project, "a model name with a shell command in it")
    refusal = (
        f"error: params.yaml: models: model name {evil!r} is not allowed; "
        "use 1-64 letters, digits, _ or -, starting with a letter or _"
    )
    for target in ([], ["train"], [f"train@{evil}"]):
        result = dvc(project, "repro", *target, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert refusal in output.splitlines(), output
        assert "Running stage 'train@" not in output, output
        assert not (project / "PWNED").exists(), f"dvc repro {target} ran the shell command"
