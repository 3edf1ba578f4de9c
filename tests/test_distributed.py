"""Data-parallel training under torchrun: 2 CPU ranks equal 1 process with the same global bs,
and 2 nodes of 1 process equal 1 node of 2. A rank or a node killed mid-run: torch elastic
restarts the ranks, or the next run resumes, to the same weights; or one line ends the run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, make_mnist, tiny_params, write_pickle_gz
from project import train_args

from mnist_pipeline.checkpoints import checkpoint
from mnist_pipeline.data import load_datasets, prepare
from mnist_pipeline.history import write_history
from mnist_pipeline.params import load_params
from mnist_pipeline.threads import per_process
from mnist_pipeline.train import train_model

# Two ranks sum the same gradients in a different order (gloo all-reduce), so weights agree to
# float32 rounding, not bit for bit. Measured differences are <= 5e-8; this bound is tight enough
# that one mis-weighted or dropped shard (a difference of order 1e-2) fails it.
ATOL = 1e-5
pytestmark = pytest.mark.e2e  # runs torchrun: not in `make test-unit`


def not_warnings(stderr: str) -> str:
    """``stderr`` less the "warning: oversubscribed" line: other stages running on the machine
    (another test worker's) may add it; the one error line is what these tests pin."""
    return "".join(
        line for line in stderr.splitlines(True) if not line.startswith("warning: oversubscribed")
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    # 300 train samples with bs 64: the last global batch (44) splits unevenly (22/22) and the
    # validation set (100, bs 128) too, so shard weighting is exercised.
    write_pickle_gz(folder / "mnist.pkl.gz", make_mnist((300, 100, 10)))
    prepare(folder / "mnist.pkl.gz", folder / "prepared")
    return folder


def write_params(out: Path, model: str, distributed: dict, **extra) -> Path:
    params = tiny_params(seed=3, bs=64, distributed=distributed, models={model: {"arch": model}})
    out.mkdir(exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params | extra))
    return out / "params.yaml"


def stage(*args) -> list[str]:
    return [sys.executable, str(REPO / "stages" / "train.py"), *map(str, args)]


def train_into(
    out: Path, params: Path, model: str, prepared: Path, **run
) -> subprocess.CompletedProcess:
    """Run the train stage as dvc.yaml does, writing m.pt, h.tsv and t.json into ``out``."""
    args = train_args(params, model, prepared, out / "m.pt", out / "h.tsv", out / "t.json")
    return subprocess.run(stage(*args), capture_output=True, text=True, timeout=300, **run)


def train(folder: Path, model: str, nproc: int, tag="", **extra) -> subprocess.CompletedProcess:
    out = folder / f"{model}-{nproc}{tag}"
    params = write_params(out, model, {"nproc": nproc}, **extra)
    return train_into(out, params, model, folder / "prepared")


@pytest.mark.parametrize("model", ["logistic", "cnn", "logistic_scratch"])
def test_two_ranks_equal_one_process(prepared, model):
    result = train(prepared, model, 2)
    assert result.returncode == 0, result.stderr
    # The single process, in this process: the same stage code path with nproc 1.
    params = load_params(prepared / f"{model}-2" / "params.yaml")
    config = dataclasses.replace(params.model(model), nproc=1)
    datasets = load_datasets(prepared / "prepared", splits=("train", "valid"))
    net, history = train_model(config, *datasets, torch.device("cpu"))
    single = checkpoint(net, config, "cpu")
    write_history(prepared / f"{model}-1.tsv", history)
    ddp = torch.load(prepared / f"{model}-2" / "m.pt", weights_only=True)
    initial_gap = 0.0
    for key, value in single["state_dict"].items():
        other = ddp["state_dict"][key]
        assert torch.allclose(value, other, atol=ATOL, rtol=0), (key, (value - other).abs().max())
        initial_gap = max(initial_gap, value.abs().max().item())
    assert initial_gap > 100 * ATOL  # the weights are far from zero: the tolerance is tight
    h1 = (prepared / f"{model}-1.tsv").read_text().splitlines()[1].split("\t")
    h2 = (prepared / f"{model}-2" / "h.tsv").read_text().splitlines()[1].split("\t")
    # Global (all-reduced) figures, not rank 0's shard: same to 4 decimals.
    for a, b in zip(h1[1:], h2[1:], strict=True):
        assert abs(float(a) - float(b)) < 1e-4, (h1, h2)
    timing = json.loads((prepared / f"{model}-2" / "t.json").read_text())
    assert timing["ranks"] == 2
    assert timing["threads"] == per_process(params.threads, 2)  # the rank's share, set once


def test_a_failing_rank_fails_the_stage_with_its_error_and_no_output(prepared, tmp_path):
    result = train(prepared, "cnn", 2, tag="-diverges", lr=1e20)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank ") and "diverged in epoch 0" in last, result.stderr
    assert not (prepared / "cnn-2-diverges" / "m.pt").exists()
    assert not (prepared / "cnn-2-diverges" / "h.tsv").exists()


def test_uneven_data_still_sums_to_the_global_batch():
    from mnist_pipeline.loader import Batches

    x = torch.arange(7).float().unsqueeze(1)
    shards = [list(Batches(x, torch.arange(7), bs=7, rank=r, world=2)) for r in (0, 1)]
    sizes = [len(s[0][1]) for s in shards]
    assert sum(sizes) == 7 and sorted(sizes) == [3, 4]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(tmp_path: Path, prepared: Path, **worker_params):
    """Node 1 runs the train stage as dvc would; node 2, a separate process in its own folder
    with its own params.yaml (nnodes 1 there), runs the documented worker command with
    --nnodes and --rdzv-endpoint. They meet at a c10d rendezvous. Returns both results."""
    endpoint = f"127.0.0.1:{free_port()}"
    dist = {"nproc": 1, "nnodes": 2, "rdzv_endpoint": endpoint, "timeout": 120}
    main, other = tmp_path / "node1", tmp_path / "node2"
    params = write_params(main, "cnn", dist)
    worker_params = write_params(other, "cnn", {"nproc": 1}, **worker_params)
    worker = subprocess.Popen(
        stage(
            *("--worker", "--params", worker_params, "--model", "cnn"),
            *("--prepared", prepared / "prepared", "--nnodes", 2, "--rdzv-endpoint", endpoint),
        ),
        cwd=other,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lead = train_into(main, params, "cnn", prepared / "prepared", cwd=main)
    _, worker_err = worker.communicate(timeout=60)
    return lead, subprocess.CompletedProcess(worker.args, worker.returncode, "", worker_err)


def test_two_nodes_equal_one_node_of_two_and_only_the_repro_node_writes(prepared, tmp_path):
    one_node = train(prepared, "cnn", 2, tag="-nodes")
    assert one_node.returncode == 0, one_node.stderr
    lead, worker = two_nodes(tmp_path, prepared)
    main, other = tmp_path / "node1", tmp_path / "node2"
    assert lead.returncode == 0, lead.stderr
    assert worker.returncode == 0, worker.stderr
    assert [p.name for p in other.rglob("*")] == ["params.yaml"]  # the worker wrote nothing
    # c10d decides the global ranks: both "written by rank 0" and "rank 1" occur here.
    assert "written by rank " in lead.stdout
    two = torch.load(main / "m.pt", weights_only=True)["state_dict"]
    one = torch.load(prepared / "cnn-2-nodes" / "m.pt", weights_only=True)["state_dict"]
    for key, value in one.items():
        assert torch.allclose(value, two[key], atol=ATOL, rtol=0), key
    assert '"ranks": 2' in (main / "t.json").read_text()  # the world size: 2 nodes x 1


def test_a_node_that_never_arrives_is_a_one_line_error_after_the_timeout(prepared, tmp_path):
    dist = {"nproc": 1, "nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{free_port()}", "timeout": 3}
    params = write_params(tmp_path, "logistic", dist)
    out = tmp_path / "out"
    result = train_into(out, params, "logistic", prepared / "prepared")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: distributed: not all 2 nodes joined the rendezvous"), (
        result.stderr
    )
    assert "within 3s" in lines[-1]
    assert not out.exists()


def test_a_worker_with_another_nnodes_is_told_apart_in_one_line_per_node(prepared, tmp_path):
    """Issue 24 case 7: the writer's nnodes 2, a worker's --nnodes 3: one line on each node,
    naming the nnodes every worker needs or the setting the nodes disagree on."""
    endpoint = f"127.0.0.1:{free_port()}"
    dist = {"nproc": 1, "nnodes": 2, "rdzv_endpoint": endpoint, "timeout": 5}
    main, other = tmp_path / "node1", tmp_path / "node2"
    params = write_params(main, "logistic", dist)
    worker = subprocess.Popen(
        stage(
            *("--worker", "--params", write_params(other, "logistic", {"nproc": 1})),
            *("--model", "logistic", "--prepared", prepared / "prepared"),
            *("--nnodes", 3, "--rdzv-endpoint", endpoint),
        ),
        cwd=other,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = train_into(main, params, "logistic", prepared / "prepared", cwd=main)
    _, worker_err = worker.communicate(timeout=120)
    assert writer.returncode == 1 and worker.returncode == 1
    # Which node reaches the c10d store first decides: either the rendezvous never forms
    # (each node waits for its own count) or it forms and the key comparison tells them apart.
    never_formed = (
        f"error: distributed: not all 2 nodes joined the rendezvous at {endpoint} within 5s "
        "(distributed.timeout); start the other nodes with: python stages/train.py --worker "
        "--model ... --nnodes 2"
    )
    disagree = "distributed: the nodes disagree on world size (the number of processes: "
    last = not_warnings(writer.stderr).strip().splitlines()[-1]
    assert last == never_formed or (
        last.startswith("error: rank ") and disagree in last and "--nnodes" in last
    ), writer.stderr
    # The worker learns it from the writer's agent, the rendezvous closing or the key
    # comparison, whichever comes first: one line that points at the writer's node or the cause.
    last = not_warnings(worker_err).strip().splitlines()[-1]
    assert last.startswith(
        (
            "error: distributed: another node ended the run (see the error there)",
            f"error: distributed: lost the rendezvous at {endpoint}: the node that runs dvc",
        )
    ) or (last.startswith("error: rank ") and disagree in last), worker_err
    assert not (main / "m.pt").exists()


def test_worker_needs_a_multi_node_run(prepared, tmp_path):
    params = write_params(tmp_path, "cnn", {"nproc": 1})
    result = subprocess.run(
        stage("--worker", "--params", params, "--model", "cnn"), capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {params}: distributed.nnodes is 1; --worker needs nnodes > 1"
    )


@pytest.mark.parametrize(
    "worker_params, part",
    [({"lr": 0.2}, "params (the model's settings"), ({"threads": 1}, "threads (torch")],
    ids=["lr", "threads"],
)
def test_nodes_with_different_settings_refuse_in_one_line(prepared, tmp_path, worker_params, part):
    """Issue 24 case 3: a worker with other threads (the writer's: threads 0, the cores) would
    train another model in lockstep; so would one with another lr. (Not cores + 1: torch caps
    its threads at the cores, so that worker computes as the writer does.)"""
    from mnist_pipeline.threads import cores

    if "threads" in worker_params and cores() == 1:
        pytest.skip("threads 0 and 1 are the same count on one core")
    lead, worker = two_nodes(tmp_path, prepared, **worker_params)  # node 1: lr 0.1, threads 0
    assert lead.returncode == 1 and worker.returncode == 1
    last = lead.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank ") and f"the nodes disagree on {part}" in last, last
    assert "code (" not in last and "data (" not in last  # only the part that differs
    assert not (tmp_path / "node1" / "m.pt").exists()


@pytest.mark.parametrize(
    "rank, local_rank, writer_node, writes",
    [("1", "0", "1", True), ("0", "0", "0", False), ("1", "1", "1", False)],
    ids=["writer-node-not-global-rank-0", "global-rank-0-on-a-worker-node", "local-rank-1"],
)
def test_the_writer_is_local_rank_0_of_the_dvc_node_whatever_its_global_rank(
    rank, local_rank, writer_node, writes, monkeypatch
):
    from mnist_pipeline import distributed

    env = {"RANK": rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": "2"}
    for key, value in (env | {distributed.WRITER_ENV: writer_node}).items():
        monkeypatch.setenv(key, value)
    assert distributed.is_writer() is writes


def test_a_killed_two_rank_run_resumes_to_the_same_weights(tmp_path):
    """The writer saves the state after each epoch; on the rerun, and on an elastic restart,
    it hands the state to every rank."""
    import signal

    import psutil

    write_pickle_gz(tmp_path / "mnist.pkl.gz", make_mnist((6000, 100, 10)))
    prepare(tmp_path / "mnist.pkl.gz", tmp_path / "prepared")
    params = write_params(tmp_path / "run", "cnn", {"nproc": 2}, epochs=3)

    def run(out: Path, state: Path, **popen) -> subprocess.Popen:
        args = train_args(
            params, "cnn", tmp_path / "prepared", out / "m.pt", out / "h.tsv", out / "t.json"
        )
        return subprocess.Popen(
            stage(*args, "--state", state),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )

    whole = run(tmp_path / "whole", tmp_path / "whole.pt")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed = run(tmp_path / "killed", tmp_path / "state.pt")
    for line in killed.stdout:
        if line.startswith("cnn epoch 0:"):  # saved before printed
            # torchrun starts each rank in a session of its own: kill the whole tree at once.
            tree = [psutil.Process(killed.pid)]
            tree += tree[0].children(recursive=True)
            for process in tree:
                process.send_signal(signal.SIGKILL)
            break
    killed.wait(timeout=60)
    assert not (tmp_path / "killed" / "m.pt").exists()
    assert (tmp_path / "state.pt").is_file(), list(tmp_path.iterdir())
    resumed = run(tmp_path / "killed", tmp_path / "state.pt")
    # On one machine too a rank that dies is restarted: rank 1, during the resumed run.
    seen: list[str] = []
    read_until(resumed, "cnn epoch 1:", seen)
    kill([p for p in training_processes(resumed) if p.environ()["LOCAL_RANK"] == "1"])
    out, err = resumed.communicate(timeout=300)
    out = "".join(seen) + out
    assert resumed.returncode == 0, err
    assert "train: resuming from" in out and "at epoch 1 of 3" in out, out
    assert "train: restart 1 of 3: resuming at epoch 2 of 3\n" in out, out
    assert "cnn epoch 0:" not in out and out.count("cnn epoch 1:") == 1
    a = torch.load(tmp_path / "whole" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "m.pt", weights_only=True)["state_dict"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


# Elastic restarts: 2 nodes x 1 process on localhost, a rank or a node SIGKILLed mid-run.
ELASTIC_EPOCHS = 4


@pytest.fixture(scope="module")
def elastic(tmp_path_factory) -> Path:
    """Prepared data with epochs long enough (half a second) to kill a rank inside the next one,
    and the model of an uninterrupted 2-node run on it (elastic / "whole" / m.pt)."""
    folder = tmp_path_factory.mktemp("elastic")
    write_pickle_gz(folder / "mnist.pkl.gz", make_mnist((768, 100, 10)))
    prepare(folder / "mnist.pkl.gz", folder / "prepared")
    writer, worker = Run(folder / "whole", folder / "prepared").start()
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    return folder


class Run:
    """One 2-node run of the cnn: the writer (as dvc runs the stage, with a state file) and a
    worker, each in its own folder with its own params.yaml, meeting at a free port."""

    def __init__(self, folder: Path, prepared: Path, **dist) -> None:
        self.folder, self.prepared = folder, prepared
        folder.mkdir()
        self.endpoint = f"127.0.0.1:{free_port()}"
        dist = {"nproc": 1, "nnodes": 2, "rdzv_endpoint": self.endpoint, "timeout": 20} | dist
        keep = {k: dist[k] for k in ("timeout", "max_restarts") if k in dist}
        self.params = write_params(folder / "node1", "cnn", dist, epochs=ELASTIC_EPOCHS)
        self.worker_params = write_params(
            folder / "node2", "cnn", {"nproc": 1, **keep}, epochs=ELASTIC_EPOCHS
        )
        self.state = folder / "node1" / "state.pt"
        self.out = folder / "node1" / "m.pt"

    def start(self) -> tuple[subprocess.Popen, subprocess.Popen]:
        """Start the worker node, then the writer's; read the writer's stdout line by line."""
        node1, node2 = self.params.parent, self.worker_params.parent
        worker = popen(
            "--worker", "--params", self.worker_params, "--model", "cnn",
            "--prepared", self.prepared, "--nnodes", 2, "--rdzv-endpoint", self.endpoint,
            cwd=node2,
        )  # fmt: skip
        args = train_args(
            self.params, "cnn", self.prepared, self.out, node1 / "h.tsv", node1 / "t.json"
        )
        return popen(*args, "--state", self.state, cwd=node1), worker


def popen(*args, cwd: Path) -> subprocess.Popen:
    """A node's stage, with its temporary files in its folder: a killed one leaves them."""
    return subprocess.Popen(
        stage(*args),
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(cwd)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def training_processes(node: subprocess.Popen) -> list:
    """The ranks under one node's stage process: torchrun's workers (the agent has no
    LOCAL_RANK)."""
    import psutil

    found = []
    for process in psutil.Process(node.pid).children(recursive=True):
        try:
            if "LOCAL_RANK" in process.environ():
                found.append(process)
        except psutil.Error:  # it ended meanwhile
            pass
    return found


def kill(processes) -> None:
    import signal

    assert processes, "no process to kill"
    for process in processes:
        process.send_signal(signal.SIGKILL)


def kill_tree(node: subprocess.Popen) -> None:
    """The whole node: the stage, torchrun's agent and its ranks, at once."""
    import psutil

    root = psutil.Process(node.pid)
    kill([root, *root.children(recursive=True)])


def read_until(node: subprocess.Popen, prefix: str, seen: list[str]) -> None:
    for line in node.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return
    raise AssertionError(f"no line {prefix!r} in {seen}")


def same_model(a: Path, b: Path) -> None:
    one = torch.load(a, weights_only=True)["state_dict"]
    two = torch.load(b, weights_only=True)["state_dict"]
    assert one.keys() == two.keys()
    for key, value in one.items():
        assert torch.equal(value, two[key]), (key, (value - two[key]).abs().max())


def test_a_worker_killed_mid_run_is_restarted_and_resumes_to_the_same_weights(elastic):
    run = Run(elastic / "worker-killed", elastic / "prepared")
    writer, worker = run.start()
    seen: list[str] = []
    read_until(writer, "cnn epoch 1:", seen)  # the state of 2 epochs is saved before the line
    kill(training_processes(worker))
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    lines = "".join(seen) + out
    assert "train: restart 1 of 3: resuming at epoch 2 of 4\n" in lines, lines
    assert "cnn epoch 1:" not in out  # epochs 0 and 1 were not trained again
    same_model(elastic / "whole" / "node1" / "m.pt", run.out)
    assert not run.state.exists()  # removed on success


def test_the_writers_node_killed_mid_run_resumes_on_the_next_run(elastic):
    import time

    run = Run(elastic / "writer-killed", elastic / "prepared", timeout=5)
    writer, worker = run.start()
    read_until(writer, "cnn epoch 1:", [])
    kill_tree(writer)
    lost = time.monotonic()
    _, err = worker.communicate(timeout=60)
    # The rendezvous lived on the writer's node: the worker fails at once (not after the 60 s
    # its store waits for a reply), in one line.
    assert worker.returncode == 1 and time.monotonic() - lost < 30, err
    assert not_warnings(err).splitlines() == [
        f"error: distributed: lost the rendezvous at {run.endpoint}: the node that runs dvc "
        "repro is gone; start this worker again for the next run"
    ], err
    assert run.state.is_file() and not run.out.exists()
    writer, worker = run.start()  # the next dvc repro, with the worker started again
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    assert f"train: resuming from {run.state} at epoch 2 of 4\n" in out, out
    assert "cnn epoch 1:" not in out
    same_model(elastic / "whole" / "node1" / "m.pt", run.out)


def test_a_node_that_keeps_dying_ends_the_run_in_one_line_and_keeps_the_state(elastic):
    run = Run(elastic / "keeps-dying", elastic / "prepared", max_restarts=1)
    writer, worker = run.start()
    seen: list[str] = []
    read_until(writer, "cnn epoch 0:", seen)
    kill(training_processes(worker))
    read_until(writer, "train: restart 1 of 1: resuming at epoch 1 of 4", seen)
    kill(training_processes(worker))
    _, err = writer.communicate(timeout=120)
    _, worker_err = worker.communicate(timeout=60)
    assert writer.returncode == 1 and worker.returncode == 1
    # The worker's node spent its restart; the writer's learns it from the rendezvous, closed
    # by the worker's agent, or from its own rank, whichever comes first.
    again = "rerun with every node started: it resumes from the last completed epoch"
    assert re.fullmatch(
        r"error: distributed: (another node ended the run \(see the error there\)|rank \d lost "
        r"its connection to the other ranks \(a node died or left\), and distributed\."
        rf"max_restarts \(1\) spent); {again}\n",
        not_warnings(err),
    ), err
    assert re.fullmatch(
        r"error: distributed: rank \d was killed by SIGKILL, and distributed\.max_restarts "
        r"\(1\) spent; start this worker again for the next run\n",
        not_warnings(worker_err),
    ), worker_err
    assert run.state.is_file() and not run.out.exists()


def test_a_node_that_stays_away_ends_the_run_after_the_timeout_and_keeps_the_state(elastic):
    import time

    run = Run(elastic / "stays-away", elastic / "prepared", timeout=5)
    writer, worker = run.start()
    read_until(writer, "cnn epoch 0:", [])
    kill_tree(worker)  # the worker's whole machine: nobody starts it again
    lost = time.monotonic()
    _, err = writer.communicate(timeout=120)
    assert writer.returncode == 1 and time.monotonic() - lost < 5 + 15, err
    assert not_warnings(err) == (
        f"error: distributed: a node left and did not rejoin the rendezvous at {run.endpoint} "
        "within 5s (distributed.timeout); rerun with every node started: it resumes from the "
        "last completed epoch\n"
    )
    assert run.state.is_file() and not run.out.exists()


def test_a_worker_takes_only_what_makes_a_multi_node_run():
    from mnist_pipeline.errors import UserError
    from mnist_pipeline.launcher import worker_config

    one = load_params_dict({"nproc": 1}).distributed
    good = worker_config(one, 2, "10.0.0.1:29500", "params.yaml")  # the good case
    assert (good.nnodes, good.rdzv_endpoint) == (2, "10.0.0.1:29500")
    for nnodes, endpoint, message in [
        (-1, None, "--nnodes -1: a worker joins a run of at least 2 nodes"),
        (0, None, "--nnodes 0: a worker joins a run of at least 2 nodes"),
        (1, None, "--nnodes 1: a worker joins a run of at least 2 nodes"),
        (2, "h:99999", "--rdzv-endpoint: expected 'host:port' with a port 1-65535, got 'h:99999'"),
        (None, None, "params.yaml: distributed.nnodes is 1; --worker needs nnodes > 1"),
        (
            2,
            None,
            "--rdzv-endpoint: needed, the writer's node as 'host:port' with a port 1-65535; "
            "params.yaml has no distributed.rdzv_endpoint",
        ),
    ]:
        with pytest.raises(UserError) as err:
            worker_config(one, nnodes, endpoint, "params.yaml")
        assert str(err.value) == message


def load_params_dict(distributed: dict):
    from mnist_pipeline.params import parse_params

    return parse_params(tiny_params(distributed=distributed))


def test_nodes_that_differ_are_refused_naming_each_part_that_differs(monkeypatch):
    """agree() on what two nodes sent (the gather faked): the line names the parts."""
    import torch.distributed as dist

    from mnist_pipeline import distributed
    from mnist_pipeline.errors import UserError

    mine = {"code": "c", "params": "p", "data": "d", "threads": "2", "world size": "2"}
    theirs = mine | {"code": "c2", "threads": "1"}

    def gather(every, obj):
        every[:] = [obj, (theirs, False, (0, 3))]

    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", gather)
    monkeypatch.delenv(distributed.ERROR_DIR_ENV, raising=False)
    with pytest.raises(UserError) as err:
        distributed.agree(mine, True)
    assert str(err.value) == (
        "distributed: the nodes disagree on code (src/, stages/ or torch); threads (torch "
        "threads per rank: params.yaml threads, or the cores with threads 0); give every node "
        "the same ones"
    )
    theirs = dict(mine)  # the good case: equal keys, one writer
    assert distributed.agree(mine, True) == (0, "")
