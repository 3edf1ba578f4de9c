"""The markdown summary table of metrics/summary.md."""

from __future__ import annotations

HEADER = (
    "| model | val loss | val acc | test acc | parameters | epochs | device |\n"
    "|---|---:|---:|---:|---:|---:|---|\n"
)


def summary_table(rows: dict[str, dict]) -> str:
    """One row per model from its evaluation metrics.

    Wall-clock times stay out (they are in logs/train/): this file depends only on the
    models, so a retrain that reproduces a model byte for byte leaves it unchanged.
    """
    lines = [
        f"| {name} | {m['val_loss']:.4f} | {m['val_acc']:.4f} | {m['test_acc']:.4f} | "
        f"{m['parameters']:,} | {m['epochs']} | {m['device']} |\n"
        for name, m in rows.items()
    ]
    return "# Model summary\n\n" + HEADER + "".join(lines)
