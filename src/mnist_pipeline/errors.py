"""User-facing errors: one readable line, exit code 1, no traceback."""

from __future__ import annotations

import atexit
import functools
import gc
import re
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix: bad params, bad data, a missing file, a full disk.

    The message is one line that names the file, key or value and says what would be right.
    """


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit``; its type if it has none.

    For ``torch.load(..., weights_only=True)``'s refusal, whose first lines are advice, the
    reason instead: ``Unsupported global: posix.system`` (a pickle that would run os.system).
    """
    text = str(err).strip()
    if text.startswith("Weights only load failed"):
        if found := re.search(r"GLOBAL ([\w.]+)", text):
            return f"Unsupported global: {found.group(1)}"
        _, marker, rest = text.partition("WeightsUnpickler error:")
        reason = one_line(rest.split("Check the documentation of torch.load")[0])
        if marker and reason:
            return reason[:limit]
    return text.splitlines()[0][:limit] if text else type(err).__name__


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the indentation after them) made single spaces."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def stage_main(main: Callable[..., object]) -> Callable[..., object]:
    """Run a stage's ``main``; report a UserError or an OSError as one line on stderr, exit 1.
    Real bugs (any other exception) keep their traceback.

    The collector is frozen at exit: the interpreter's last collections walk every object
    torch made, a quarter of a torch stage's wall, for memory the OS frees anyway
    (BENCHMARKS.md). Outputs are written and closed before; atexit handlers still run.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        atexit.register(gc.freeze)  # runs before the interpreter's final collections
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {one_line(str(err))}", file=sys.stderr)  # one line, always
            sys.exit(1)
        except OSError as err:  # unwritable folder, full disk, ...: the user's machine, not a bug
            where = f" {err.filename!r}:" if err.filename else ""
            print(f"error:{where} {err.strerror or err}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted; no output file was left half-written", file=sys.stderr)
            sys.exit(130)

    return wrapper
