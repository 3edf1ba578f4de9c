"""threads: params.yaml's torch thread count is validated, set by the train stage, part of the
resume key, and a stage that shares the cores with too many threads says so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest
import torch
import yaml
from conftest import REPO, tiny_params
from project import train_args

from mnist_pipeline.errors import UserError
from mnist_pipeline.params import parse_params
from mnist_pipeline.threads import RUNNING_ENV, cores, per_process, registered, use


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", 1025])
def test_threads_must_be_a_bounded_non_negative_integer(bad):
    with pytest.raises(UserError, match=r"^params.yaml: threads: expected an integer from 0"):
        parse_params(tiny_params(threads=bad))


def test_threads_defaults_to_torchs_default_and_stays_out_of_the_checkpoint_config():
    assert parse_params(tiny_params()).threads == 0
    params = parse_params(tiny_params(threads=3))
    assert params.threads == 3
    assert "threads" not in params.model("cnn").to_dict()  # models/<name>.pt keep their bytes


def test_the_shipped_params_pin_the_thread_count():
    assert yaml.safe_load((REPO / "params.yaml").read_text())["threads"] > 0


@pytest.mark.parametrize("threads, nproc, each", [(2, 1, 2), (2, 2, 1), (3, 2, 1), (1, 4, 1)])
def test_the_ranks_of_a_stage_share_its_threads(threads, nproc, each):
    assert per_process(threads, nproc) == each


def test_threads_zero_shares_the_cores_among_ranks():
    assert per_process(0, 1) == cores()
    assert per_process(0, 2) == max(1, cores() // 2)


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_use_sets_torchs_thread_count_and_zero_keeps_it(torch_threads):
    assert use(1) == 1 == torch.get_num_threads()
    assert use(0) == 1
    assert use(2) == 2 == torch.get_num_threads()


def record(folder, pid: int, threads: int) -> None:
    """What a running stage leaves in the folder: its threads and its start time."""
    started = psutil.Process(pid).create_time()
    folder.mkdir(exist_ok=True)
    (folder / str(pid)).write_text(f"{threads} {started:.2f}\n")


def test_a_stage_alone_within_the_cores_says_nothing(tmp_path, capsys):
    with registered(1, tmp_path / "running"):
        assert (tmp_path / "running" / str(os.getpid())).exists()
    assert capsys.readouterr().err == ""
    assert list((tmp_path / "running").iterdir()) == []  # its record goes with it


def test_an_oversubscribed_stage_says_so_in_one_line(tmp_path, capsys):
    folder = tmp_path / "running"
    record(folder, os.getppid(), cores())  # another live stage that takes every core
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    ).stdout.strip()
    (folder / dead).write_text("64 1.00\n")  # a killed stage's record: not counted, removed
    with registered(1, folder):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"warning: oversubscribed: 2 running stages use {cores() + 1} torch threads on {cores()} "
        "cores and will run slower; give each job threads <= cores / jobs "
        "(-S threads=N, docs/scaling.md)"
    ]
    assert sorted(p.name for p in folder.iterdir()) == [str(os.getppid())]


def test_the_train_stage_sets_its_threads_and_warns_when_oversubscribed(prepared_dir, tmp_path):
    """The real stage: threads 2 from params.yaml beats OMP_NUM_THREADS=1 (set for the tests),
    and another live stage's record makes it warn."""
    params = tmp_path / "params.yaml"
    raw = tiny_params(threads=2, models={"logistic": {"arch": "logistic"}})
    params.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "running"
    record(folder, os.getpid(), cores())
    out = [tmp_path / name for name in ("m.pt", "h.tsv", "t.json")]
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py")]
        + train_args(params, "logistic", prepared_dir, *out),
        env=os.environ | {"OMP_NUM_THREADS": "1", RUNNING_ENV: str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out[2].read_text())["threads"] == 2
    warnings = [line for line in result.stderr.splitlines() if "oversubscribed" in line]
    assert len(warnings) == 1 and "2 running stages use" in warnings[0], result.stderr
    assert [p.name for p in folder.iterdir()] == [str(os.getpid())]


def test_threads_far_past_the_cores_are_refused_with_the_reason(torch_threads):
    from mnist_pipeline.threads import OVER_CORES

    most = OVER_CORES * cores()
    assert use(1) == 1 and per_process(most, 1) == most  # the good cases: within the bound
    for call in (lambda: use(most + 1), lambda: per_process(most + 1, 2)):
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value) == (
            f"params.yaml: threads: {most + 1} is over {OVER_CORES}x the {cores()} cores here; "
            "torch's threads would spin waiting for each other and train many times slower: "
            f"use at most {cores()} (0: one per core)"
        )
    assert torch.get_num_threads() == 1  # refused before it was set
