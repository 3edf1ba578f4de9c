"""params.yaml validation: every bad value is refused with a message naming the key."""

import pytest
import yaml
from conftest import tiny_params

from mnist_pipeline.errors import UserError
from mnist_pipeline.models import model_names
from mnist_pipeline.params import DistributedConfig, load_params, parse_params


def test_defaults_resolve_and_overrides_apply():
    raw = tiny_params(models={"a": {"arch": "cnn", "lr": 0.05}, "b": {"arch": "logistic"}})
    params = parse_params(raw)
    assert params.model("a").lr == 0.05
    assert params.model("b").lr == 0.1  # the shared value
    assert params.model("b").epochs == 1 and params.model("b").optimizer == "sgd"
    assert params.resume is True
    assert params.distributed == DistributedConfig(nproc=1, nnodes=1, rdzv_endpoint="", timeout=300)


def test_several_nodes_with_a_rendezvous_endpoint():
    dist = {"nnodes": 2, "rdzv_endpoint": "node0:29500", "timeout": 60}
    params = parse_params(tiny_params(distributed=dist, resume=False))
    assert params.distributed == DistributedConfig(1, 2, "node0:29500", 60)
    assert params.resume is False


def test_shipped_params_are_valid_and_sgd_models_share_lr():
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "params.yaml"
    params = load_params(path)
    # Every model of the registry is trained by default.
    assert {m.arch for m in params.models.values()} == set(model_names())
    # `-S lr=...` reaches every SGD model; AdamW's lr has another scale. (No test pins epochs:
    # editing it is the first experiment anyone tries.)
    raw = yaml.safe_load(path.read_text())
    sgd = [m for m in raw["models"].values() if m.get("optimizer", "sgd") == "sgd"]
    assert len(sgd) == 5 and all("lr" not in m for m in sgd), "SGD models must share lr"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lrr": 0.1}, "unknown key 'lrr'"),
        ({"lr": "fast"}, "lr: expected a positive number, got 'fast'"),
        ({"lr": 0}, "lr: expected a positive number, got 0"),
        ({"lr": -0.1}, "lr: expected a positive number, got -0.1"),
        ({"epochs": 0}, "epochs: expected a positive integer, got 0"),
        ({"epochs": 1.5}, "epochs: expected a positive integer, got 1.5"),
        ({"bs": -8}, "bs: expected a positive integer, got -8"),
        ({"bs": True}, "bs: expected a positive integer, got True"),
        ({"momentum": 1.5}, "momentum: expected a number in [0, 1)"),
        ({"device": "gpu"}, "device: expected one of auto, cpu, cuda, cuda:N, mps, got 'gpu'"),
        ({"device": "cuda:x"}, "device: expected one of auto, cpu, cuda, cuda:N, mps"),
        ({"models": {}}, "models: expected a non-empty mapping"),
        ({"models": {"m": {"arch": "resnet"}}}, "models.m.arch: unknown architecture 'resnet'"),
        ({"models": {"m": {"arch": "cnn", "lrr": 1}}}, "params.yaml: models.m: unknown key 'lrr'"),
        ({"models": {"m": {"arch": "cnn", "lr": -1}}}, "models.m.lr: expected a positive"),
        ({"models": {"m": {"arch": "cnn", "optimizer": "rmsprop"}}}, "optimizer: expected one of"),
        (
            {"models": {"m": {"arch": "cnn", "label_smoothing": 1}}},
            "models.m.label_smoothing: expected a number in [0, 1), got 1",
        ),
        ({"resume": "yes"}, "params.yaml: resume: expected true or false, got 'yes'"),
        ({"distributed": {"nproc": 0}}, "distributed.nproc: expected a positive integer"),
        ({"distributed": {"nnodes": 0}}, "distributed.nnodes: expected a positive integer, got 0"),
        ({"distributed": {"nnodes": 2}}, "distributed.rdzv_endpoint: needed when nnodes > 1"),
        (
            {"distributed": {"rdzv_endpoint": "nohost"}},
            "distributed.rdzv_endpoint: expected 'host:port' (empty for one node), got 'nohost'",
        ),
        ({"distributed": {"rdzv_endpoint": "h:port"}}, "for one node), got 'h:port'"),
        ({"distributed": {"timeout": 0}}, "distributed.timeout: expected a positive number of"),
        ({"distributed": {"nprocs": 2}}, "distributed: unknown key 'nprocs'; valid keys: max_"),
        ({"distributed": 4}, "params.yaml: distributed: expected a mapping, got 4"),
        ({"distributed": {"nproc": 4}, "bs": 2}, "bs: 2 is smaller than the 4 ranks"),
        ({"fetch": {"sources": []}}, "fetch.sources: expected a non-empty list"),
        ({"fetch": {"sources": [{"url": "x", "checksums": ["md5:zz"]}]}}, "is not 'md5:<32 hex>'"),
    ],
)
def test_bad_params_are_refused(change, message):
    with pytest.raises(UserError) as err:
        parse_params(tiny_params(**change), "params.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml")
    assert "\n" not in str(err.value)


def test_missing_key_is_refused():
    raw = tiny_params()
    del raw["lr"]
    with pytest.raises(UserError, match="missing key 'lr'"):
        parse_params(raw)


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(UserError, match="no model 'nope'.*valid: logistic, cnn"):
        parse_params(tiny_params()).model("nope")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(UserError, match=r"params.yaml: invalid YAML at line \d+"):
        load_params(bad)
