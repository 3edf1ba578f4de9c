"""Start-up and orchestration on real MNIST, against `import torch` and `dvc --version` measured
in the same run: one train stage, a no-op `dvc repro`, `dvc exp run -S ...`; the design before
this one (a `git worktree` of OLD_REV) side by side; DVC's own no-op floor; peak memory."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mnist_pipeline.params import load_params

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers for a temporary copy of the repo
from project import commit_all, dvc, env, git, set_params, train_args, write_sources  # noqa: E402

LOCAL_CHECKSUMS = yaml.safe_load((REPO / "sources.yaml").read_text())["sources"][-1]["checksums"]
OLD_REV = "14bb146"  # the last commit of the design with one evaluate stage per model


def bench_project(tree: Path, pythonpath: str | None = None) -> Path:
    """A committed copy of ``tree`` whose fetch reads the real data from a local file."""
    root = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    for rel in subprocess.run(
        ["git", "ls-files"], cwd=tree, capture_output=True, text=True, check=True
    ).stdout.splitlines():
        if rel.startswith(("metrics/", "plots/", "dvc.lock")) or not (tree / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / rel, root / rel)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    local = {"url": str(REPO / "data/raw/mnist.pkl.gz"), "checksums": LOCAL_CHECKSUMS}
    if "sources" in raw["fetch"]:  # an old design: the sources were in params.yaml
        set_params(root, fetch=raw["fetch"] | {"sources": [local]})
    else:
        write_sources(root, local)
    commit_all(root, "bench")
    run_in(root, "dvc", "repro", pythonpath=pythonpath)
    commit_all(root, "baseline")
    return root


def old_tree(rev: str) -> Path:
    """A git worktree of ``rev``: the design this change replaced."""
    path = Path(tempfile.mkdtemp(prefix="mnist-old-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "-q", "--detach", str(path), rev], cwd=REPO, check=True
    )
    return path


def dvc_floor_repo() -> Path:
    """A scratch git + DVC repo with one trivial stage: what a no-op `dvc repro` costs DVC
    itself, whatever the pipeline (env() turns analytics off, as for the other repos)."""
    root = Path(tempfile.mkdtemp(prefix="dvc-floor-"))
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    (root / "a.txt").write_text("a\n")
    dvc(root, "stage", "add", "-q", "-n", "copy", "-d", "a.txt", "-o", "b.txt", "cp a.txt b.txt")
    dvc(root, "repro", "-q")
    return root


def run_in(cwd: Path, *cmd: str, pythonpath: str | None = None, extra_env=None) -> float:
    """Wall seconds of ``cmd`` run in ``cwd`` (`dvc` means this venv's dvc). ``pythonpath``
    puts another tree's src/ before the installed package (the old design's code);
    ``extra_env`` is set on top."""
    if cmd[0] == "dvc":
        cmd = (sys.executable, "-m", *cmd)
    environ = env() | ({"PYTHONPATH": pythonpath} if pythonpath else {}) | (extra_env or {})
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=environ, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def training_seconds(root: Path) -> float:
    """The training seconds the train stages logged: logs/train/ (metrics/train/ before)."""
    return sum(
        json.loads(p.read_text())["train_seconds"]
        for folder in ("logs/train", "metrics/train")
        for p in (root / folder).glob("*.json")
    )


def experiment(root: Path, setting: str, pythonpath=None) -> tuple[float, float]:
    """`dvc exp run -S setting`: (wall seconds, training seconds), then back to the baseline."""
    wall = run_in(root, "dvc", "exp", "run", "-S", setting, pythonpath=pythonpath)
    trained = training_seconds(root)
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=root, check=True)
    run_in(root, "dvc", "checkout", "-q", pythonpath=pythonpath)
    return wall, trained


def bench_orchestration(runs: int, old_rev: str) -> dict:
    new = bench_project(REPO)
    old_src = old_tree(old_rev)
    oldpath = str(old_src / "src")
    old = bench_project(old_src, oldpath)
    floor = dvc_floor_repo()
    r = {
        k: []
        for k in (
            "torch",
            "dynamo",
            "version",
            "stage",
            "stage_train",
            "noop",
            "noop_old",
            "noop_floor",
            "all",
            "all_train",
            "all_old",
            "all_old_train",
            "one",
            "one_old",
        )
    }
    for i in range(runs):
        r["torch"].append(run_in(new, sys.executable, "-c", "import torch"))
        r["dynamo"].append(run_in(new, sys.executable, "-c", "import torch._dynamo"))
        r["version"].append(run_in(new, "dvc", "--version"))
        r["stage"].append(run_in(new, "dvc", "repro", "-f", "-s", "train@logistic"))
        timing = json.loads((new / "logs/train/logistic.json").read_text())
        r["stage_train"].append(timing["train_seconds"])
        r["noop"].append(run_in(new, "dvc", "repro"))
        r["noop_old"].append(run_in(old, "dvc", "repro", pythonpath=oldpath))
        r["noop_floor"].append(run_in(floor, "dvc", "repro"))
        lr = f"lr={0.1 + 0.01 * i:g}"
        for tag, root, path in (("", new, None), ("_old", old, oldpath)):
            wall, trained = experiment(root, lr, path)
            r[f"all{tag}"].append(wall)
            r[f"all{tag}_train"].append(trained)
            r[f"one{tag}"].append(experiment(root, f"+models.cnn.lr={0.05 + 0.01 * i:g}", path)[0])
        print({k: round(v[-1], 2) for k, v in r.items()}, flush=True)
    memory = {name: peak_rss_mb(new, name) for name in ("cnn", "fast")}
    subprocess.run(["git", "worktree", "remove", "--force", str(old_src)], cwd=REPO, check=True)
    for root in (new, old, floor):
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in r.items()}
    med["stages"] = len(load_params(REPO / "params.yaml").models)
    med["memory"] = memory
    return med


def train_stage(name: str, stem: str, params: str = "params.yaml") -> list[str]:
    """The train stage's command line for model ``name``, writing ``stem``.pt/.tsv/.json."""
    args = train_args(params, name, "data/prepared", f"{stem}.pt", f"{stem}.tsv", f"{stem}.json")
    return [sys.executable, "stages/train.py", *args]


def peak_rss_mb(root: Path, name: str) -> float:
    """Peak resident memory of the train stage (GNU time's 'Maximum resident set size')."""
    cmd = ["/usr/bin/time", "-v", *train_stage(name, f"rss-{name}")]
    result = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True, check=True)
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return kb / 1024
