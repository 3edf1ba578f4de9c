"""Resume: a run continued from a saved state equals the run that was never stopped."""

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_mnist, train_config
from torch.utils.data import TensorDataset

from mnist_pipeline import resume
from mnist_pipeline.errors import UserError
from mnist_pipeline.resume import PARTS, ResumeState, hash_data_early, key_parts, state_key
from mnist_pipeline.train import train_model

EPOCHS = 3


def datasets():
    (xt, yt), (xv, yv), _ = make_mnist((200, 64, 8))
    return (
        TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)),
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
    )


class Stop(Exception):
    pass


@pytest.mark.parametrize(
    "arch, settings",
    [
        ("logistic_scratch", {}),  # the hand-written SGD's velocity
        ("cnn", {}),  # SGD momentum buffers
        ("fast", {}),  # BatchNorm statistics, its own AdamW and schedule position
        ("logistic", {"optimizer": "adamw", "weight_decay": 0.01}),  # AdamW moments and steps
    ],
)
def test_resumed_run_equals_uninterrupted_run(arch, settings, tmp_path):
    cfg, data, cpu = train_config(arch, epochs=EPOCHS, **settings), datasets(), torch.device("cpu")
    full_model, full_history = train_model(cfg, *data, cpu)

    state = ResumeState(tmp_path / "state.pt", key="k")

    def save_then_stop_after_epoch_1(snapshot):
        state.save(snapshot)
        if len(snapshot["history"]) == 2:
            raise Stop

    with pytest.raises(Stop):
        train_model(cfg, *data, cpu, on_epoch=save_then_stop_after_epoch_1)
    saved = state.load(EPOCHS)
    assert saved is not None and len(saved["history"]) == 2
    model, history = train_model(cfg, *data, cpu, state=saved)
    assert [r["epoch"] for r in history] == list(range(EPOCHS))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(history) == strip(full_history)
    for a, b in zip(model.state_dict().values(), full_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_state_made_for_another_key_or_corrupt_is_ignored_in_one_line(tmp_path, capsys):
    path = tmp_path / "state.pt"
    ResumeState(path, key="old").save({"history": [{"epoch": 0}]})
    assert ResumeState(path, key="new").load(EPOCHS) is None
    assert capsys.readouterr().out == (
        f"train: ignoring {path}: made with other settings, data or code; starting from epoch 0\n"
    )
    for junk in (b"", b"garbage", path.read_bytes()[:100]):
        path.write_bytes(junk)
        assert ResumeState(path, key="old").load(EPOCHS) is None
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and out.startswith(f"train: ignoring {path}: unreadable")
    assert ResumeState(tmp_path / "absent.pt", key="k").load(EPOCHS) is None
    assert capsys.readouterr().out == ""  # nothing to resume: nothing to say


def test_a_killed_saves_temporary_file_goes_and_others_stay(tmp_path):
    """atomic.remove_stale, as fetch uses it too: only ``.<name>.*.tmp`` of this file goes."""
    left = [tmp_path / ".state.pt.k2j4x9_a.tmp", tmp_path / ".other.pt.a1.tmp"]
    for path in left:
        path.write_bytes(b"half a save")
    assert ResumeState(tmp_path / "state.pt", key="k").load(EPOCHS) is None
    assert [p.name for p in tmp_path.iterdir()] == [".other.pt.a1.tmp"]


def test_a_state_damaged_on_disk_fails_its_checksum_before_it_is_unpickled(tmp_path, capsys):
    """One flipped byte inside a tensor still loads with torch.load: the checksum refuses it."""
    path = tmp_path / "state.pt"
    weights = torch.arange(1000, dtype=torch.float32)
    ResumeState(path, key="k").save({"history": [{"epoch": 0}], "model": {"w": weights}})
    intact = path.read_bytes()
    at = intact.index(weights[500].numpy().tobytes())  # inside the tensor's stored bytes
    for damaged in (
        intact[:at] + bytes([intact[at] ^ 1]) + intact[at + 1 :],
        intact[: len(intact) - 10],  # a payload cut short
    ):
        path.write_bytes(damaged)
        assert ResumeState(path, key="k").load(EPOCHS) is None
        assert capsys.readouterr().out == (
            f"train: ignoring {path}: damaged (checksum mismatch); starting from epoch 0\n"
        )
    path.write_bytes(intact)
    assert torch.equal(ResumeState(path, key="k").load(EPOCHS)["model"]["w"], weights)


def parts_for(config: dict, data, script, world: int = 1) -> dict:
    return key_parts(config, [data], script, world)


def test_each_part_of_the_key_changes_with_what_it_covers(tmp_path, monkeypatch):
    data, script = tmp_path / "train.pt", tmp_path / "train.py"
    data.write_bytes(b"data")
    script.write_text("code")
    cfg = dataclasses.asdict(train_config("cnn"))
    parts = parts_for(cfg, data, script)
    assert list(parts) == list(PARTS) and parts_for(cfg, data, script) == parts

    def changed(**kw) -> set[str]:
        new = parts_for(kw.get("cfg", cfg), data, script, kw.get("world", 1))
        assert (state_key(new) == state_key(parts)) is (new == parts)
        return {name for name in PARTS if new[name] != parts[name]}

    assert changed(cfg=cfg | {"lr": 0.2}) == {"params"}
    assert changed(world=2) == {"world size"}
    data.write_bytes(b"other data")
    assert changed() == {"data"}
    data.write_bytes(b"data")
    script.write_text("edited code")
    assert changed() == {"code"}
    script.write_text("code")
    torch.set_num_threads(torch.get_num_threads() + 1)
    try:
        assert changed() == {"threads"}
    finally:
        torch.set_num_threads(torch.get_num_threads() - 1)


def test_the_data_hashed_early_on_a_thread_gives_the_same_key(tmp_path):
    """run.train_run starts the data's hash beside torch's import (resume.hash_data_early):
    key_parts takes that result, the same as hashing then; a FIFO is refused, not read."""
    data, script = tmp_path / "train.pt", tmp_path / "train.py"
    data.write_bytes(b"data" * 1000)
    script.write_text("code")
    cfg = dataclasses.asdict(train_config("cnn"))
    late = parts_for(cfg, data, script)
    hash_data_early([data])
    resume._early[(data,)].result()  # hashed: an edit now does not change what is taken
    data.write_bytes(b"other data")
    assert parts_for(cfg, data, script) == late
    assert parts_for(cfg, data, script)["data"] != late["data"]  # taken once, then hashed again
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    hash_data_early([fifo])
    with pytest.raises(UserError, match="a FIFO, not a regular file"):
        parts_for(cfg, fifo, script)


def test_a_stage_that_fails_while_its_data_is_hashed_exits_without_waiting(tmp_path):
    """The early hash runs on a daemon thread: a process that ends first does not read on.
    The file is sparse, 1 TB: hashing it would take many minutes on any disk."""
    huge = tmp_path / "train.pt"
    with open(huge, "wb") as f:
        f.truncate(1 << 40)
    code = (
        "from mnist_pipeline.resume import hash_data_early; "
        f"hash_data_early([{str(huge)!r}]); raise SystemExit('error: a bad setting')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stderr) == (1, "error: a bad setting\n")


def test_the_code_part_covers_the_models_module_imported_for_the_key(tmp_path):
    """In a fresh process, as a stage: the model's module is imported by key_parts itself, and
    an edit to it (or to any module of models/) changes the code part."""
    package = tmp_path / "src" / "mnist_pipeline"
    shutil.copytree(REPO / "src" / "mnist_pipeline", package)
    (tmp_path / "d.pt").write_bytes(b"data")
    (tmp_path / "train.py").write_text("the stage")
    probe = (
        "import sys; from mnist_pipeline.resume import code_files, key_parts; "
        "from mnist_pipeline.params import parse_params; from conftest import tiny_params; "
        "c = parse_params(tiny_params()).model('logistic').to_dict(); "
        f"p = key_parts(c, [{str(tmp_path / 'd.pt')!r}], {str(tmp_path / 'train.py')!r}, 1); "
        "print(p['code'], 'mnist_pipeline.models.tutorial' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": f"{package.parent}{os.pathsep}{REPO / 'tests'}"}

    def code_part() -> str:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        )
        digest, imported = out.stdout.split()
        assert imported == "True"
        return digest

    before = code_part()
    tutorial = package / "models" / "tutorial.py"
    tutorial.write_text(
        tutorial.read_text().replace("return self.lin(xb)", "return self.lin(xb) * 2")
    )
    assert code_part() != before
    after = code_part()
    (package / "models" / "helper.py").write_text("X = 1\n")  # imported late, by build()
    assert code_part() != after


@pytest.mark.parametrize(
    "make", ["fifo", "symlink to a device", "folder", "symlink outside", "dangling symlink"]
)
def test_a_state_that_is_not_a_regular_file_is_ignored_never_opened_nor_replaced(
    make, tmp_path, capsys
):
    path = tmp_path / "state.pt"
    if make == "fifo":
        os.mkfifo(path)  # open() would wait for a writer forever
    elif make == "folder":
        path.mkdir()
    elif make == "symlink outside":
        (tmp_path.parent / "elsewhere.pt").write_bytes(b"not ours")
        path.symlink_to(tmp_path.parent / "elsewhere.pt")
    elif make == "dangling symlink":
        path.symlink_to(tmp_path / "no" / "such.pt")
    else:
        path.symlink_to(os.devnull)  # a device: read without end, were it read
    why = {"fifo": "a FIFO, not a regular file", "folder": "a folder, not a regular file"}.get(
        make, f"a symlink to {os.readlink(path) if path.is_symlink() else ''}"
    )
    state = ResumeState(path, key="k")
    assert state.load(EPOCHS) is None
    assert capsys.readouterr().out == (
        f"train: ignoring {path}: {why}; this run saves no state; starting from epoch 0\n"
    )
    state.save({"history": [{"epoch": 0}]})  # after each epoch: nothing, and no error
    state.clear()
    assert path.is_symlink() if "symlink" in make else path.exists()
    # The good case beside it: a regular file is read, and saved over.
    good = ResumeState(tmp_path / "good.pt", key="k")
    good.save({"history": [{"epoch": 0}]})
    assert good.load(EPOCHS) == {"history": [{"epoch": 0}]}


def test_a_state_folder_that_is_a_file_is_ignored_and_the_run_goes_on(tmp_path, capsys):
    (tmp_path / ".resume").write_text("not a folder")
    state = ResumeState(tmp_path / ".resume" / "cnn.pt", key="k")
    assert state.load(EPOCHS) is None
    assert capsys.readouterr().out == (
        f"train: ignoring {tmp_path / '.resume' / 'cnn.pt'}: {tmp_path / '.resume'} is not a "
        "folder; this run saves no state; starting from epoch 0\n"
    )
    state.save({"history": [{"epoch": 0}]})  # after epoch 0: no crash
    state.clear()
    assert (tmp_path / ".resume").read_text() == "not a folder"


def test_only_a_bounded_number_of_bytes_is_read_from_a_state(tmp_path, capsys, monkeypatch):
    from mnist_pipeline import resume

    path = tmp_path / "state.pt"
    ResumeState(path, key="k").save({"history": [{"epoch": 0}]})
    assert ResumeState(path, key="k").load(EPOCHS) is not None
    monkeypatch.setattr(resume, "MAX_BYTES", path.stat().st_size - 1)
    assert ResumeState(path, key="k").load(EPOCHS) is None
    size = path.stat().st_size
    assert capsys.readouterr().out.endswith(
        f"ignoring {path}: {size} bytes, over the {size - 1} a state may have; "
        "starting from epoch 0\n"
    )
