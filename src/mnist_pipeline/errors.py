"""User-facing errors: one readable line, exit code 1, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix: bad params, bad data, a missing file, a full disk.

    The message is one line that names the file, key or value and says what would be right.
    """


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit``; its type if it has none."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def stage_main(main: Callable[..., object]) -> Callable[..., object]:
    """Run a stage's ``main``; report a UserError or an OSError as one line on stderr, exit 1.

    Real bugs (any other exception) keep their traceback.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except OSError as err:  # unwritable folder, full disk, ...: the user's machine, not a bug
            where = f" {err.filename!r}:" if err.filename else ""
            print(f"error:{where} {err.strerror or err}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted; no output file was left half-written", file=sys.stderr)
            sys.exit(130)

    return wrapper
