"""The model registry: every ``Model`` declared in this package, by the name params.yaml uses.

A model module in this folder declares ``MODELS = [Model("name", build, ...), ...]`` (see
``contract.py``). Adding a model is adding such a module, or an entry to an existing one, and
its entry under ``models:`` in params.yaml: nothing else names models.

Importing this package imports no torch. ``model_names`` reads the names from the modules'
source, so check_params validates params.yaml without the torch import; ``get_model`` imports
only the module that declares the name.
"""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

from ..errors import UserError, first_line

HERE = Path(__file__).parent


def _names_in(path: Path) -> list[str]:
    """The model names a module's ``MODELS`` list declares, read from its source: as bytes,
    so Python decodes them as it would (a ``coding:`` line, UTF-8 without one)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except SyntaxError as err:
        at = f" at line {err.lineno}" if err.lineno else ""
        raise UserError(f"{path}: syntax error{at}: {err.msg}") from None
    except ValueError as err:  # a null byte, before Python 3.12
        raise UserError(f"{path}: syntax error: {first_line(err)}") from None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if not any(isinstance(t, ast.Name) and t.id == "MODELS" for t in targets):
            continue
        if not isinstance(node.value, ast.List | ast.Tuple):
            raise UserError(f"{path}: MODELS must be a list written out: [Model('name', ...)]")
        names = []
        for entry in node.value.elts:
            name = None
            if isinstance(entry, ast.Call):  # Model("name", ...) or Model(name="name", ...)
                named = [k.value for k in entry.keywords if k.arg == "name"]
                name = (entry.args or named or [None])[0]
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                raise UserError(
                    f"{path}:{entry.lineno}: a MODELS entry must be Model('name', ...) "
                    "with its name written as a string"
                )
            names.append(name.value)
        return names
    return []  # a helper module that declares no model


@functools.cache
def _modules() -> dict[str, str]:
    """Model name -> the module (file stem) that declares it."""
    found: dict[str, str] = {}
    for path in sorted(HERE.glob("*.py")):  # __init__ and contract declare none
        for name in _names_in(path):
            if name in found:
                raise UserError(
                    f"{HERE}: model {name!r} is declared twice, in {found[name]}.py and "
                    f"{path.name}; rename one"
                )
            found[name] = path.stem
    return found


def model_names() -> tuple[str, ...]:
    """Every declared model name, module by module (files in name order)."""
    return tuple(_modules())


def get_model(name: str):
    """The ``Model`` declared as ``name``; an unknown name fails, listing the valid ones."""
    module_name = _modules().get(name)
    if module_name is None:
        raise UserError(f"unknown model architecture {name!r}; valid: {', '.join(_modules())}")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except Exception as err:  # the user's module: its error, in one line, naming the file
        raise UserError(
            f"{HERE / module_name}.py: cannot import it ({type(err).__name__}: {first_line(err)})"
        ) from None
    found = [m for m in getattr(module, "MODELS", ()) if getattr(m, "name", None) == name]
    if len(found) != 1:
        raise UserError(f"{HERE / module_name}.py: MODELS does not hold one Model named {name!r}")
    return found[0]
