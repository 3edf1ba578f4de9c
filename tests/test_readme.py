"""README.md's Layout names every module of the package, and no module that is gone."""

import re

from conftest import REPO

PACKAGE = REPO / "src" / "mnist_pipeline"


def layout() -> str:
    """The code block under README.md's "## Layout" heading."""
    section = (REPO / "README.md").read_text().split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def test_readme_layout_names_every_module_of_the_package():
    named = set(re.findall(r"[\w]+\.py\b", layout()))
    modules = {p.name for p in [*PACKAGE.glob("*.py"), *(PACKAGE / "models").glob("*.py")]}
    assert modules - named == set(), "README.md's Layout misses these modules"
    assert named - modules == set(), "README.md's Layout names modules that do not exist"
