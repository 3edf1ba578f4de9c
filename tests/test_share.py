"""A trained model leaves the repo: pushed to a DVC remote, then fetched by another project
with `dvc artifacts get` and `dvc.api.open`, loaded from the file object, and it reads
samples/ exactly as the repo's own predict does. Real dvc, tiny synthetic data."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO
from project import commit_all, dvc, git, reproduced_project, run

pytestmark = pytest.mark.e2e

SAMPLES = sorted(str(p.relative_to(REPO)) for p in (REPO / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """`fast` trained, pushed to a local remote, and the remote committed: a shared repo."""
    root = tmp_path_factory.mktemp("share")
    project = reproduced_project(root, ("fast",))
    dvc(project, "remote", "add", "-d", "shared", str(root / "remote-store"))
    dvc(project, "push")
    commit_all(project, "a remote to share the models through")
    # `dvc artifacts get` resolves a name through its registered versions: GTO's git tags.
    git(project, "tag", "-a", "fast@v1.0.0", "-m", "Registered version v1.0.0 of fast")
    return project


def repo_predicts(project) -> dict[str, int]:
    """image -> digit, by the repo's own `python -m mnist_pipeline.predict`."""
    cmd = [sys.executable, "-m", "mnist_pipeline.predict", "--model", "fast", "--json"]
    out = run([*cmd, *(str(REPO / s) for s in SAMPLES)], project).stdout
    return {r["image"]: r["top"][0]["digit"] for r in json.loads(out)}


def test_dvc_artifacts_get_gives_the_model_file(project, tmp_path):
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    model = (project / "models" / "fast.pt").read_bytes()
    dvc(consumer, "artifacts", "get", str(project), "fast", "-o", "latest.pt")
    dvc(consumer, "artifacts", "get", str(project), "fast", "--rev", "v1.0.0", "-o", "v1.pt")
    assert (consumer / "latest.pt").read_bytes() == model == (consumer / "v1.pt").read_bytes()


def test_dvc_api_open_loads_and_predicts_like_the_repo(project):
    import dvc.api

    from mnist_pipeline.predict import load_model, predict_image, probabilities
    from mnist_pipeline.preprocess import to_mnist

    expected = repo_predicts(project)
    assert len(expected) == len(SAMPLES)
    with dvc.api.open("models/fast.pt", repo=str(project), mode="rb") as f:
        model, spec = load_model(f)
    pixels = [to_mnist(REPO / s) for s in SAMPLES]
    import numpy as np

    digits = probabilities(model, spec, np.stack(pixels)).argmax(1).tolist()
    assert dict(zip((str(REPO / s) for s in SAMPLES), digits, strict=True)) == expected

    # predict_image takes file objects for the image and the checkpoint alike.
    first = str(REPO / SAMPLES[0])
    with open(first, "rb") as image, open(project / "models" / "fast.pt", "rb") as ckpt:
        assert predict_image(image, ckpt)[0][0] == expected[first]
