"""Evaluation metrics on a hand-made model and data whose answers are known."""

import pytest
import torch
from torch.nn.functional import cross_entropy

from mnist_pipeline.evaluate import classification_metrics, confusion_matrix, predict
from mnist_pipeline.summary import summary_table


class FirstPixelIsTheClass(torch.nn.Module):
    """Predicts class round(9 * x[0]) with certainty: a model whose answers we know."""

    def forward(self, x):
        cls = (x.reshape(len(x), -1)[:, 0] * 9).round().long()
        return torch.nn.functional.one_hot(cls, 10).float() * 100  # logits


def test_metrics_of_a_known_model():
    targets = torch.tensor([0, 1, 2, 3, 3, 3, 9, 9])
    predicted = torch.tensor([0, 1, 2, 3, 3, 5, 9, 1])  # two mistakes: 3->5 and 9->1
    x = torch.zeros(8, 784)
    x[:, 0] = predicted / 9
    outputs = predict(FirstPixelIsTheClass(), x, bs=3, image_input=False, device="cpu")
    m = classification_metrics(outputs, targets, cross_entropy)
    assert torch.equal(m["predicted"], predicted)
    assert m["acc"] == pytest.approx(6 / 8)
    assert m["per_class_acc"]["3"] == pytest.approx(2 / 3)
    assert m["per_class_acc"]["9"] == pytest.approx(1 / 2)
    assert m["per_class_acc"]["4"] == 0.0  # no samples: reported as 0, not a division error
    assert m["confusion"][3][5] == 1 and m["confusion"][9][1] == 1 and m["confusion"][3][3] == 2
    assert sum(map(sum, m["confusion"])) == 8
    # Each wrong answer costs 100 nats (logit gap), each right one ~0: mean = 200 / 8.
    assert m["loss"] == pytest.approx(200 / 8, rel=1e-4)


def test_loss_does_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = torch.nn.Linear(784, 10)
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    losses = [
        classification_metrics(predict(model, x, bs, False, "cpu"), y, cross_entropy)["loss"]
        for bs in (1, 7, 50)
    ]
    assert max(losses) - min(losses) < 1e-6
    assert losses[0] == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item())


def test_confusion_matrix_counts():
    c = confusion_matrix(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2]))
    assert c[1, 1] == 1 and c[1, 2] == 1 and c[2, 2] == 1 and c.sum() == 3


def test_summary_table_has_one_row_per_model():
    row = dict(
        val_loss=0.3,
        val_acc=0.91,
        test_acc=0.9,
        parameters=7850,
        epochs=2,
        device="cpu",
    )
    table = summary_table({"logistic": row, "cnn": row})
    lines = table.strip().splitlines()
    assert lines[-2].startswith("| logistic | 0.3000 | 0.9100 | 0.9000 | 7,850 | 2 | cpu |")
    assert lines[-1].startswith("| cnn |")


def test_confusion_counts_and_png_put_the_true_label_on_the_same_axis(monkeypatch):
    """One cell, actual 2 predicted 7: the counts file names it so, dvc.yaml's confusion plot
    puts `actual` on y, and the PNG draws it in row 2 (y), column 7 (x), under 'true label'."""
    import yaml
    from conftest import REPO

    from mnist_pipeline import plots
    from mnist_pipeline.evaluate import confusion_csv

    confusion = [[0] * 10 for _ in range(10)]
    confusion[2][7] = 5
    rows = confusion_csv(confusion).splitlines()
    assert rows[0] == "actual,predicted,count" and len(rows) == 101
    assert [r for r in rows[1:] if not r.endswith(",0")] == ["2,7,5"]

    plot = next(
        p
        for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
        if isinstance(p, dict) and "plots/confusion_counts" in p
    )
    assert plot["plots/confusion_counts"]["y"] == "actual"
    assert plot["plots/confusion_counts"]["x"] == "predicted"

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    plots.confusion_png(confusion, "unused.png", "one cell")
    ax = drawn["fig"].axes[0]
    image = ax.get_images()[0].get_array()
    assert image[2, 7] == 5 and image.sum() == 5  # imshow: row = y, column = x
    assert ax.get_ylabel() == "true label" and ax.get_xlabel() == "predicted label"
