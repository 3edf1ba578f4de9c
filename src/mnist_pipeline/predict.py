"""predict: the digit in your own image(s), by a trained model of the pipeline.

  python -m mnist_pipeline.predict --model fast digit.png [more.png ...]
  mnist-predict --model fast --top 3 --json --show seen.png digit.png

Each image is made an MNIST digit first (see mnist_pipeline.preprocess). Prints one line per
image, the likeliest digits with their probabilities: digit.png: 7 (0.998), 2 (0.001), 3 (0.000)
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .errors import stage_main
from .preprocess import FIELD, to_mnist


def load_model(checkpoint_path, config=None, device="cpu"):
    """(model, its models.Model) from a checkpoint (a path or a binary file object, such as
    ``dvc.api.open("models/fast.pt", repo=..., mode="rb")``), loaded with weights_only=True;
    one made under other settings than ``config`` is said in one warning line: params.yaml
    may have changed before retraining."""
    from .checkpoints import load_checkpoint

    model, _, spec = load_checkpoint(checkpoint_path, config, device, strict=False)
    return model, spec


def probabilities(model, spec, pixels, device="cpu", bs: int = 256):
    """(N, 10) probabilities for uint8 images (N, 28, 28); the model sees p / 256 as in training."""
    import torch

    from .data import SCALE
    from .evaluate import predict

    x = torch.from_numpy(np.asarray(pixels, dtype=np.uint8).reshape(-1, FIELD * FIELD))
    outputs = predict(model, x.float().div_(SCALE), bs, spec.image_input, device)
    return outputs.softmax(1)  # logits, or log-probs (logistic_scratch): the same probabilities


def top_k(probs, k: int = 3) -> list[tuple[int, float]]:
    """The k likeliest (digit, probability) of one row of probabilities, best first."""
    values, digits = probs.topk(k)
    return [(int(d), float(p)) for d, p in zip(digits, values, strict=True)]


def predict_image(image, checkpoint_path, device="cpu", top: int = 3) -> list[tuple[int, float]]:
    """[(digit, probability), ...] best first for one image: a path, a binary file object, a
    PIL image or a uint8 array. ``checkpoint_path`` may be a path or a binary file object.

    Loads the checkpoint each call; for many images use load_model and probabilities.
    """
    is_path = isinstance(image, str | os.PathLike)
    name = os.fspath(image) if is_path else str(getattr(image, "name", None) or "image")
    model, spec = load_model(checkpoint_path, device=device)
    return top_k(probabilities(model, spec, to_mnist(image, name)[None], device)[0], top)


def write_show(pixels, path) -> None:
    """The model's inputs as one PNG: 28 px high, one 28x28 tile per image, left to right."""
    from PIL import Image

    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(list(pixels), axis=1)).save(tmp, format="PNG")


def top_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10:
        raise argparse.ArgumentTypeError(f"expected an integer 1..10, got {text!r}")
    return int(text)


@stage_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="mnist-predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--model", default="fast", help="a model under models: (default: fast)")
    parser.add_argument("--checkpoint", help="its weights (default: models/<model>.pt)")
    parser.add_argument("--top", type=top_arg, default=3, help="digits shown (default: 3)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.add_argument("--show", metavar="PNG", help="write what the model saw: a strip of 28x28")
    args = parser.parse_args(argv)

    from .params import load_params

    config = load_params(args.params).model(args.model)
    pixels = np.stack([to_mnist(path, path) for path in args.images])  # before torch loads

    from .device import select_device

    device = select_device(config.device)
    model, spec = load_model(args.checkpoint or f"models/{args.model}.pt", config, device)
    probs = probabilities(model, spec, pixels, device, 2 * config.bs)  # evaluate's batches
    if args.show:
        write_show(pixels, args.show)
    results = [
        {"image": path, "top": [{"digit": d, "prob": round(p, 6)} for d, p in top_k(row, args.top)]}
        for path, row in zip(args.images, probs, strict=True)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['image']}: " + ", ".join(f"{t['digit']} ({t['prob']:.3f})" for t in r["top"]))


if __name__ == "__main__":
    main()
