"""The example output in docs/predict.md is what its command prints with the shipped model."""

from __future__ import annotations

import hashlib
import re
import shlex

import pytest
import yaml
from conftest import REPO

from mnist_pipeline.predict import main as predict_main

LINE = re.compile(r"^(?P<image>\S+): (?P<top>.+)$")


def shipped_model_or_skip(name: str) -> str:
    """The md5 of models/<name>.pt if it is the file dvc.lock records (`make repro`), else skip."""
    path = REPO / "models" / f"{name}.pt"
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    recorded = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    if not path.is_file():
        pytest.skip(f"{path.relative_to(REPO)} is not here: run `make repro` first")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != recorded[f"models/{name}.pt"]:
        pytest.skip(f"models/{name}.pt is not the one dvc.lock records: run `make repro`")
    return md5


def example() -> tuple[list[str], list[str], str]:
    """(the command's arguments, the output lines, the md5 of the model that printed them) of
    docs/predict.md's first example."""
    text = (REPO / "docs" / "predict.md").read_text()
    command, output = re.search(r"```bash\n(.+?)```\s*```\n(.+?)```", text, re.S).groups()
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:3] == ["python", "-m", "mnist_pipeline.predict"], argv
    md5 = re.search(r"`models/fast.pt`, md5 ([0-9a-f]{32})", text)
    assert md5, "docs/predict.md names no model as `models/fast.pt`, md5 <32 hex digits>"
    return argv[3:], output.strip().splitlines(), md5[1]


def parse(lines: list[str]) -> dict[str, list[tuple[int, float]]]:
    parsed = {}
    for line in lines:
        m = LINE.match(line)
        assert m, line
        tops = re.findall(r"(\d) \((\d\.\d+)\)", m["top"])
        parsed[m["image"]] = [(int(d), float(p)) for d, p in tops]
    return parsed


def test_predict_md_example_is_what_the_shipped_model_prints(capsys, monkeypatch):
    md5 = shipped_model_or_skip("fast")
    args, documented, documented_md5 = example()
    monkeypatch.chdir(REPO)
    predict_main(args)
    printed = parse(capsys.readouterr().out.strip().splitlines())
    documented = parse(documented)
    assert list(printed) == list(documented)
    # Another CPU type trains other bytes: its model still reads each digit as documented.
    for image, top in documented.items():
        assert printed[image][0][0] == top[0][0], image
    if md5 != documented_md5:
        pytest.skip("models/fast.pt was trained on a CPU of another type than the documented one")
    for image, top in documented.items():
        assert [d for d, _ in printed[image]] == [d for d, _ in top], image
        # probabilities as printed, give or take the last bits of the evaluating CPU
        assert all(
            abs(p - q) <= 0.002 for (_, p), (_, q) in zip(printed[image], top, strict=True)
        ), image
