"""predict: a `fast` model trained here on digit-like synthetic data reads its validation digits
back from PNG files as they are, inverted, and scaled up with a margin; bad inputs are one line.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_params
from PIL import Image, ImageDraw
from torch.utils.data import TensorDataset

from mnist_pipeline import atomic
from mnist_pipeline.checkpoints import checkpoint
from mnist_pipeline.evaluate import predict as evaluate_predict
from mnist_pipeline.params import parse_params
from mnist_pipeline.predict import main, predict_image
from mnist_pipeline.train import train_model

N_TRAIN, N_VALID = 2500, 200
FORMS = ("as-is", "inverted", "scaled", "scaled-inverted")


def render(points: np.ndarray) -> np.ndarray:
    """A stroke through points in [0, 1]^2 in MNIST form: longer side 20 px, 28x28 field,
    centre of mass at (14, 14), background 0; uint8."""
    canvas = Image.new("L", (112, 112))
    ImageDraw.Draw(canvas).line([tuple(p) for p in 8 + points * 96], fill=255, width=10)
    rows, cols = np.nonzero(np.asarray(canvas))
    box = canvas.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    scale = 20 / max(box.size)
    size = (max(1, round(box.width * scale)), max(1, round(box.height * scale)))
    digit = np.asarray(box.resize(size, Image.Resampling.BOX), dtype=np.float64)
    r, c = np.indices(digit.shape)
    top = round(14 - (r * digit).sum() / digit.sum())
    left = round(14 - (c * digit).sum() / digit.sum())
    field = np.zeros((28, 28), np.uint8)
    field[top : top + size[1], left : left + size[0]] = digit.round()
    return field


def digits(n: int, templates: np.ndarray, rng: np.random.Generator):
    """n samples: a class's stroke, jittered a little, shifted by up to 1 px, ink 75-100%."""
    y = rng.integers(0, 10, n)
    jittered = np.clip(templates[y] + rng.normal(0, 0.03, (n, 5, 2)), 0, 1)
    pixels = np.stack([render(points) for points in jittered])
    pixels = np.round(pixels * rng.uniform(0.75, 1.0, (n, 1, 1))).astype(np.uint8)
    for i, (dy, dx) in enumerate(rng.integers(-1, 2, (n, 2))):
        pixels[i] = np.roll(pixels[i], (dy, dx), axis=(0, 1))
    x = torch.from_numpy(pixels.reshape(n, 784)).float() / 256  # exactly p / 256, as prepared
    return x, torch.from_numpy(y)


