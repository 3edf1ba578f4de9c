"""The markdown summary table of metrics/summary.md."""

from __future__ import annotations

HEADER = (
    "| model | val loss | val acc | test acc | parameters | s/epoch | device |\n"
    "|---|---:|---:|---:|---:|---:|---|\n"
)


def summary_table(rows: dict[str, dict]) -> str:
    """One row per model from its merged evaluate and train-timing metrics."""
    lines = [
        f"| {name} | {m['val_loss']:.4f} | {m['val_acc']:.4f} | {m['test_acc']:.4f} | "
        f"{m['parameters']:,} | {m['seconds_per_epoch']:.2f} | {m['device']} |\n"
        for name, m in rows.items()
    ]
    return "# Model summary\n\n" + HEADER + "".join(lines)
