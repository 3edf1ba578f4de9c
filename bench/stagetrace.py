"""Where a stage process's seconds go: run a stage script with its library calls timed.

    python bench/stagetrace.py stages/train.py --model logistic ...   (the stage's own arguments)

The stage runs unchanged (runpy, as `python stages/train.py ...` would); every `import` and
the library functions in PHASES are timed as they are called, each second counted once, in
the innermost phase (the epochs exclude the history and resume writes made after each epoch).
One JSON line is appended to $STAGE_TRACE: the stage, its phases, and wall-clock stamps of the
interpreter's start, the script's start and its end (the parent knows when it spawned it and
when it exited: the rest is the interpreter's start-up and exit).
"""

from __future__ import annotations

import builtins
import time

STARTED = time.time()  # the interpreter is up: nothing of ours has run yet

import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402

# module -> {function or Class.method: phase}. What is not listed counts as "other".
PHASES = {
    "mnist_pipeline.data": {"load_datasets": "data load", "load_split": "data load"},
    "mnist_pipeline.models.contract": {
        "Model.check": "model build and checks",
        "Model.build_checked": "model build and checks",
        "Model.check_forward": "model build and checks",
    },
    "mnist_pipeline.resume": {
        "key_parts": "resume key and state",
        "ResumeState.load": "resume key and state",
        "ResumeState.save": "output writes",
        "ResumeState.clear": "output writes",
    },
    "mnist_pipeline.train": {"fit": "epochs"},
    "mnist_pipeline.atomic": {"torch_save": "output writes", "write_text": "output writes"},
    "mnist_pipeline.history": {"write_history": "output writes"},
    "mnist_pipeline.evaluate": {"score": "scoring"},
    "mnist_pipeline.plots": {
        "digit_grid": "pictures",
        "confusion_png": "pictures",
        "curves_png": "pictures",
        "draw_all": "pictures",  # the pictures queued by drawn_by, drawn in forked workers
    },
}

spent: dict[str, float] = defaultdict(float)
_children: list[float] = []  # per open timed call: seconds spent in timed calls inside it


def timed(phase: str, func):
    """``func``, its time (less that of the timed calls inside it) added to ``phase``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        _children.append(0.0)
        try:
            return func(*args, **kwargs)
        finally:
            inner = _children.pop()
            total = time.perf_counter() - start
            spent[phase] += total - inner
            if _children:
                _children[-1] += total

    return wrapper


def patch(module) -> None:
    for dotted, phase in PHASES.pop(module.__name__, {}).items():
        owner_name, _, name = dotted.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        setattr(owner, name, timed(phase, getattr(owner, name)))


_import = builtins.__import__


def traced_import(name, globals=None, locals=None, fromlist=(), level=0):
    """``import``, timed as "imports"; a module of PHASES is patched before its names bind."""
    module = _import(name, globals, locals, fromlist, level)
    for loaded in [sys.modules.get(m) for m in PHASES]:
        if loaded is not None and not getattr(loaded.__spec__, "_initializing", False):
            patch(loaded)  # a module whose own code has run to its end
    return module


def main() -> None:
    script, *args = sys.argv[1:]
    builtins.__import__ = timed("imports", traced_import)
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    begun = time.time()
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
    ended = time.time()
    builtins.__import__ = _import
    with open(os.environ["STAGE_TRACE"], "a") as f:
        stamps = {"started": STARTED, "begun": begun, "ended": ended}
        f.write(json.dumps({"argv": sys.argv, "phases": dict(spent)} | stamps) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