def form(p: np.ndarray, name: str) -> np.ndarray:
    if name.startswith("scaled"):  # 28 -> 80 px, with a 30 px margin: 140x140
        p = np.pad(np.asarray(Image.fromarray(p).resize((80, 80), Image.Resampling.BILINEAR)), 30)
    return 255 - p if name.endswith("inverted") else p


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two spinning threads stall each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fast model trained on synthetic digits, its params and checkpoint, and the validation
    digits written as PNG files in every form."""
    work = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    templates = rng.random((10, 5, 2))
    x_train, y_train = digits(N_TRAIN, templates, rng)
    x_valid, y_valid = digits(N_VALID, templates, rng)
    fast = {"arch": "fast", "bs": 64}
    raw = tiny_params(models={"fast": fast}, epochs=2)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    config = parse_params(raw).model("fast")
    train = TensorDataset(x_train, y_train)
    model, _ = train_model(config, train, TensorDataset(x_valid, y_valid), "cpu")
    atomic.torch_save(checkpoint(model, config, "cpu"), work / "models" / "fast.pt")
    expected = evaluate_predict(model, x_valid, 2 * config.bs, True, "cpu").argmax(1)
    pixels = (x_valid * 256).to(torch.uint8).numpy().reshape(-1, 28, 28)
    files = {f: [f"{f}/valid-{i:03d}.png" for i in range(N_VALID)] for f in FORMS}
    for f in FORMS:
        (work / f).mkdir()
        for name, p in zip(files[f], pixels, strict=True):
            Image.fromarray(form(p, f)).save(work / name)
    return SimpleNamespace(work=work, y=y_valid, expected=expected, pixels=pixels, files=files)


def cli(work, *args: str, prefix=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *prefix] if prefix else [sys.executable, "-m", "mnist_pipeline.predict"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(  # a timeout: reading a FIFO once hung here
        [*cmd, *args], cwd=work, capture_output=True, text=True, env=env, timeout=300
    )


def test_json_answers_equal_evaluate_for_mnist_form_images(trained):
    result = cli(trained.work, "--model", "fast", "--json", *trained.files["as-is"])
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == trained.files["as-is"]
    for a in answers:
        probs = [t["prob"] for t in a["top"]]
        assert len(a["top"]) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    predicted = torch.tensor([a["top"][0]["digit"] for a in answers])
    assert torch.equal(predicted, trained.expected)
    assert (predicted == trained.y).float().mean() >= 0.97


@pytest.mark.parametrize("name", FORMS[1:])
def test_inverted_and_scaled_images_are_read_right(trained, name, capsys, monkeypatch):
    monkeypatch.chdir(trained.work)
    main(["--model", "fast", *trained.files[name]])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == N_VALID  # one line per image
    line = re.compile(r"^(\S+): (\d) \((\d\.\d{3})\), (\d) \(\d\.\d{3}\), (\d) \(\d\.\d{3}\)$")
    matches = [line.match(s) for s in lines]
    assert all(matches), lines[:3]
    assert [m[1] for m in matches] == trained.files[name]
    predicted = torch.tensor([int(m[2]) for m in matches])
    assert (predicted == trained.y).float().mean() >= 0.97


def test_show_writes_what_the_model_saw(trained):
    files = trained.files["scaled-inverted"][:2] + trained.files["as-is"][:1]
    result = cli(trained.work, "--model", "fast", "--top", "1", "--show", "seen.png", *files)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    seen = np.asarray(Image.open(trained.work / "seen.png"))
    assert seen.shape == (28, 3 * 28) and seen.dtype == np.uint8
    assert np.array_equal(seen[:, 56:], trained.pixels[0])  # MNIST form is used unchanged


def test_library_takes_a_path_an_image_or_an_array(trained):
    ckpt = trained.work / "models" / "fast.pt"
    path = trained.work / trained.files["inverted"][0]
    top = predict_image(path, ckpt)
    assert len(top) == 3 and top[0][0] == int(trained.expected[0])
    assert predict_image(Image.open(path), ckpt) == top
    assert predict_image(np.asarray(Image.open(path)), ckpt, top=1) == top[:1]


DENY_OPEN = """
import builtins, errno, runpy, sys
real_open = builtins.open
def open(file, *args, **kwargs):
    if str(file) == sys.argv[-1]:
        raise PermissionError(errno.EACCES, "Permission denied", str(file))
    return real_open(file, *args, **kwargs)
