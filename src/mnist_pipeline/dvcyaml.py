"""Generate the per-model part of dvc.yaml from params.yaml: the report stage and `plots:`.

DVC templates `foreach` stages, but not a single stage's dependency list nor top-level plots,
so these list every model's files. Everything below MARKER in dvc.yaml is written by

    python -m mnist_pipeline.dvcyaml            # rewrite dvc.yaml after changing models:
    python -m mnist_pipeline.dvcyaml --check    # exit 1 if dvc.yaml is out of date (tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

MARKER = "  # --- generated from params.yaml by `python -m mnist_pipeline.dvcyaml`: do not edit ---"

REPORT = """\
  report:
    cmd: >-
      python stages/report.py --params params.yaml --prepared data/prepared
      --metrics-dir metrics --history-dir plots/history
      --summary metrics/summary.md --curves-png plots/curves.png --digits-png plots/digits.png
    deps:
      - stages/report.py
      - src/mnist_pipeline/data.py
      - src/mnist_pipeline/history.py
      - src/mnist_pipeline/params.py
      - src/mnist_pipeline/plots.py
      - src/mnist_pipeline/summary.py
      - data/prepared
{model_deps}
    params:
      - models
    outs:
      - metrics/summary.md:
          cache: false
      - plots/curves.png:
          cache: false
      - plots/digits.png:
          cache: false

# Drawn by `dvc plots show` / `dvc plots diff`.
plots:
  - Loss per epoch (train and validation):
      template: linear
      x: epoch
      y:
{loss_y}
  - Validation accuracy per epoch:
      template: linear
      x: epoch
      y:
{acc_y}
{confusion}
  - plots/curves.png
  - plots/digits.png
{pngs}
"""


def render_tail(models: list[str]) -> str:
    """The generated text below the marker for these model names."""
    each = lambda fmt: "\n".join(fmt.format(m=m) for m in models)  # noqa: E731
    return REPORT.format(
        model_deps=each(
            "      - metrics/{m}.json\n"
            "      - metrics/train/{m}.json\n"
            "      - plots/history/{m}.tsv"
        ),
        loss_y=each("        plots/history/{m}.tsv: [train_loss, val_loss]"),
        acc_y=each("        plots/history/{m}.tsv: val_acc"),
        confusion=each(
            "  - plots/predictions/{m}.csv:\n      template: confusion\n      x: actual\n"
            '      y: predicted\n      title: "{m}: validation confusion matrix"'
        ),
        pngs=each("  - plots/confusion/{m}.png\n  - plots/misclassified/{m}.png"),
    )


def render(dvc_text: str, models: list[str]) -> str:
    head, found, _ = dvc_text.partition(MARKER + "\n")
    if not found:
        raise SystemExit(f"dvc.yaml: marker line not found:\n{MARKER}")
    return head + MARKER + "\n" + render_tail(models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dvc-yaml", default="dvc.yaml")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args(argv)
    models = list(yaml.safe_load(Path(args.params).read_text())["models"])
    path = Path(args.dvc_yaml)
    current = path.read_text()
    wanted = render(current, models)
    if args.check:
        if current != wanted:
            print(
                f"{path} is out of date with {args.params}: run python -m mnist_pipeline.dvcyaml",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != wanted:
        from .atomic import write_text

        write_text(path, wanted)
        print(f"{path}: regenerated for {len(models)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
