"""threads: params.yaml's torch thread count is validated, set by the train stage, part of the
resume key, and a stage that shares the cores with too many threads says so in one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, tiny_params
from project import train_args

from mnist_pipeline import threads
from mnist_pipeline.errors import UserError
from mnist_pipeline.params import parse_params
from mnist_pipeline.threads import check, cores, per_process, running_stages, use


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


def test_a_stage_alone_within_the_cores_says_nothing(capsys, monkeypatch):
    monkeypatch.setattr(threads, "running_stages", lambda: {os.getpid()})
    check(cores())
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("stages, who", [(1, "this stage uses"), (2, "2 running stages use")])
def test_an_oversubscribed_stage_says_so_in_one_line(stages, who, capsys, monkeypatch):
    monkeypatch.setattr(threads, "running_stages", lambda: set(range(stages)))
    check(cores() // stages + 1)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: oversubscribed: {who} {stages * (cores() // stages + 1)} torch threads on "
        f"{cores()} cores and will run slower; give each job threads <= cores / jobs "
        "(-S threads=N, docs/scaling.md)"
    ]


FAKE_STAGE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def fake_stage():
    """A process whose command line names stages/train.py, and a child that names it too (as
    torchrun and its ranks do); yield their pids."""
    stage = subprocess.Popen(
        [sys.executable, "-c", FAKE_STAGE, "stages/train.py"], stdout=subprocess.PIPE, text=True
    )
    child = int(stage.stdout.readline())
    try:
        yield stage.pid, child
    finally:
        for pid in (child, stage.pid):
            os.kill(pid, signal.SIGKILL)
        stage.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_running_stage_counts_once_with_the_processes_it_starts():
    with fake_stage() as (stage, child):
        found = running_stages()
        assert stage in found and child not in found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_the_train_stage_sets_its_threads_and_warns_when_oversubscribed(prepared_dir, tmp_path):
    """The real stage: its threads from params.yaml beat OMP_NUM_THREADS=1 (set for the tests),
    and another running stage with as many threads makes it warn."""
    count = max(2, cores())
    params = tmp_path / "params.yaml"
    raw = tiny_params(threads=count, models={"logistic": {"arch": "logistic"}})
    params.write_text(yaml.safe_dump(raw))
    out = [tmp_path / name for name in ("m.pt", "h.tsv", "t.json")]
    with fake_stage():
        result = subprocess.run(
            [sys.executable, str(REPO / "stages" / "train.py")]
            + train_args(params, "logistic", prepared_dir, *out),
            env=os.environ | {"OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(out[2].read_text())["threads"] == count
    warnings = [line for line in result.stderr.splitlines() if "oversubscribed" in line]
    assert len(warnings) == 1 and "running stages use" in warnings[0], result.stderr


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