builtins.open = open
runpy.run_module("mnist_pipeline.predict", run_name="__main__", alter_sys=True)
"""


def unreadable(w):
    (w / "secret.png").write_bytes((w / "as-is" / "valid-000.png").read_bytes())
    if os.geteuid() == 0:  # root reads any file: deny the open itself
        return ["secret.png"], ("-c", DENY_OPEN)
    (w / "secret.png").chmod(0)
    return ["secret.png"], ()


def bad(name: str, content: bytes | None = None, size=(28, 28), colour=0):
    def setup(w):
        if content is not None:
            (w / name).write_bytes(content)
        elif name.endswith(".png"):
            Image.new("L", size, colour).save(w / name)
        return [name], ()

    return setup


def fifo(w):
    os.mkfifo(w / "pipe.png")  # nothing ever writes to it: opening it to read would block
    return ["pipe.png"], ()


def header_only_png(path, width: int, height: int):
    """A PNG of a few bytes whose header claims width x height 8-bit gray pixels: only a
    check made before decoding can name its size (decoding would find no pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
    path.write_bytes(png + chunk(b"IEND", b""))
    return [path.name], ()


BAD = {  # id: (setup -> (args, interpreter prefix), expected in the message)
    "missing image": (lambda w: (["nothing.png"], ()), "nothing.png: image file not found"),
    "a folder": (lambda w: (["."], ()), ".: not a regular file (a folder); give an image file"),
    "a FIFO": (fifo, "pipe.png: not a regular file (a FIFO); give an image file"),
    "a device": (lambda w: (["/dev/zero"], ()), "/dev/zero: not a regular file (a character"),
    "too many pixels": (
        lambda w: header_only_png(w / "big.png", 13000, 13000),  # 169 MP: Pillow only warned
        "big.png: 13000x13000 is 169000000 pixels; predict reads at most 16777216 (4096x4096)",
    ),
    "past Pillow's limit": (
        lambda w: header_only_png(w / "huge.png", 20000, 20000),
        "huge.png: more than 178956970 pixels; predict reads at most 16777216 (4096x4096)",
    ),
    "not an image": (bad("notes.png", b"just text\n"), "notes.png: not an image"),
    "truncated image": (
        lambda w: bad("cut.png", (w / "scaled" / "valid-000.png").read_bytes()[:200])(w),
        "cut.png: cannot read image",
    ),
    "unreadable image": (unreadable, "secret.png: cannot read image (Permission denied)"),
    "blank image": (bad("blank.png"), "blank.png: no ink found"),
    "blank paper": (bad("paper.png", size=(300, 200), colour=230), "paper.png: no ink found"),
    "missing checkpoint": (
        lambda w: (["--checkpoint", "gone.pt", "as-is/valid-000.png"], ()),
        "gone.pt: model file not found",
    ),
    "unknown model": (
        lambda w: (["--model", "resnet", "as-is/valid-000.png"], ()),
        "no model 'resnet' under models:",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_inputs_are_one_line_naming_the_file(trained, case, tmp_path):
    setup, message = BAD[case]
    for name in ("params.yaml", "models", "as-is", "scaled"):
        (tmp_path / name).symlink_to(trained.work / name)
    args, prefix = setup(tmp_path)
    model = [] if "--model" in args else ["--model", "fast"]
    result = cli(tmp_path, *model, *args, prefix=prefix)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr


def test_every_pillow_mode_converts_or_is_refused_in_one_line(trained, tmp_path):
    """LAB (a TIFF, as in issue 18: Pillow cannot convert it to L) reads as its grayscale
    original, and so does every other mode Pillow makes (to_mnist's ValueError guard makes
    any other a one-line refusal)."""
    from mnist_pipeline.errors import UserError
    from mnist_pipeline.preprocess import to_mnist

    gray = Image.fromarray(form(trained.pixels[0], "scaled-inverted"))
    gray.convert("RGB").convert("LAB").save(tmp_path / "lab.tif")
    assert Image.open(tmp_path / "lab.tif").mode == "LAB"
    expected = to_mnist(gray)
    assert cosine(to_mnist(tmp_path / "lab.tif", "lab.tif"), expected) > 0.999
    result = cli(trained.work, "--model", "fast", "--top", "1", str(tmp_path / "lab.tif"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp_path / 'lab.tif'}: {int(trained.expected[0])} (")
    deep = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # the same, in 16 bits
    for mode in MODES:
        # Pillow's I;16 -> I;16L clips at 255: through I, the 16-bit values stay.
        sources = [deep if mode == "I;16" else deep.convert("I")] if mode[0] == "I" else [gray]
        image = next(
            converted
            for source in (*sources, gray.convert("RGBA"), gray.convert("LA"))
            if (converted := convert_or_none(source, mode)) is not None
        )
        assert image.mode == mode
        try:
            pixels = to_mnist(image, f"{mode}.img")
        except UserError as err:  # a refusal would be one line naming the image
            pytest.fail(f"{mode} refused: {err}")
        # Bilevel "1" is dithered: the digit, but grainy.
        assert cosine(pixels, expected) > (0.8 if mode == "1" else 0.99), mode


# Every mode Pillow 13 makes (its BGR;* modes are gone).
MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "F", "LA", "PA")
MODES += ("RGBX", "RGBa", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")


def convert_or_none(image, mode: str):
    try:
        return image if image.mode == mode else image.convert(mode)
    except ValueError:
        return None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_real_mnist_digits_come_back_in_mnist_form(tmp_path):
    """The 10 real MNIST test digits of samples/, through the same forms: used unchanged as
    they are, and recovered from the other forms (a digit 3 px off centre scores <= 0.62)."""
    from conftest import REPO

    from mnist_pipeline.preprocess import to_mnist

    samples = sorted((REPO / "samples").glob("*.png"))
    assert len(samples) == 10
    scores = []
    for path in samples:
        original = np.asarray(Image.open(path).convert("L"))
        assert np.array_equal(to_mnist(Image.open(path)), original)
        for name in FORMS[1:]:
            scores.append(cosine(to_mnist(Image.fromarray(form(original, name))), original))
    assert min(scores) > 0.75 and np.median(scores) > 0.9, scores


@pytest.fixture(scope="module")
def logistic(tmp_path_factory):
    """A logistic model with large random weights (probabilities far from uniform, so they
    move with any change of the input's scale), its params, and the first 20 validation
    digits of a prepared synthetic file as 28x28 PNGs."""
    from conftest import make_mnist, write_pickle_gz

    from mnist_pipeline.data import prepare
    from mnist_pipeline.models import get_model

    work = tmp_path_factory.mktemp("logistic")
    write_pickle_gz(work / "mnist.pkl.gz", make_mnist((64, 20, 8)))
    prepare(work / "mnist.pkl.gz", work / "prepared")
    raw = tiny_params(models={"logistic": {"arch": "logistic"}})
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    config = parse_params(raw).model("logistic")
    torch.manual_seed(0)
    model = get_model("logistic").build()
    with torch.no_grad():
        model.lin.weight.mul_(40)
    atomic.torch_save(checkpoint(model, config, "cpu"), work / "models" / "logistic.pt")
    pixels = torch.load(work / "prepared" / "valid.pt", weights_only=True)["x"]
    pixels = pixels.reshape(-1, 28, 28).numpy()
    files = []
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(work / f"v{i:02d}.png")
        files.append(f"v{i:02d}.png")
    return SimpleNamespace(work=work, model=model, pixels=pixels, files=files)


def test_probabilities_equal_a_forward_pass_by_hand_on_pixels_over_256(logistic):
    """Expected answers computed apart from predict: the prepared uint8 pixels / 256 (as
    training sees them), the linear layer and softmax written out in float64."""
    result = cli(logistic.work, "--model", "logistic", "--json", "--top", "10", *logistic.files)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    got = torch.zeros(len(logistic.files), 10, dtype=torch.float64)
    for i, answer in enumerate(json.loads(result.stdout)):
        for t in answer["top"]:
            got[i, t["digit"]] = t["prob"]
    w = logistic.model.lin.weight.detach().double()
    b = logistic.model.lin.bias.detach().double()

    def by_hand(divisor: float) -> torch.Tensor:
        x = torch.from_numpy(logistic.pixels.reshape(-1, 784)).double() / divisor
        return torch.softmax(x @ w.T + b, dim=1)

    assert torch.allclose(got, by_hand(256), atol=2e-6, rtol=0), (got - by_hand(256)).abs().max()
    # The test can tell the scales apart: pixels / 255 is far outside the tolerance.
    assert (by_hand(255) - by_hand(256)).abs().max() > 1e-3


def test_predict_warns_in_one_line_for_a_model_trained_under_other_settings(logistic, tmp_path):
    raw = yaml.safe_load((logistic.work / "params.yaml").read_text()) | {"lr": 0.3}
    (logistic.work / "other.yaml").write_text(yaml.safe_dump(raw))
    args = ("--model", "logistic", "--top", "1", logistic.files[0])
    result = cli(logistic.work, "--params", "other.yaml", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "warning: models/logistic.pt: model 'logistic' was trained with other settings than "
        "params.yaml gives it (lr 0.1 in the checkpoint, 0.3 in params.yaml); retrain it: "
        "dvc repro -f -s train@logistic\n"
    )
    assert result.stdout.startswith(f"{logistic.files[0]}: ")
    good = cli(logistic.work, *args)  # the good case: the settings it was trained with
    assert good.returncode == 0 and good.stderr == "" and good.stdout == result.stdout


def test_show_refuses_a_fifo_in_one_line_and_leaves_it(logistic):
    os.mkfifo(logistic.work / "seen.png")
    result = cli(logistic.work, "--model", "logistic", "--show", "seen.png", logistic.files[0])
    assert result.returncode == 1
    assert result.stderr == (
        "error: seen.png: a FIFO, not a regular file; an output replaces only one\n"
    )
    assert (logistic.work / "seen.png").exists() and not (logistic.work / "seen.png").is_file()
