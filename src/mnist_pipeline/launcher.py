"""The parent of a distributed train stage: torchrun, watched, and one line when it fails.

A train stage with ``distributed.nproc > 1`` or ``nnodes > 1`` runs its own script again under
torchrun and waits; the ranks are ``distributed.py``. Why a run failed comes from torch
elastic's error files, not torchrun's log: each rank's (``distributed.recorded``), read as soon
as it is written, and WHY, left by torchrun itself (this module run with ``-m``). torchrun's
log goes to a file, kept and named when no line can say why.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from .distributed import ERROR_DIR_ENV, STARTED, WRITER_ENV
from .errors import UserError
from .params import ENDPOINT_FORM, DistributedConfig, _endpoint

WHY = "torchrun.json"  # in ERROR_DIR_ENV: why torchrun failed, written by this module's __main__


def worker_config(
    config: DistributedConfig, nnodes: int | None, endpoint: str | None, params: str
) -> DistributedConfig:
    """A worker node's ``config``: params.yaml's (``params``), with ``--nnodes`` and
    ``--rdzv-endpoint`` where given; each refused in one line unless it makes a multi-node run."""
    if nnodes is not None and nnodes < 2:
        raise UserError(f"--nnodes {nnodes}: a worker joins a run of at least 2 nodes")
    if endpoint is not None and not (endpoint and _endpoint(endpoint)):
        raise UserError(f"--rdzv-endpoint: expected {ENDPOINT_FORM}, got {endpoint!r}")
    config = replace(  # a valid --nnodes and --rdzv-endpoint are never 0 nor empty
        config, nnodes=nnodes or config.nnodes, rdzv_endpoint=endpoint or config.rdzv_endpoint
    )
    if config.nnodes == 1:
        raise UserError(f"{params}: distributed.nnodes is 1; --worker needs nnodes > 1")
    if not config.rdzv_endpoint:  # torchrun would say the host '' does not resolve
        raise UserError(
            f"--rdzv-endpoint: needed, the writer's node as {ENDPOINT_FORM}; "
            f"{params} has no distributed.rdzv_endpoint"
        )
    return config


def torchrun_args(config: DistributedConfig, run_id: str, *, writer: bool = True) -> list[str]:
    """torchrun's options for one node of ``config``. Across machines the writer's node hosts
    the rendezvous (``rdzv_endpoint`` is its host:port), also when every node runs on one host."""
    each = [f"--nproc_per_node={config.nproc}", f"--max_restarts={config.max_restarts}"]
    if config.nnodes == 1:
        return ["--standalone", *each]
    read = max(60, math.ceil(config.timeout))  # a worker waiting for the host
    conf = f"join_timeout={config.timeout:g},read_timeout={read},is_host={int(writer)}"
    return [
        f"--nnodes={config.nnodes}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={config.rdzv_endpoint}",
        f"--rdzv_id={run_id}",
        f"--rdzv_conf={conf}",
        *each,
    ]


def launch(
    config: DistributedConfig,
    run_id: str,
    script: str,
    argv: list[str],
    *,
    threads: int,
    writer: bool = True,
) -> None:
    """Run ``script argv`` under torchrun, each rank with ``threads`` torch threads; on failure
    raise one line that says why."""
    if config.nnodes > 1:
        _resolve(config.rdzv_endpoint, config.timeout)
    folder = Path(tempfile.mkdtemp(prefix="mnist-ddp-"))
    keep = False
    try:
        cmd = [sys.executable, "-m", __name__, *torchrun_args(config, run_id, writer=writer)]
        cmd += ["--log-dir", str(folder / "ranks"), script, *argv]  # the ranks' error files
        env = {
            **os.environ,
            ERROR_DIR_ENV: str(folder),
            WRITER_ENV: "1" if writer else "0",
            "OMP_NUM_THREADS": str(threads),  # torch's threads in each rank
            # A fresh store for the ranks of every restart: the agents' shared one keeps the
            # keys of the ranks that died, and a restarted rank may connect to those
            # (pytorch/pytorch#135712: the restart counts that separate them differ per node).
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        }
        with open(folder / "torchrun.log", "w") as log:  # a file: nothing blocks on a pipe
            torchrun = subprocess.Popen(cmd, env=env, stderr=log)
            # A rank's own error stops torchrun: no restart fixes it (bad settings, a diverged
            # loss, a full disk).
            try:
                while torchrun.poll() is None and not _own_errors(folder):
                    time.sleep(0.1)
            finally:  # on Ctrl-C too: torchrun stops its ranks, and leaves the rendezvous open
                stopped = torchrun.poll() is None
                torchrun.terminate()  # a no-op once it has ended
                try:
                    torchrun.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    torchrun.kill()
                    torchrun.wait()
        if torchrun.returncode == 0 and not stopped:
            return
        why = _why(config, folder, writer)
        keep = why is None
        raise UserError(why or f"torchrun exited with status {torchrun.returncode}; see {log.name}")
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _resolve(endpoint: str, timeout: float) -> None:
    """Refuse a rendezvous host that does not resolve, within ``timeout``: torchrun would try it
    for minutes, then fail with its log."""
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    failed: list[str] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None)
        except (OSError, UnicodeError) as err:
            failed.append(getattr(err, "strerror", None) or str(err))

    thread = threading.Thread(target=lookup, daemon=True)  # DNS may take longer: not waited
    thread.start()
    thread.join(timeout)
    if failed or thread.is_alive():
        why = failed[0] if failed else f"no answer within {timeout:g}s (distributed.timeout)"
        raise UserError(
            f"distributed: rdzv_endpoint {endpoint}: host {host!r} does not resolve ({why}); "
            "give the host:port of the node that runs dvc repro"
        )


def _own_errors(folder: Path) -> list[dict]:
    """The ranks' own errors in their error files (``distributed.recorded``), lowest rank first."""
    found = []
    for path in (folder / "ranks").rglob("error.json"):
        try:
            info = json.loads(path.read_text())["message"]["extraInfo"]
        except (OSError, ValueError, KeyError, TypeError):  # not one of ours
            continue
        if info.get("own"):
            found.append(info)
    return sorted(found, key=lambda info: info["rank"])


