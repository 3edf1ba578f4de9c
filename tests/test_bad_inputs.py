"""The table of bad inputs: each case, run through its real stage script, ends with exit code 1,
one readable line on stderr that names the file, key or value, and no output left behind.

README.md summarises this table; keep the two in step.
"""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, make_mnist, tiny_params, write_pickle_gz
from project import train_args

from mnist_pipeline import atomic
from mnist_pipeline.data import prepare

MODEL = "logistic"


@dataclass
class Case:
    id: str
    stage: str  # fetch | prepare | train | evaluate | report | check_params
    error: str  # expected in the one-line message
    params: dict | None = None  # top-level params to change
    setup: object = None  # callable(workdir) run before the stage


def base_params(data: Path, digest: str) -> dict:
    return tiny_params(
        lr=0.05,
        fetch={"timeout": 2, "sources": [{"url": str(data), "checksums": [f"sha256:{digest}"]}]},
        models={MODEL: {"arch": MODEL}},
    )


def argv(stage: str, w: Path) -> list[str]:
    p = ["--params", str(w / "params.yaml")]
    return {
        "check_params": p,
        "fetch": [*p, "--out", str(w / "raw" / "mnist.pkl.gz")],
        "prepare": ["--raw", str(w / "raw" / "mnist.pkl.gz"), "--out", str(w / "prepared")],
        "train": train_args(
            w / "params.yaml",
            MODEL,
            w / "prepared",
            w / "models" / f"{MODEL}.pt",
            w / "history.tsv",
            w / "timing.json",
        ),
        "evaluate": [
            *p,
            "--model",
            MODEL,
            "--checkpoint",
            str(w / "models" / f"{MODEL}.pt"),
            "--prepared",
            str(w / "prepared"),
            "--metrics",
            str(w / "metrics.json"),
            "--details",
            str(w / "details.json"),
            "--predictions",
            str(w / "pred.csv"),
            "--confusion-png",
            str(w / "confusion.png"),
            "--misclassified-png",
            str(w / "miss.png"),
        ],
        "report": [
            *p,
            "--prepared",
            str(w / "prepared"),
            "--metrics-dir",
            str(w / "m"),
            "--history-dir",
            str(w / "h"),
            "--summary",
            str(w / "summary.md"),
            "--curves-png",
            str(w / "curves.png"),
            "--digits-png",
            str(w / "digits.png"),
        ],
    }[stage]


# Every file a stage may write, relative to the work folder: none may exist after a failure.
OUTPUTS = {
    "fetch": ["raw/mnist.pkl.gz"],
    "prepare": ["prepared"],
    "train": [f"models/{MODEL}.pt", "history.tsv", "timing.json"],
    "evaluate": ["metrics.json", "details.json", "pred.csv", "confusion.png", "miss.png"],
    "report": ["summary.md", "curves.png", "digits.png"],
}


def write_raw(obj):
    def setup(w: Path):
        write_pickle_gz(w / "raw" / "mnist.pkl.gz", obj)

    return setup


def raw_bytes(content: bytes | None):
    def setup(w: Path):
        raw = w / "raw" / "mnist.pkl.gz"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(content if content is not None else (w / "good.pkl.gz").read_bytes()[:999])

    return setup


def splits_with(i: int, j: int, change):
    splits = [list(s) for s in make_mnist()]
    splits[i][j] = change(splits[i][j].copy())
    return tuple(tuple(s) for s in splits)


def nan_at_0(x):
    x[0, 0] = float("nan")
    return x


class Evil:
    def __reduce__(self):
        return (open, ("/tmp/mnist-pipeline-pwned-marker", "w"))


def evil_raw(w: Path):
    raw = w / "raw" / "mnist.pkl.gz"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(gzip.compress(pickle.dumps(Evil(), protocol=2)))


def write_model_file(content):
    def setup(w: Path):
        path = w / "models" / f"{MODEL}.pt"
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)

    return setup


def truncate_checkpoint(path: Path):
    path.write_bytes(path.read_bytes()[:200])


class NotATensor:
    pass


def pickled_object(path: Path):
    torch.save({"state_dict": NotATensor(), "config": {"arch": MODEL}}, path)


def wrong_arch(path: Path):
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["arch"] = "cnn"
    torch.save(ckpt, path)


def remove(rel: str):
    def setup(w: Path):
        (w / rel).unlink()

    return setup


