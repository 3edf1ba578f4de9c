"""checkpoints.py: models/<name>.pt loads back with weights_only=True into the same model."""

import torch
from conftest import tiny_datasets, train_config

from mnist_pipeline.checkpoints import checkpoint, load_checkpoint
from mnist_pipeline.train import train_model


def test_checkpoint_loads_with_weights_only(tmp_path):
    from mnist_pipeline.atomic import torch_save

    cfg = train_config("cnn_sequential", epochs=1)
    model, _ = train_model(cfg, *tiny_datasets(), torch.device("cpu"))
    torch_save(checkpoint(model, cfg, torch.device("cpu")), tmp_path / "m.pt")
    loaded, ckpt, spec = load_checkpoint(tmp_path / "m.pt", cfg)
    assert ckpt["config"]["arch"] == "cnn_sequential" and ckpt["device"] == "cpu"
    assert spec.name == "cnn_sequential"
    x = torch.rand(4, 784)
    assert torch.equal(loaded(x), model(x))


def test_a_checkpoint_made_under_other_settings_is_refused_naming_the_keys(tmp_path, capsys):
    import dataclasses

    import pytest

    from mnist_pipeline.atomic import torch_save
    from mnist_pipeline.errors import UserError

    cfg = train_config("logistic", lr=0.08)
    model, _ = train_model(cfg, *tiny_datasets(), torch.device("cpu"))
    torch_save(checkpoint(model, cfg, torch.device("cpu")), tmp_path / "m.pt")
    load_checkpoint(tmp_path / "m.pt", cfg)  # the good case: the same settings
    other = dataclasses.replace(cfg, lr=0.1, epochs=2)
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "m.pt", other)
    assert str(err.value) == (
        f"{tmp_path / 'm.pt'}: model 'logistic' was trained with other settings than "
        "params.yaml gives it (epochs 1 in the checkpoint, 2 in params.yaml; lr 0.08 in the "
        "checkpoint, 0.1 in params.yaml); retrain it: dvc repro -f -s train@logistic"
    )
    capsys.readouterr()
    load_checkpoint(tmp_path / "m.pt", other, strict=False)  # predict: one warning, goes on
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and "lr 0.08 in the" in err


def test_a_checkpoint_from_a_file_object_loads_and_bad_ones_are_one_line(tmp_path):
    """What dvc.api.open gives (a binary file object) loads like the path; a FIFO path, a
    text-mode file object and a closed one are refused in one line, never waited on."""
    import io
    import os

    import pytest

    from mnist_pipeline.atomic import torch_save
    from mnist_pipeline.errors import UserError

    cfg = train_config("logistic", epochs=1)
    model, _ = train_model(cfg, *tiny_datasets(), torch.device("cpu"))
    torch_save(checkpoint(model, cfg, torch.device("cpu")), tmp_path / "m.pt")
    with open(tmp_path / "m.pt", "rb") as f:
        loaded, _, _ = load_checkpoint(f, cfg)
    x = torch.rand(4, 784)
    assert torch.equal(loaded(x), model(x))

    os.mkfifo(tmp_path / "fifo.pt")
    closed = open(tmp_path / "m.pt", "rb")  # noqa: SIM115
    closed.close()
    bad = {
        tmp_path / "fifo.pt": "a FIFO, not a regular file",
        io.StringIO("text"): "a text file object; open the checkpoint with mode='rb'",
        closed: "cannot read the checkpoint",
        io.BytesIO(b""): "not a loadable weights-only checkpoint",
    }
    for source, message in bad.items():
        with pytest.raises(UserError) as err:
            load_checkpoint(source, cfg)
        assert message in str(err.value) and "\n" not in str(err.value), source