def _why(config: DistributedConfig, folder: Path, writer: bool) -> str | None:
    """One line for a failed torchrun, from the ranks' error files and torchrun's WHY; None
    when they do not say."""
    if own := _own_errors(folder):
        return f"rank {own[0]['rank']} failed: {own[0]['line']}"
    try:
        why = json.loads((folder / WHY).read_text())
    except (OSError, ValueError):
        return None
    errors = set(why.get("errors", ()))  # torchrun's exception: its class and their bases
    where, wait = config.rdzv_endpoint, f"{config.timeout:g}s (distributed.timeout)"
    if not writer:
        again = "start this worker again for the next run"
    else:
        every = " with every node started" if config.nnodes > 1 else ""
        again = f"rerun{every}: it resumes from the last completed epoch"
    started = (folder / STARTED).exists()
    if "RendezvousTimeoutError" in errors and not started:
        return (  # a worker with another --nnodes waits for another count: it never joins
            f"distributed: not all {config.nnodes} nodes joined the rendezvous at {where} "
            f"within {wait}; start the other nodes with: "
            f"python stages/train.py --worker --model ... --nnodes {config.nnodes}"
        )
    if "RendezvousTimeoutError" in errors:
        cause = f"a node left and did not rejoin the rendezvous at {where} within {wait}"
    elif "RendezvousClosedError" in errors:
        cause = "another node ended the run (see the error there)"
    elif "RendezvousConnectionError" in errors and not writer:
        cause = f"lost the rendezvous at {where}: the node that runs dvc repro is gone"
    elif "rank" in why and started:
        if why["signal"]:
            died = f"was killed by {why['signal']}"
        else:
            died = why["line"] or f"exited with status {why['exitcode']}"
        spent = f"distributed.max_restarts ({config.max_restarts}) spent"
        cause = f"rank {why['rank']} {died}, and {spent}"
    else:
        return None
    return f"distributed: {cause}; {again}"


def torchrun(argv: list[str]) -> None:
    """torchrun, as ``launch`` runs it: on failure it leaves WHY, as JSON, before it ends."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    why = Path(os.environ[ERROR_DIR_ENV], WHY)
    try:
        run(parse_args(argv))
    except ChildFailedError as err:  # the first rank that failed in the last attempt
        rank, failure = err.get_first_failure()
        message = failure.error_file_data.get("message")  # its error file: ``recorded``'s
        info = message.get("extraInfo", {}) if isinstance(message, dict) else {}
        signal = failure.signal_name() if failure.exitcode < 0 else None
        report = {"rank": rank, "signal": signal, "exitcode": failure.exitcode}
        why.write_text(json.dumps(report | {"line": info.get("line")}))
        raise
    except Exception as err:  # the rendezvous failed, or torchrun was stopped
        why.write_text(json.dumps({"errors": [c.__name__ for c in type(err).__mro__]}))
        raise


if __name__ == "__main__":
    torchrun(sys.argv[1:])
