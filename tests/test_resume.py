"""Resume: a run continued from a saved state equals the run that was never stopped."""

import dataclasses

import pytest
import torch
from conftest import make_mnist, train_config
from torch.utils.data import TensorDataset

from mnist_pipeline.resume import ResumeState, state_key
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


def test_key_changes_with_config_data_and_code(tmp_path):
    data, code = tmp_path / "train.pt", tmp_path / "train.py"
    data.write_bytes(b"data")
    code.write_text("code")
    cfg = dataclasses.asdict(train_config("cnn"))
    key = state_key(cfg, [data], [code])
    assert state_key(cfg, [data], [code]) == key
    assert state_key(cfg | {"lr": 0.2}, [data], [code]) != key
    data.write_bytes(b"other data")
    assert state_key(cfg, [data], [code]) != key
    data.write_bytes(b"data")
    code.write_text("edited code")
    assert state_key(cfg, [data], [code]) != key
