"""Parallel sweeps: a queued sweep with `-j J` and `threads = cores / J`, against the same
experiments run one by one, side by side in one run, on real MNIST.

In a temporary copy of the repository (params.yaml's models and epochs, or --models), after one
baseline `dvc repro`:
  1. one by one: `dvc exp run -S threads=T -S lr=X` for each lr, with T = cores / J;
  2. one by one at `threads = cores` (each run alone with every core: the fastest one by one);
  3. queued: `dvc exp run --queue -S threads=T -S lr=...` and `dvc queue start -j J`.
It prints each phase's seconds, the queue's time as a ratio to each one-by-one phase, whether
the queued models are byte-identical to those of the same settings run one by one (1.), and
whether `dvc exp show` shows `threads`, and any DVC process of the copy still alive 20 s after
the queue emptied (the workers exit by themselves 10 s after). With --oversubscribed, also
the queue at `threads = cores` (slow: minutes).

The lrs differ from params.yaml's, so no experiment equals the baseline, and DVC's run cache
is emptied before each phase, so every experiment trains.

  python bench/sweep.py --mnist data/raw/mnist.pkl.gz    # after `make repro`
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers for a temporary copy of the repo
from project import commit_all, copy_repo, dvc, git, set_params, write_sources  # noqa: E402

from mnist_pipeline.threads import cores  # noqa: E402


def model_md5(project: Path, rev: str | None = None) -> dict[str, str]:
    """models/<name>.pt -> md5 in the workspace's dvc.lock, or in that of commit ``rev``."""
    text = git(project, "show", f"{rev}:dvc.lock").stdout if rev else None
    lock = yaml.safe_load(text or (project / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for name, stage in lock["stages"].items()
        if name.startswith("train@")
        for out in stage["outs"]
        if out["path"].startswith("models/")
    }


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def forget_runs(project: Path) -> None:
    """Empty DVC's run cache, so that no phase restores a model another phase trained."""
    shutil.rmtree(project / ".dvc" / "cache" / "runs", ignore_errors=True)


def one_by_one(project: Path, lrs: list[str], threads: int) -> tuple[float, dict[str, str]]:
    """Seconds for `dvc exp run` of each lr in turn, and each run's models' md5s."""
    forget_runs(project)
    md5s = {}
    start = time.monotonic()
    for lr in lrs:
        dvc(project, "exp", "run", "-S", f"threads={threads}", "-S", f"lr={lr}")
        md5s[lr] = model_md5(project)
    seconds = time.monotonic() - start
    git(project, "checkout", "-q", "--", ".")
    return seconds, md5s


def queued(project: Path, lrs: list[str], threads: int, jobs: int) -> tuple[float, dict, list]:
    """Seconds from `dvc queue start` to the last experiment done; lr -> (md5s, threads shown)."""
    before = {e["rev"] for e in experiments(project)}
    forget_runs(project)
    dvc(project, "exp", "run", "--queue", "-S", f"threads={threads}", "-S", f"lr={','.join(lrs)}")
    refs = exp_refs(project)
    start = time.monotonic()
    dvc(project, "queue", "start", "-j", str(jobs))
    # Each experiment that succeeds adds a git ref. Waiting on those costs next to nothing,
    # while `dvc queue status` is a DVC process that would take CPU from the workers.
    last_status = start
    while len(exp_refs(project) - refs) < len(lrs):
        time.sleep(0.2)
        if time.monotonic() - last_status > 30:
            last_status = time.monotonic()
            status = dvc(project, "queue", "status").stdout
            if "Failed" in status or ("Queued" not in status and "Running" not in status):
                raise SystemExit(f"a queued experiment failed:\n{status}")
    seconds = time.monotonic() - start
    # No `dvc queue stop`: the workers exit 10 s after the queue is empty, and a stop sent once
    # they are gone stays in the broker and stops the next sweep's workers after one experiment.
    leftovers = surviving_workers(project)
    runs = {}
    for exp in experiments(project):
        if exp["rev"] not in before:
            values = exp["data"]["params"]["params.yaml"]["data"]
            runs[f"{values['lr']:g}"] = (model_md5(project, exp["rev"]), values.get("threads"))
    return seconds, runs, leftovers


def exp_refs(project: Path) -> set[str]:
    return set(git(project, "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split())


def experiments(project: Path) -> list[dict]:
    """Every experiment of `dvc exp show --json`, as {rev, data}."""
    found = []
    for baseline in json.loads(dvc(project, "exp", "show", "--json").stdout):
        for group in baseline.get("experiments") or []:
            for rev in group["revs"]:
                if rev.get("data"):
                    found.append({"rev": rev["rev"], "data": rev["data"]})
    return found


def surviving_workers(project: Path, wait: float = 20) -> list[str]:
    """DVC processes of ``project`` still alive ``wait`` seconds after its queue emptied."""
    time.sleep(wait)
    alive = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd, cwd = " ".join(p.info["cmdline"] or []), p.info["cwd"] or ""
        except psutil.Error:
            continue
        if "dvc" in cmd and (cwd.startswith(str(project)) or str(project) in cmd):
            alive.append(f"{p.pid}: {cmd[:120]}")
    return alive


def phase(title: str, measure, *args):
    """Run one phase, printing its title, its seconds and the load average around it."""
    print(f"{title} ... ({load()})", flush=True)
    result = measure(*args)
    print(f"  {result[0]:.1f}s ({load()})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mnist", default=str(REPO / "data/raw/mnist.pkl.gz"), help="mnist.pkl.gz")
    parser.add_argument(
        "--lrs", default="0.03,0.05,0.1,0.2", help="the sweep (default: %(default)s)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="queue workers (default: %(default)s)")
    parser.add_argument("--models", help="comma-separated, e.g. cnn (default: params.yaml's)")
    parser.add_argument("--epochs", type=int, help="(default: params.yaml's)")
    parser.add_argument("--rounds", type=int, default=1, help="of the 3 phases (default: 1)")
    parser.add_argument("--oversubscribed", action="store_true", help="also queue at threads=cores")
    args = parser.parse_args()
    lrs, n = args.lrs.split(","), cores()
    threads = max(1, n // args.jobs)
    mnist = Path(args.mnist).resolve()
    if not mnist.is_file():
        raise SystemExit(f"{mnist}: not found; run `make repro`, or pass --mnist PATH")

    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        project = copy_repo(root / "project")
        sources = yaml.safe_load((REPO / "sources.yaml").read_text())["sources"]
        local = next(s for s in sources if s.get("url") == "")  # the slot for a local copy
        models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
        set_params(
            project,
            **({"epochs": args.epochs} if args.epochs else {}),
            **({"models": {m: models[m] for m in args.models.split(",")}} if args.models else {}),
        )
        write_sources(project, local | {"url": str(mnist)})
        commit_all(project, "sweep bench")
        dvc(project, "repro")  # fetch, prepare, a baseline: what every experiment reuses
        commit_all(project, "baseline")
        chosen = yaml.safe_load((project / "params.yaml").read_text())
        print(
            f"{n} cores; {len(lrs)} experiments of {', '.join(chosen['models'])}, "
            f"{chosen['epochs']} epoch(s) unless a model sets its own, lr {args.lrs}"
        )

        ratios, full_ratios = [], []
        for r in range(1, args.rounds + 1):  # each round runs the three phases in turn
            alone_t, alone_md5 = phase(
                f"{r}: one by one, threads={threads}", one_by_one, project, lrs, threads
            )
            full_t, full_md5 = phase(f"{r}: one by one, threads={n}", one_by_one, project, lrs, n)
            queue_t, runs, leftovers = phase(
                f"{r}: queued, -j {args.jobs}, threads={threads}",
                queued,
                project,
                lrs,
                threads,
                args.jobs,
            )
            ratios.append(queue_t / alone_t)
            full_ratios.append(queue_t / full_t)
            same = all(runs[f"{float(lr):g}"][0] == alone_md5[lr] for lr in lrs)
            shown = all(shown == threads for _, shown in runs.values())
            pairs = [(md5, full_md5[lr][path]) for lr in lrs for path, md5 in alone_md5[lr].items()]
            differ = sum(a != b for a, b in pairs)
            print(f"  queued / one by one at threads={threads}: {ratios[-1]:.2f}")
            print(f"  queued / one by one at threads={n}: {full_ratios[-1]:.2f}")
            print(f"  queued models byte-identical to one by one at threads={threads}: {same}")
            print(f"  models at threads={threads} unlike threads={n}: {differ} of {len(pairs)}")
            print(f"  dvc exp show shows threads={threads} for every queued run: {shown}")
            print(f"  DVC processes alive 20s after the queue emptied: {leftovers or 'none'}")
            if not same:
                raise SystemExit("the queued models differ from those run one by one")
        print(
            f"median over {args.rounds} round(s): queued / one by one at threads={threads} "
            f"{statistics.median(ratios):.2f}, at threads={n} {statistics.median(full_ratios):.2f}"
        )
        if args.oversubscribed:
            over_t, _, _ = phase(
                f"queued, -j {args.jobs}, threads={n}", queued, project, lrs, n, args.jobs
            )
            print(f"  queued at threads={n} / one by one at threads={n}: {over_t / full_t:.2f}")
    finally:
        dvc(root / "project", "queue", "stop", "--kill", check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
