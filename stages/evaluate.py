"""evaluate: score one trained model on the validation and test splits.

Outputs (each written atomically):
  metrics/<name>.json              val and test loss and accuracy, parameters, epochs, device
  metrics/details/<name>.json      per-class validation accuracy and the confusion matrix
  plots/predictions/<name>.csv     actual,predicted per validation sample (dvc confusion plot)
  plots/confusion/<name>.png       the confusion matrix
  plots/misclassified/<name>.png   misclassified validation digits, true and predicted labels
"""

import argparse

from mnist_pipeline.errors import stage_main

MISCLASSIFIED_SHOWN = 32


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--model", required=True, help="a model name under models: in params")
    parser.add_argument("--checkpoint", required=True, help="models/<name>.pt")
    parser.add_argument("--prepared", required=True, help="folder of the prepared tensors")
    parser.add_argument("--metrics", required=True, help="metrics JSON")
    parser.add_argument("--details", required=True, help="per-class accuracy + confusion JSON")
    parser.add_argument("--predictions", required=True, help="actual,predicted CSV")
    parser.add_argument("--confusion-png", required=True)
    parser.add_argument("--misclassified-png", required=True)
    args = parser.parse_args()

    from mnist_pipeline import atomic, plots
    from mnist_pipeline.data import load_split
    from mnist_pipeline.evaluate import classification_metrics, predict
    from mnist_pipeline.models import get_architecture
    from mnist_pipeline.params import load_params
    from mnist_pipeline.train import load_checkpoint, select_device

    config = load_params(args.params).model(args.model)
    device = select_device(config.device)
    model, ckpt = load_checkpoint(args.checkpoint, config, device)
    arch = get_architecture(config.arch)
    results = {}
    for split in ("valid", "test"):
        x, y = load_split(args.prepared, split)
        outputs = predict(model, x, 2 * config.bs, arch.image_input, device)
        results[split] = classification_metrics(outputs, y, arch.loss_func) | {"x": x, "y": y}
    valid, test = results["valid"], results["test"]

    atomic.write_json(
        args.metrics,
        {
            "val_loss": round(valid["loss"], 6),
            "val_acc": round(valid["acc"], 6),
            "test_loss": round(test["loss"], 6),
            "test_acc": round(test["acc"], 6),
            "parameters": ckpt["parameters"],
            "epochs": ckpt["config"]["epochs"],
            "device": ckpt["device"],
        },
    )
    atomic.write_json(
        args.details,
        {"val_per_class_acc": valid["per_class_acc"], "val_confusion": valid["confusion"]},
    )
    actual, predicted = valid["y"].tolist(), valid["predicted"].tolist()
    rows = "".join(f"{a},{p}\n" for a, p in zip(actual, predicted, strict=True))
    atomic.write_text(args.predictions, "actual,predicted\n" + rows)
    title = f"{args.model}: validation confusion matrix (accuracy {valid['acc']:.4f})"
    plots.confusion_png(valid["confusion"], args.confusion_png, title)
    wrong = [i for i, (a, p) in enumerate(zip(actual, predicted, strict=True)) if a != p]
    shown = wrong[:MISCLASSIFIED_SHOWN]
    plots.digit_grid(
        [valid["x"][i].numpy() for i in shown],
        [f"true {actual[i]} / pred {predicted[i]}" for i in shown],
        args.misclassified_png,
        f"{args.model}: first {len(shown)} of {len(wrong)} misclassified validation digits",
        colors=["firebrick"] * len(shown),
    )
    print(f"evaluate: {args.model} val_acc {valid['acc']:.4f} test_acc {test['acc']:.4f}")


if __name__ == "__main__":
    main()
