"""The contract between a model and the pipeline.

A model module declares ``MODELS = [Model(...), ...]``. For each model, the pipeline promises:

- ``build()`` is called once per run, right after ``torch.manual_seed(config.seed)``, and the
  result moved to the device with ``.to(device)``;
- batches are float32 images in [0, 1), (N, 784), or (N, 1, 28, 28) with ``image_input``;
  labels are int64 (N,);
- ``fit_data(model, train_images)``, if given, runs once before training on a fresh start (not
  on a resumed run: its result is in the saved weights), with every rank under DDP;
- under torchrun the network is wrapped in DistributedDataParallel (an ``nn.Module``), each
  rank sees its shard of every global batch, and metrics are global;
- the optimizer and schedule are resumed from their ``state_dict`` after an interruption.

What each field must provide is in its comment; ``check`` refuses a model that breaks a rule
in one line that names the model and the rule.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch.nn.functional import cross_entropy

from ..errors import UserError, first_line

NETWORK_METHODS = ("parameters", "state_dict", "load_state_dict", "train", "eval", "to")
OPTIMIZER_METHODS = ("step", "zero_grad", "state_dict", "load_state_dict")
SCHEDULER_METHODS = ("step", "state_dict", "load_state_dict")


@dataclasses.dataclass(frozen=True)
class Model:
    """One model: everything the pipeline needs to build, train, evaluate and resume it."""

    # The name under models: in params.yaml (and the arch a model entry may name).
    name: str
    # () -> an nn.Module, or any object with parameters/state_dict/load_state_dict/train/
    # eval/to (the tutorial's from-scratch model); called with no arguments.
    build: Callable[[], Any]
    # loss(outputs, labels, reduction="mean") -> scalar tensor. Evaluation calls it with
    # reduction="sum"; training, with label_smoothing= where the config sets it (train_loss).
    loss: Callable[..., Any] = cross_entropy
    # (params, config) -> an optimizer with torch.optim's interface: param_groups (each with
    # "lr"), step, zero_grad, state_dict, load_state_dict. Any torch.optim optimizer works.
    # None: config.optimizer (sgd | adamw) with config.lr, momentum and weight_decay.
    optimizer: Callable[[Any, Any], Any] | None = None
    # (optimizer, config, steps_per_epoch) -> a scheduler with step, state_dict and
    # load_state_dict: any torch.optim.lr_scheduler, on any optimizer above or of optim.py.
    # None: config.scheduler.
    scheduler: Callable[[Any, Any, int], Any] | None = None
    # When the model's own scheduler steps: after every "epoch" (torch's convention; a
    # ReduceLROnPlateau steps on val_loss) or "batch".
    step_scheduler: str = "epoch"
    # True: batches arrive as (N, 1, 28, 28) images instead of (N, 784) rows.
    image_input: bool = False
    # (model, train_images (N, 784)) -> None: sets what the model learns from the data before
    # training, not by gradient (fast's whitening stem). Optional.
    fit_data: Callable[[Any, Any], None] | None = None

    def check(self, config) -> None:
        """Refuse, in one line, a model or a model config that breaks the contract."""
        if not callable(self.build):
            self._refuse("build must be a function that returns the network")
        if not callable(self.loss):
            self._refuse(f"its loss must be a function, not a {type(self.loss).__name__}")
        if self.step_scheduler not in ("epoch", "batch"):
            self._refuse(f"step_scheduler must be 'epoch' or 'batch', not {self.step_scheduler!r}")
        if not takes_keyword(self.loss, "reduction"):
            self._refuse("its loss must accept reduction= ('mean' or 'sum')")
        if config.label_smoothing and not takes_keyword(self.loss, "label_smoothing"):
            self._refuse(
                "label_smoothing is set, but its loss takes no label_smoothing=; "
                f"remove models.{config.name}.label_smoothing"
            )
        if self.optimizer is not None and config.optimizer != "sgd":
            self._refuse(
                f"it builds its own optimizer; remove models.{config.name}.optimizer "
                f"({config.optimizer!r})"
            )
        if self.scheduler is not None and config.scheduler != "none":
            self._refuse(
                f"it builds its own schedule; remove models.{config.name}.scheduler "
                f"({config.scheduler!r})"
            )

    def train_loss(self, config) -> Callable[..., Any]:
        """The loss training minimises: ``loss``, label-smoothed where the config sets it
        (val_loss and evaluation use plain ``loss``)."""
        if not config.label_smoothing:
            return self.loss
        return functools.partial(self.loss, label_smoothing=config.label_smoothing)

    def build_checked(self):
        """``build()``, its error or a network that breaks the contract as one line."""
        network = self.made("build()", self.build)
        self._check_methods("build()", network, NETWORK_METHODS)
        return network

    def made(self, what: str, factory: Callable, *args):
        """``factory(*args)``: one of the model's own functions, its error as one line."""
        try:
            return factory(*args)
        except Exception as err:
            self._refuse(f"{what} raised {type(err).__name__}: {first_line(err)}")

    def check_forward(self, network, xb) -> None:
        """One forward pass on a batch ``xb`` must give (N, 10) scores: a wrong input shape or
        output size is named before training, not deep inside it."""
        import torch

        network.eval()
        shape = tuple(xb.shape)
        hint = "" if self.image_input else "; a network of images wants image_input=True"
        try:
            with torch.no_grad():
                out = network(xb)
        except Exception as err:
            self._refuse(
                f"its network failed on a batch of shape {shape} "
                f"({type(err).__name__}: {first_line(err, 100)}){hint}"
            )
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(xb), 10):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            self._refuse(
                f"its network must map a batch of shape {shape} to ({len(xb)}, 10), got {got}"
            )

    def check_optimizer(self, opt) -> None:
        self._check_methods("its optimizer", opt, OPTIMIZER_METHODS)
        groups = getattr(opt, "param_groups", None)
        if not (isinstance(groups, list) and groups and all("lr" in g for g in groups)):
            self._refuse("its optimizer must have param_groups, a list of dicts with 'lr'")

    def check_scheduler(self, scheduler) -> None:
        from torch.optim.lr_scheduler import ReduceLROnPlateau  # fit's test: subclasses too

        self._check_methods("its scheduler", scheduler, SCHEDULER_METHODS)
        if isinstance(scheduler, ReduceLROnPlateau) and self.step_scheduler != "epoch":
            self._refuse("ReduceLROnPlateau steps on val_loss each epoch: remove step_scheduler")

    def _check_methods(self, what: str, obj: object, methods: tuple[str, ...]) -> None:
        missing = [m for m in methods if not callable(getattr(obj, m, None))]
        if missing:
            self._refuse(f"{what} returned a {type(obj).__name__} without {', '.join(missing)}")

    def _refuse(self, rule: str):
        raise UserError(f"model {self.name!r}: {rule}")


def takes_keyword(func: Callable, name: str) -> bool:
    """Whether ``func`` accepts the keyword argument ``name`` (or any, through **kwargs)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume it does
        return True
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )
