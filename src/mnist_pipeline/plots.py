"""Pictures drawn with matplotlib: each PNG has a title, axes and a legend and stands alone.

Drawing is most of what the evaluate stage does besides `import torch`. ``drawn_by(workers)``
queues the pictures asked for in its block, and leaving the block draws them in that many
forked processes: a picture's bytes depend only on its data, not on where it was drawn.
"""

from __future__ import annotations

import contextlib
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_path  # noqa: E402

DPI = 100
PNG_METADATA = {"Software": None}  # no version string: the bytes depend only on the data
_drawing: list[tuple] = []  # what the forked workers draw, by index


@contextlib.contextmanager
def drawn_by(workers: int):
    """Yield ``draw(picture_function, *args, **kwargs)``, which queues that picture; on leaving
    the block, draw the queue in ``workers`` forked processes (here, one by one, with 1 worker
    or 1 picture). Every picture is drawn before the first error, if any, is raised."""
    queued: list[tuple] = []
    yield lambda picture, *args, **kwargs: queued.append((picture, args, kwargs))
    draw_all(queued, workers)


def draw_all(queued: list[tuple], workers: int) -> None:
    """Draw each (function, args, kwargs) of ``queued``, in ``workers`` forked processes."""
    global _drawing
    _drawing, errors = queued, []
    try:
        if workers < 2 or len(queued) < 2:
            for index in range(len(queued)):
                try:
                    _draw_one(index)
                except Exception as err:
                    errors.append(err)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork: each worker starts with matplotlib imported and the pictures in memory
            # (nothing is pickled but an index); the workers draw and call no torch.
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(min(workers, len(queued)), mp_context=context) as pool:
                futures = [pool.submit(_draw_one, i) for i in range(len(queued))]
            errors = [f.exception() for f in futures]  # each with the worker's traceback
    finally:
        _drawing = []
    for error in errors:
        if error is not None:
            raise error


def _draw_one(index: int) -> None:
    draw, args, kwargs = _drawing[index]
    draw(*args, **kwargs)


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)


def digit_grid(images, titles, path, suptitle: str, cols: int = 8, colors=None) -> None:
    """A grid of 28x28 digits, each titled (e.g. 'label 7' or 'true 7 / pred 2').

    The digits are tiled into one image drawn on one axes: 32 separate axes cost about ten
    times as long to draw.
    """
    import numpy as np

    n = len(images)
    rows = max(1, -(-n // cols))
    cell = 36  # 28 pixels of digit and a white margin
    canvas = np.zeros((rows * cell, cols * cell), dtype=np.float32)
    for i, image in enumerate(images):
        top, left = (k * cell for k in divmod(i, cols))
        canvas[top + 6 : top + 34, left + 4 : left + 32] = np.reshape(image, (28, 28))
    fig, ax = plt.subplots(figsize=(cols * 1.3, rows * 1.5 + 0.6))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    for i, title in enumerate(titles):
        r, c = divmod(i, cols)
        color = colors[i] if colors else "black"
        ax.text(c * cell + 18, r * cell + 4, title, ha="center", fontsize=8, color=color)
    if n == 0:
        ax.text(cols * cell / 2, cell / 2, "none", ha="center", va="center")
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def confusion_png(confusion, path, title: str) -> None:
    """A 10x10 confusion matrix with counts in each cell and a colour bar as its legend."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(confusion, cmap="Blues")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            color = "white" if count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted label", ylabel="true label")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="validation samples")
    fig.tight_layout()
    _save(fig, path)


def curves_png(histories: dict[str, list[dict]], path) -> None:
    """Train/val loss and val accuracy per epoch, every model on the same two panels."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, (name, history) in enumerate(histories.items()):
        line = {"color": f"C{i}", "marker": "o"}
        epochs = [row["epoch"] for row in history]  # from 0, as the stage and vega count
        loss_ax.plot(epochs, [r["train_loss"] for r in history], "--", **line)
        loss_ax.plot(epochs, [r["val_loss"] for r in history], "-", **line, label=name)
        acc_ax.plot(epochs, [r["val_acc"] for r in history], "-", **line, label=name)
    loss_ax.plot([], [], "k--", label="train (dashed; as trained: label-smoothed where set)")
    loss_ax.plot([], [], "k-", label="validation (solid)")
    loss_ax.set(title="Loss per epoch", xlabel="epoch", ylabel="cross-entropy loss")
    acc_ax.set(title="Validation accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    _save(fig, path)
