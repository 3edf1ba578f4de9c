"""plots.drawn_by: pictures queued in the block and drawn in forked workers on leaving it."""

import pytest

from mnist_pipeline import plots
from mnist_pipeline.errors import UserError

HISTORY = [{"epoch": 0, "train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.5}]


def draw_now(picture, *args, **kwargs) -> None:
    picture(*args, **kwargs)


def draw_some(folder, draw=draw_now) -> None:
    confusion = [[(i * 7 + j * 3) % 11 for j in range(10)] for i in range(10)]
    draw(plots.confusion_png, confusion, folder / "confusion.png", "a confusion matrix")
    grid = [[i / 784 for i in range(784)]] * 3
    draw(plots.digit_grid, grid, ["a", "b", "c"], folder / "d.png", "d")
    draw(plots.curves_png, {"m": HISTORY}, folder / "curves.png")


def test_pictures_drawn_by_workers_are_the_bytes_drawn_here(tmp_path):
    here, there = tmp_path / "here", tmp_path / "workers"
    draw_some(here)  # no drawn_by: drawn at once
    with plots.drawn_by(2) as draw:
        draw_some(there, draw)
        assert not there.exists()  # queued, not drawn yet
    names = sorted(p.name for p in here.iterdir())
    assert names == sorted(p.name for p in there.iterdir()) and len(names) == 3
    for name in names:
        assert (here / name).read_bytes() == (there / name).read_bytes(), name


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_picture_raises_after_the_others_are_drawn(tmp_path, workers):
    (tmp_path / "folder.png").mkdir()  # an output may not replace a folder
    with pytest.raises(UserError, match="folder.png"), plots.drawn_by(workers) as draw:
        draw(plots.curves_png, {"m": HISTORY}, tmp_path / "folder.png")
        draw_some(tmp_path, draw)
    assert (tmp_path / "curves.png").is_file()