CASES = [
    # params.yaml
    Case(
        "params-missing-file",
        "train",
        "params.yaml: params file not found",
        setup=remove("params.yaml"),
    ),
    Case(
        "params-invalid-yaml",
        "train",
        "params.yaml: invalid YAML at line",
        setup=lambda w: (w / "params.yaml").write_text("lr: [0.1\n"),
    ),
    Case("params-unknown-key", "check_params", "params.yaml: unknown key 'lrr'", {"lrr": 0.1}),
    Case(
        "params-unknown-model-key",
        "train",
        f"models.{MODEL}: unknown key 'lrr'",
        {"models": {MODEL: {"arch": MODEL, "lrr": 1}}},
    ),
    Case(
        "params-wrong-type", "train", "lr: expected a positive number, got 'fast'", {"lr": "fast"}
    ),
    Case("params-zero-lr", "train", "lr: expected a positive number, got 0", {"lr": 0}),
    Case("params-negative-lr", "train", "lr: expected a positive number, got -0.1", {"lr": -0.1}),
    Case(
        "params-zero-epochs", "train", "epochs: expected a positive integer, got 0", {"epochs": 0}
    ),
    Case("params-negative-bs", "train", "bs: expected a positive integer, got -1", {"bs": -1}),
    Case(
        "params-unknown-arch",
        "train",
        f"models.{MODEL}.arch: unknown architecture 'resnet'",
        {"models": {MODEL: {"arch": "resnet"}}},
    ),
    Case("params-empty-models", "train", "models: expected a non-empty mapping", {"models": {}}),
    Case("device-absent", "train", "device 'cuda': CUDA is not available here", {"device": "cuda"}),
    Case(
        "device-malformed",
        "train",
        "device: expected one of auto, cpu, cuda, cuda:N, mps",
        {"device": "gpu0"},
    ),
    # data
    Case("data-empty-file", "prepare", "mnist.pkl.gz: file is empty", setup=raw_bytes(b"")),
    Case("data-truncated-gzip", "prepare", "truncated or corrupt gzip data", setup=raw_bytes(None)),
    Case("data-not-gzip", "prepare", "mnist.pkl.gz: not a gzip file", setup=raw_bytes(b"<html>")),
    Case(
        "data-two-splits",
        "prepare",
        "expected 3 splits (train, valid, test), got tuple of len",
        setup=write_raw(make_mnist()[:2]),
    ),
    Case(
        "data-a-dict",
        "prepare",
        "expected 3 splits (train, valid, test), got dict",
        setup=write_raw({"x": 1}),
    ),
    Case(
        "data-nan-pixels",
        "prepare",
        "train split: x contains NaN pixels",
        setup=write_raw(splits_with(0, 0, nan_at_0)),
    ),
    Case(
        "data-pixels-out-of-range",
        "prepare",
        "valid split: pixels must lie in [0, 1]",
        setup=write_raw(splits_with(1, 0, lambda x: x + 1)),
    ),
    Case(
        "data-labels-out-of-range",
        "prepare",
        "test split: labels must lie in 0..9",
        setup=write_raw(splits_with(2, 1, lambda y: y - 3)),
    ),
    Case(
        "data-length-mismatch",
        "prepare",
        "train split: x has 256 rows but y has 255 labels",
        setup=write_raw(splits_with(0, 1, lambda y: y[:-1])),
    ),
    Case("data-code-in-pickle", "prepare", "refused to load global", setup=evil_raw),
    Case(
        "data-checksum-mismatch",
        "fetch",
        "checksum mismatch (got sha256:",
        {"fetch": {"sources": [{"url": "GOOD", "checksums": ["sha256:" + "1" * 64]}]}},
    ),
    Case(
        "data-all-sources-unreachable",
        "fetch",
        "could not fetch",
        {
            "fetch": {
                "timeout": 2,
                "sources": [
                    {"url": "http://127.0.0.1:9/mnist.pkl.gz", "checksums": ["sha256:" + "1" * 64]},
                    {"url": "/nonexistent/mnist.pkl.gz", "checksums": ["sha256:" + "1" * 64]},
                ],
            }
        },
    ),
    Case(
        "data-local-source-not-a-file",
        "fetch",
        "not a regular file: /dev/null",
        {"fetch": {"sources": [{"url": "/dev/null", "checksums": ["sha256:" + "1" * 64]}]}},
    ),
    # checkpoints
    Case(
        "checkpoint-missing",
        "evaluate",
        "model file not found; run its train stage first",
        setup=remove(f"models/{MODEL}.pt"),
    ),
    Case(
        "checkpoint-truncated",
        "evaluate",
        "not a loadable weights-only checkpoint",
        setup=write_model_file(truncate_checkpoint),
    ),
    Case(
        "checkpoint-pickled-object",
        "evaluate",
        "not a loadable weights-only checkpoint",
        setup=write_model_file(pickled_object),
    ),
    Case(
        "checkpoint-wrong-architecture",
        "evaluate",
        "checkpoint architecture 'cnn' does not match params arch 'logistic'",
        setup=write_model_file(wrong_arch),
    ),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A work folder with good data, prepared tensors and one trained checkpoint."""
    w = tmp_path_factory.mktemp("template")
    digest = write_pickle_gz(w / "good.pkl.gz", make_mnist())
    (w / "params.yaml").write_text(yaml.safe_dump(base_params(w / "good.pkl.gz", digest)))
    prepare(w / "good.pkl.gz", w / "prepared")
    run_stage("train", w)
    run_stage("evaluate", w)
    for name in ("m", "m/train", "h"):
        (w / name).mkdir(exist_ok=True)
    (w / "metrics.json").rename(w / "m" / f"{MODEL}.json")
    (w / "timing.json").rename(w / "m" / "train" / f"{MODEL}.json")
    (w / "history.tsv").rename(w / "h" / f"{MODEL}.tsv")
    for leftover in OUTPUTS["evaluate"]:
        (w / leftover).unlink(missing_ok=True)
    return w


def run_stage(stage: str, w: Path) -> None:
    old = sys.argv
    sys.argv = [f"stages/{stage}.py", *argv(stage, w)]
    try:
        runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="__main__")
    finally:
        sys.argv = old


@pytest.fixture
def work(template, tmp_path) -> Path:
    w = tmp_path / "w"
    shutil.copytree(template, w)
    return w


def files(folder: Path) -> set[Path]:
    """Every file under folder (an empty folder made on the way is not an output)."""
    return {p for p in folder.rglob("*") if p.is_file()}


def expect_one_line_error(stage: str, w: Path, capsys, error: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage, w)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    last = err[-1]  # fetch reports each failed source as it goes, then the one-line error
    assert last.startswith("error: ") and error in last, last
    assert "Traceback" not in "\n".join(err)
    return last


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_error_and_leaves_no_output(case, work, capsys):
    if case.params is not None:
        raw = yaml.safe_load((work / "params.yaml").read_text()) | case.params
        for source in raw["fetch"]["sources"]:
            if source["url"] == "GOOD":
                source["url"] = str(work / "good.pkl.gz")
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
    if case.setup is not None:
        case.setup(work)
    for rel in OUTPUTS.get(case.stage, []):  # outputs from the template must not mask a leak
        path = work / rel
        if path.is_file() and case.stage != "evaluate" and rel != f"models/{MODEL}.pt":
            path.unlink()
    before = files(work)
    expect_one_line_error(case.stage, work, capsys, case.error)
    created = files(work) - before
    assert not created, f"left behind: {sorted(map(str, created))}"
    if case.stage == "fetch":
        assert not (work / "raw" / "mnist.pkl.gz").exists()
    assert not Path("/tmp/mnist-pipeline-pwned-marker").exists()


@pytest.mark.parametrize("stage", ["fetch", "prepare", "train", "evaluate", "report"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES], ids=["disk-full", "unwritable"])
def test_write_failures_are_one_line_errors_with_no_partial_output(
    stage, err, work, capsys, monkeypatch
):
    """A full disk or an unwritable folder, injected where every output is written."""
    if stage == "prepare":
        write_pickle_gz(work / "raw" / "mnist.pkl.gz", make_mnist())
        shutil.rmtree(work / "prepared")

    def failing_mkstemp(*args, **kwargs):
        raise OSError(err, os.strerror(err), kwargs.get("dir", "?"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", failing_mkstemp)
    for rel in OUTPUTS[stage]:
        if (work / rel).is_file():
            (work / rel).unlink()
    before = files(work)
    line = expect_one_line_error(stage, work, capsys, os.strerror(err))
    assert str(work) in line  # names the folder it could not write
    assert files(work) - before == set()


def test_user_error_in_a_subprocess_is_one_stderr_line(template, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((template / "params.yaml").read_text().replace("lr: 0.05", "lr: fast"))
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "check_params.py"), "--params", str(params)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {params}: lr: expected a positive number, got 'fast'"
    ]


def test_a_real_bug_keeps_its_traceback():
    from mnist_pipeline.errors import stage_main

    @stage_main
    def buggy():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        buggy()
