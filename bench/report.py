"""The generated part of BENCHMARKS.md: the targets as ratios, then each measurement's table."""

from __future__ import annotations

import os
import platform

import torch
from orchestration import OLD_REV

PHASES = (
    "interpreter start and exit",
    "imports",
    "data load",
    "model build and checks",
    "resume key and state",
    "epochs",
    "scoring",
    "pictures",
    "output writes",
    "other",
)


def render(data_rows, orch, models, runs: int, overhead=None) -> str:
    out = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, CPU only. "
        f"Each figure is the median of {runs} runs measured side by side in one run; machines "
        "differ threefold in speed, so the targets are ratios.",
    ]
    out += targets(orch, models, overhead)
    if overhead:
        out += overhead_tables(overhead)
    if orch:
        o = orch
        out += [
            "",
            "## Start-up and orchestration (real MNIST, params.yaml as shipped)",
            "",
            "| measurement | seconds |",
            "|---|---:|",
            f'| `python -c "import torch"` | {o["torch"]:.2f} |',
            f'| `python -c "import torch._dynamo"` (a `torch.optim` optimizer imports it) | '
            f"{o['dynamo']:.2f} |",
            f"| `dvc --version` | {o['version']:.2f} |",
            f"| `dvc repro -f -s train@logistic` | {o['stage']:.2f} |",
            f"| its training seconds | {o['stage_train']:.2f} |",
            f"| no-op `dvc repro` | {o['noop']:.2f} |",
            f"| no-op `dvc repro`, old design ({OLD_REV}) | {o['noop_old']:.2f} |",
            f"| no-op `dvc repro`, a one-stage scratch repo (DVC alone) | {o['noop_floor']:.2f} |",
            "",
            "## Experiments: this design against the old one, side by side",
            "",
            f"The old design ({OLD_REV}, a `git worktree`) ran one evaluate stage per model "
            "and a report stage: 6 + 1 processes where this design runs one.",
            "",
            "| `dvc exp run` | old: wall | new: wall | old: training | new: training | "
            "new / old wall |",
            "|---|---:|---:|---:|---:|---:|",
            f"| `-S lr=…` (every model retrains) | {o['all_old']:.1f} | {o['all']:.1f} | "
            f"{o['all_old_train']:.1f} | {o['all_train']:.1f} | {o['all'] / o['all_old']:.2f}× |",
            f"| `-S +models.cnn.lr=…` (one model) | {o['one_old']:.1f} | {o['one']:.1f} | | | "
            f"{o['one'] / o['one_old']:.2f}× |",
            "",
            "## Memory: peak resident set of the train stage (`/usr/bin/time -v`)",
            "",
            "| model | peak RSS (MiB) |",
            "|---|---:|",
        ]
        out += [f"| {k} | {v:.0f} |" for k, v in o["memory"].items()]
    if models:
        m = models
        out += [
            "",
            "## Time to a good model: `fast` against the tutorial `cnn`, interleaved",
            "",
            "| seed | fast seconds | fast val acc | fast test acc | cnn seconds | cnn val acc |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for seed, ((fs, fa, ft), (cs, ca)) in enumerate(zip(m["fast"], m["cnn"], strict=True)):
            out.append(f"| {seed} | {fs:.2f} | {fa:.4f} | {ft:.4f} | {cs:.2f} | {ca:.4f} |")
        ratio = m["fast_seconds"] / m["cnn_seconds"]
        out += [
            "",
            f"fast: {m['fast_recipe']}; cnn: the tutorial's, {m['cnn_config'].epochs} epochs. "
            f"fast's val acc: median {m['fast_acc']:.4f}, min {m['fast_min_acc']:.4f}; test acc: "
            f"median {m['fast_test_acc']:.4f}, min {m['fast_min_test_acc']:.4f}; its "
            f"median seconds {ratio:.2f}x cnn's. Seconds: the wall of `train_model` (set-up, "
            "fast's stem fit, the epochs and their validation).",
        ]
    if data_rows:
        out += [
            "",
            "## Data path: seconds per training epoch (50,000 samples, bs 64)",
            "",
            "| model | raw tensor slicing | project loader | DataLoader(TensorDataset) | "
            "project / raw | DataLoader / raw |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in data_rows:
            out.append(
                f"| {r['model']} | {r['raw']:.2f} | {r['project']:.2f} | {r['dataloader']:.2f} "
                f"| {r['project'] / r['raw']:.3f}× | {r['dataloader'] / r['raw']:.2f}× |"
            )
    return "\n".join(out) + "\n"


def per_run(v: dict, key: str) -> str:
    return ", ".join(f"{x:.2f}" for x in v["runs"][key])


def targets(orch, models, overhead=None) -> list[str]:
    """The issue's targets: each a ratio measured in this run, met or not."""
    rows = []
    if overhead:
        v = overhead
        rows += [
            (
                "(wall of `dvc exp run -S lr=…` − its training seconds) / the floor repo's "
                f"`dvc exp run -S lr=…` (each run's: {per_run(v, 'exp_ratio')})",
                v["exp_ratio"],
                1.3,
            ),
            (
                "(wall of `dvc repro -f -s train@logistic` − its training seconds) / "
                f"`import torch` (each run's: {per_run(v, 'stage_ratio')})",
                v["stage_ratio"],
                1.3,
            ),
        ]
    if orch:
        o = orch
        rows += [
            ("no-op `dvc repro` / `dvc --version`", o["noop"] / o["version"], 5.5),
            (
                "(wall of `dvc exp run -S lr=…` − its training seconds) / `import torch`",
                (o["all"] - o["all_train"]) / o["torch"],
                15,
            ),
            ("one-model experiment wall, new / old design", o["one"] / o["one_old"], 1.0),
        ]
    if models:
        ratio = models["fast_seconds"] / models["cnn_seconds"]
        acc, low = models["fast_acc"], models["fast_min_acc"]
        rows.append(
            (
                f"`fast` / tutorial `cnn` training seconds (fast val acc median {acc:.2%}, "
                f"needs ≥ 99.0%; min {low:.2%}, needs ≥ 98.9%)",
                ratio if acc >= 0.99 and low >= 0.989 else float("inf"),
                0.4,
            )
        )
    out = ["", "## Targets", "", "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    out += [
        f"| {t} | {v:.2f} | ≤ {goal:g} | {'yes' if v <= goal else 'no'} |" for t, v, goal in rows
    ]
    if overhead:
        out += [
            "",
            "The floor repo's one stage (`dvc repro -f -s t1`: it only imports torch and writes a "
            f"byte) is {overhead['floor_stage_ratio']:.2f}× `import torch` in this run (each "
            f"run's: {per_run(overhead, 'floor_stage_ratio')}): the one-stage target's floor.",
        ]
    if orch:
        floor = orch["noop_floor"] / orch["version"]
        out += [
            "",
            f"DVC's own floor, the no-op `dvc repro` of a one-stage scratch repo, is {floor:.2f}× "
            f"`dvc --version` in this run; the pipeline's stages add the other "
            f"{orch['noop'] / orch['version'] - floor:.2f}×.",
        ]
    return out


def overhead_tables(v: dict) -> list[str]:
    """The experiment's fixed cost against the floor repo, and where one experiment's went."""
    s = v["split"]
    out = [
        "",
        "## Fixed cost: the project against a floor repo of its shape",
        "",
        "The floor is a scratch DVC repo: one stage without torch, then six stages and one more "
        "that only `import torch` and write a byte, all rerun by `dvc exp run -S lr=…`. "
        "Each figure is the median of its runs; the targets above are the medians of each "
        "run's ratio. "
        "DVC's own seconds are the wall less the stage processes' (a `python` on PATH logs when "
        "each starts and ends).",
        "",
        "| measurement | seconds |",
        "|---|---:|",
        f'| `python -c "import torch"` | {v["torch"]:.2f} |',
        f"| floor repo: `dvc exp run -S lr=…` | {v['floor']:.2f} |",
        f"| floor repo: DVC's own seconds in it | {v['floor_dvc']:.2f} |",
        f"| project: `dvc exp run -S lr=…` (every model retrains) | {v['all']:.2f} |",
        f"| project: its training seconds | {v['all_train']:.2f} |",
        f"| project: wall − training | {v['all'] - v['all_train']:.2f} |",
        f"| project: DVC's own seconds in it | {v['all_dvc']:.2f} |",
        f"| floor repo: `dvc repro -f -s t1` | {v['floor_stage']:.2f} |",
        f"| project: `dvc repro -f -s train@logistic` | {v['stage']:.2f} |",
        f"| project: its training seconds | {v['stage_train']:.2f} |",
        "",
        "## Where one experiment's seconds go (one more `dvc exp run -S lr=…` of each repo)",
        "",
        "Each stage process of the project ran under `bench/stagetrace.py`, which times every "
        "`import` and the library calls of each phase (each second counted once, in the "
        "innermost phase; the epochs are the `fit` loop with its validation, the history and "
        "resume writes after each epoch excluded). Interpreter start and exit: from the spawn "
        "to the script's first line and from its last line to the exit.",
        "",
        "| stage | wall | " + " | ".join(PHASES) + " |",
        "|---|---:|" + "---:|" * len(PHASES),
    ]
    for row in s["stages"]:
        cells = [f"{row[p]:.2f}" if p in row else "" for p in PHASES]
        out.append(f"| {row['stage']} | {row['wall']:.2f} | " + " | ".join(cells) + " |")
    stages = sum(row["wall"] for row in s["stages"])
    out.append(
        f"| all stages | {stages:.2f} | "
        + " | ".join(f"{sum(row.get(p, 0.0) for row in s['stages']):.2f}" for p in PHASES)
        + " |"
    )
    floor_stages = sum(row["wall"] for row in s["floor_stages"])
    out += [
        "",
        "| | project | floor repo |",
        "|---|---:|---:|",
        f"| `dvc exp run` wall | {s['wall']:.2f} | {s['floor_wall']:.2f} |",
        f"| its stage processes | {stages:.2f} | {floor_stages:.2f} |",
    ]
    for part in ("before", "between", "after", "all"):
        what = {
            "before": "DVC before the first stage",
            "between": "DVC between stages",
            "after": "DVC after the last stage",
            "all": "DVC's own, all",
        }[part]
        out.append(f"| {what} | {s['dvc'][part]:.2f} | {s['floor_dvc'][part]:.2f} |")
    floor_walls = ", ".join(f"{r['stage']} {r['wall']:.2f}" for r in s["floor_stages"])
    out += ["", f"Floor repo's stage processes (seconds): {floor_walls}."]
    return out
