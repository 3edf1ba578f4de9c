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
