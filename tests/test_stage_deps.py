"""Each stage's deps in dvc.yaml list exactly the modules of ours that its script imports.

DVC reruns a stage when a dep changes, so a missing module leaves stale outputs that claim to
be up to date, and an extra one reruns work for nothing. Imports are followed through our
package, lazy ones (inside functions) included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PACKAGE = "mnist_pipeline"
SRC = Path("src") / PACKAGE
MODELS = SRC / "models"  # a package: the registry imports its modules by name, so a stage
# that imports any of it depends on the whole folder
# Modules that cannot change any output, so no stage lists them (an edit reruns nothing):
NEVER_DEPS = {
    SRC / "__init__.py": "empty",
    SRC / "errors.py": "decides only how an error is printed, never an output's bytes",
}
# Imports that cannot change an output of a stage that reaches the target only through them:
NAME_CHECK_ONLY = {
    (SRC / "params.py", MODELS): "params.py reads model names only, to refuse an unknown one",
}


def imported_modules(path: Path) -> set[Path]:
    """The files of our package (or the models folder) that ``path`` imports directly."""
    found = set()
    package = path.relative_to(REPO).parent.parts[len(SRC.parts) - 1 :]  # e.g. (pkg, models)
    in_package = bool(package) and package[0] == PACKAGE
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: only inside the package
                assert in_package, f"{path}: relative import outside {PACKAGE}"
                parent = ".".join(package[: len(package) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) >= 2:
                module = SRC / f"{parts[1]}.py"
                if (REPO / module).exists():
                    found.add(module)
                elif (REPO / SRC / parts[1]).is_dir():
                    found.add(SRC / parts[1])
    return found


def closure(script: Path) -> set[Path]:
    """Every module of our package (or its models folder) the script reaches through imports."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        current = todo.pop()
        files = sorted((REPO / current).glob("*.py")) if current == MODELS else [REPO / current]
        for module in set().union(*(imported_modules(f) for f in files)):
            if module not in seen and (current, module) not in NAME_CHECK_ONLY:
                seen.add(module)
                todo.append(module)
    return seen


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_body(stage: dict) -> dict:
    return stage.get("do", stage)  # a foreach stage's template is under `do`


def script_of(stage: dict) -> Path:
    match = re.search(r"python (stages/\w+\.py)", stage_body(stage)["cmd"])
    assert match, f"no stage script in {stage_body(stage)['cmd']!r}"
    return Path(match.group(1))


@pytest.mark.parametrize("name", list(stages()))
def test_deps_are_exactly_the_modules_the_script_imports(name):
    stage = stages()[name]
    script = script_of(stage)
    deps = {Path(d) for d in stage_body(stage)["deps"]}
    code_deps = {d for d in deps if d.suffix == ".py" or d == MODELS}
    wanted = (closure(script) - set(NEVER_DEPS)) | {script}
    assert not wanted - code_deps, f"{name}: deps miss {sorted(map(str, wanted - code_deps))}"
    assert not code_deps - wanted, (
        f"{name}: deps list unused {sorted(map(str, code_deps - wanted))}"
    )


def test_imports_are_followed_lazily_and_through_modules():
    """The follower itself: the train stage imports train.py lazily, which imports optim.py."""
    reached = closure(Path("stages/train.py"))
    assert SRC / "train.py" in reached  # imported inside run(), not at the top
    assert SRC / "checkpoints.py" in reached  # imported inside run(), after training
    assert SRC / "train.py" not in closure(Path("stages/evaluate.py"))
    assert MODELS in reached and MODELS in closure(Path("stages/evaluate.py"))
    assert SRC / "optim.py" in reached  # through train.py
    # evaluate builds every model, and fast's module builds its own AdamW: through it only
    # (ScratchSGD lives in models/tutorial.py)
    assert SRC / "optim.py" in closure(Path("stages/evaluate.py"))
    assert MODELS not in closure(Path("stages/fetch.py"))  # only params.py's name check


# Keys the train stage reads that cannot change its outputs, so changing one retrains nothing:
NOT_TRAIN_PARAMS = {
    "resume": "decides only whether an interrupted run continues; the result is the same",
    "distributed.rdzv_endpoint": "where the nodes meet, not what they compute",
    "distributed.timeout": "how long to wait for the nodes, not what they compute",
    "distributed.max_restarts": "a restarted run resumes to the same result",
}


def test_train_stage_declares_every_param_that_decides_its_outputs():
    from mnist_pipeline.params import DISTRIBUTED, OTHER_TOP, SHARED

    declared = set(stage_body(stages()["train"])["params"])
    every_key = {*SHARED, *OTHER_TOP, *(f"distributed.{k}" for k in DISTRIBUTED)}
    wanted = (every_key - set(NOT_TRAIN_PARAMS)) | {"models.${key}"}
    assert wanted <= declared, f"train params miss {sorted(wanted - declared)}"
    assert not declared & set(NOT_TRAIN_PARAMS), "a key that decides no output retrains"


def test_dvc_lock_holds_no_stage_that_dvc_yaml_lost():
    """DVC keeps a removed stage's entry in dvc.lock, and every command parses it again.
    (An entry of a model removed from params.yaml is the user's to keep or drop.)"""
    defined = stages()
    for locked in yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]:
        base, at, _ = locked.partition("@")
        assert base in defined and bool(at) == ("foreach" in defined[base]), f"stale: {locked}"
