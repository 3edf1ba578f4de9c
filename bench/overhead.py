"""The fixed cost of an experiment and of one stage, against floors measured in the same run.

floor repo   a scratch git + DVC repo of the pipeline's shape: one stage without torch, six
             stages and one more that only `import torch` and write a byte, all rerun by
             `dvc exp run -S lr=…`: what DVC and torch alone cost such a pipeline
experiment  `dvc exp run -S lr=…` of the project on real MNIST (every model retrains), less
             its training seconds, as a ratio to the floor's `dvc exp run`
one stage    `dvc repro -f -s train@logistic`, less its training seconds, in `import torch`s
split        one more experiment of each, each stage process timed (a `python` on PATH that
             logs when each starts and ends: DVC's own time is the wall less the stages'), and
             the project's stages run under stagetrace.py (imports, data load, epochs, writes)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from orchestration import REPO, bench_project, run_in, training_seconds

sys.path.insert(0, str(REPO / "tests"))
from project import commit_all, dvc, git  # noqa: E402

BENCH = Path(__file__).resolve().parent
TORCH_STAGES = 6  # the train stages of params.yaml's tutorial shape; one more is evaluate

# Stands in for `python` on PATH: logs each process's start, end and arguments, then exits as
# it did. With $STAGE_TRACE set, a project stage (stages/*.py) runs under stagetrace.py.
SHIM = """\
#!/bin/bash
start=$(date +%s.%N)
if [ -n "$STAGE_TRACE" ] && [[ "$1" == stages/*.py ]]; then
  "$REAL_PYTHON" "$BENCH/stagetrace.py" "$@"
else
  "$REAL_PYTHON" "$@"
fi
rc=$?
echo "$start $(date +%s.%N) $*" >> "$STAGE_LOG"
exit $rc
"""


def floor_repo() -> Path:
    """The scratch repo: `check` (no torch), `t1`…`t6` and `all` (import torch, write a byte),
    each depending on params.yaml's lr as the project's stages do."""
    root = Path(tempfile.mkdtemp(prefix="dvc-floor-"))
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    (root / "params.yaml").write_text("lr: 0.08\n")
    write = "import torch; open('{0}', 'w').write('{0}')"
    stages = {
        "check": {
            "cmd": "python -c \"open('check', 'w').write('c')\"",
            "deps": ["params.yaml"],
            "outs": ["check"],
        }
    }
    for i in range(1, TORCH_STAGES + 1):
        stages[f"t{i}"] = {
            "cmd": f'python -c "{write.format(f"t{i}")}"',
            "deps": ["check"],
            "params": ["lr"],
            "outs": [f"t{i}"],
        }
    stages["all"] = {
        "cmd": f'python -c "{write.format("all")}"',
        "deps": [f"t{i}" for i in range(1, TORCH_STAGES + 1)],
        "params": ["lr"],
        "outs": ["all"],
    }
    (root / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=2))
    run_in(root, "dvc", "repro", "-q")
    commit_all(root, "floor")
    return root


def shim_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="python-shim-"))
    (path / "python").write_text(SHIM)
    (path / "python").chmod(0o755)
    return path


class Timed:
    """Runs commands with the logging `python` first on PATH; reads back what it logged."""

    def __init__(self) -> None:
        self.shim = shim_dir()
        self.log = self.shim / "stages.log"
        self.trace = self.shim / "trace.jsonl"

    def env(self, trace: bool) -> dict:
        environ = {
            "PATH": f"{self.shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + os.environ.get("PATH", ""),
            "REAL_PYTHON": sys.executable,
            "BENCH": str(BENCH),
            "STAGE_LOG": str(self.log),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        }
        return environ | ({"STAGE_TRACE": str(self.trace)} if trace else {})

    def run(self, cwd: Path, *cmd: str, trace: bool = False) -> dict:
        """The command's wall seconds, its start and end (wall-clock stamps), and the stage
        processes it ran (start, end, argv), oldest first."""
        for path in (self.log, self.trace):
            path.unlink(missing_ok=True)
        begun = time.time()
        wall = run_in(cwd, *cmd, extra_env=self.env(trace))
        ended = time.time()
        processes = []
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            start, end, *argv = line.split(" ")
            processes.append({"start": float(start), "end": float(end), "argv": argv})
        processes.sort(key=lambda p: p["start"])
        return {"wall": wall, "begun": begun, "ended": ended, "processes": processes}

    def traces(self) -> list[dict]:
        text = self.trace.read_text() if self.trace.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


def restore(root: Path) -> None:
    """Back to the committed baseline after an experiment."""
    git(root, "checkout", "-q", "--", ".")
    run_in(root, "dvc", "checkout", "-q")


def stage_name(argv: list[str]) -> str:
    """`train@cnn` for stages/train.py --model cnn, `evaluate`, `t3`, ..."""
    if argv[:1] == ["-c"]:  # the floor's stages: the file each writes
        return " ".join(argv[1:]).split("open('", 1)[1].split("'", 1)[0]
    script = Path(argv[0]).stem
    return f"{script}@{argv[argv.index('--model') + 1]}" if "--model" in argv else script


def dvc_seconds(run: dict) -> dict:
    """What DVC spent of a run on its own, everything but the stage processes: before the
    first, between them, after the last."""
    processes = run["processes"]
    if not processes:
        return {"before": run["wall"], "between": 0.0, "after": 0.0, "all": run["wall"]}
    pairs = zip(processes, processes[1:], strict=False)
    parts = {
        "before": processes[0]["start"] - run["begun"],
        "between": sum(b["start"] - a["end"] for a, b in pairs),
        "after": run["ended"] - processes[-1]["end"],
    }
    return parts | {"all": sum(parts.values())}


def split(processes: list[dict], traces: list[dict]) -> list[dict]:
    """Per stage process: its wall and where it went (stagetrace's phases; start-up and exit:
    from the spawn to the script's first line, and from its last line to the exit)."""
    by_argv = {tuple(t["argv"]): t for t in traces}
    rows = []
    for p in processes:
        row = {"stage": stage_name(p["argv"]), "wall": p["end"] - p["start"]}
        trace = by_argv.get(tuple(p["argv"]))
        if trace:
            phases = trace["phases"]
            row["interpreter start and exit"] = (trace["started"] - p["start"]) + (
                p["end"] - trace["ended"]
            )
            row |= phases
            row["other"] = row["wall"] - row["interpreter start and exit"] - sum(phases.values())
        rows.append(row)
    return rows


def bench_overhead(runs: int) -> dict:
    project = bench_project(REPO)
    floor = floor_repo()
    timed = Timed()
    r = {k: [] for k in ("torch", "floor", "floor_dvc", "all", "all_train", "all_dvc")}
    r |= {"stage": [], "stage_train": [], "exp_ratio": [], "stage_ratio": []}
    r |= {"floor_stage": [], "floor_stage_ratio": []}
    for i in range(runs):
        lr = f"lr={0.1 + 0.01 * i:g}"
        r["torch"].append(run_in(project, sys.executable, "-c", "import torch"))
        run = timed.run(floor, "dvc", "exp", "run", "-S", lr)
        r["floor"].append(run["wall"])
        r["floor_dvc"].append(dvc_seconds(run)["all"])
        restore(floor)
        run = timed.run(project, "dvc", "exp", "run", "-S", lr)
        r["all"].append(run["wall"])
        r["all_train"].append(training_seconds(project))
        r["all_dvc"].append(dvc_seconds(run)["all"])
        restore(project)
        # One stage of each: the floor's only imports torch, so its ratio is DVC's own floor.
        r["floor_stage"].append(run_in(floor, "dvc", "repro", "-f", "-s", "t1"))
        r["stage"].append(run_in(project, "dvc", "repro", "-f", "-s", "train@logistic"))
        logged = json.loads((project / "logs/train/logistic.json").read_text())
        r["stage_train"].append(logged["train_seconds"])
        # Each run's ratios, of figures measured side by side: their median is the target's
        # (on a shared machine a median of each figure may pair a quiet run with a busy one).
        r["exp_ratio"].append((r["all"][-1] - r["all_train"][-1]) / r["floor"][-1])
        r["stage_ratio"].append((r["stage"][-1] - r["stage_train"][-1]) / r["torch"][-1])
        r["floor_stage_ratio"].append(r["floor_stage"][-1] / r["torch"][-1])
        print("overhead:", {k: round(v[-1], 2) for k, v in r.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in r.items()}
    med["runs"] = {k: r[k] for k in ("exp_ratio", "stage_ratio", "floor_stage_ratio")}

    # The split: one more experiment of each, the project's stages traced.
    lr = f"lr={0.1 + 0.01 * runs:g}"
    floor_run = timed.run(floor, "dvc", "exp", "run", "-S", lr)
    run = timed.run(project, "dvc", "exp", "run", "-S", lr, trace=True)
    med["split"] = {
        "wall": run["wall"],
        "dvc": dvc_seconds(run),
        "stages": split(run["processes"], timed.traces()),
        "floor_wall": floor_run["wall"],
        "floor_dvc": dvc_seconds(floor_run),
        "floor_stages": split(floor_run["processes"], []),
    }
    for root in (project, floor, timed.shim):
        shutil.rmtree(root, ignore_errors=True)
    return med
