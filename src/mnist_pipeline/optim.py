"""Optimizers that every ``torch.optim.lr_scheduler`` takes, without importing torch._dynamo;
and ``recipe``, the one place that picks a model's optimizer and schedule.

``SGD`` and ``AdamW`` are ``torch.optim.Optimizer``s, so a torch scheduler accepts them. They
skip ``Optimizer.__init__`` and replace the four methods torch marks ``@torch._disable_dynamo``
(``add_param_group``, ``zero_grad``, ``state_dict``, ``load_state_dict``): calling one imports
``torch._dynamo``, which costs each stage process the time BENCHMARKS.md measures. Their step
calls ``torch.optim.sgd.sgd`` and ``torch.optim.adamw.adamw``: torch.optim's own arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd


class OneGroupOptimizer(torch.optim.Optimizer):
    """One parameter group and torch.optim's state_dict layout (``{"state": {index: {...}},
    "param_groups": [{..., "params": [indices]}]}``): a group holds every key its torch.optim
    twin's does, so either loads the other's state. A subclass defines ``_update(group)``."""

    def __init__(self, params, **defaults) -> None:  # not Optimizer.__init__: see the module
        params = list(params)
        if not params:  # torch.optim's refusals, in its words
            raise ValueError("optimizer got an empty parameter list")
        if not all(p.is_leaf for p in params):
            raise ValueError("can't optimize a non-leaf Tensor")
        self.defaults = defaults
        self.param_groups = [{"params": params, **defaults}]
        self.state: dict[torch.Tensor, dict] = {}

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def add_param_group(self, param_group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps one parameter group")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._update(self.param_groups[0])
        return loss

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        state = {i: dict(self.state[p]) for i, p in enumerate(self.params) if p in self.state}
        return {"state": state, "param_groups": [group | {"params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError("the saved state has another number of parameters")
        self.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        self.state = {}
        for i, saved in state_dict["state"].items():
            p = self.params[int(i)]
            self.state[p] = {
                k: v.to(p.device, copy=True) if isinstance(v, torch.Tensor) else v
                for k, v in saved.items()
            }


def _check(what: str, value: float, high: float = math.inf) -> None:
    """torch.optim's range check: ``0 <= value < high`` (nan fails), else its ValueError."""
    if not 0.0 <= value < high:
        raise ValueError(f"Invalid {what}: {value}")


class SGD(OneGroupOptimizer):
    """``torch.optim.SGD``, its arguments and checks: one parameter group."""

    KERNEL = ("weight_decay", "momentum", "lr", "dampening", "nesterov", "maximize")  # sgd()'s

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ):
        _check("learning rate", lr)
        _check("momentum value", momentum)
        _check("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=None,
            differentiable=False,
            fused=None,
        )

    def _update(self, group: dict) -> None:
        buffers = [self.state.get(p, {}).get("momentum_buffer") for p in self.params]
        settings = {k: group[k] for k in self.KERNEL}
        sgd(self.params, [p.grad for p in self.params], buffers, **settings)
        if group["momentum"]:  # sgd() fills in the buffers it created
            for p, b in zip(self.params, buffers, strict=True):
                self.state.setdefault(p, {})["momentum_buffer"] = b


class AdamW(OneGroupOptimizer):
    """``torch.optim.AdamW(..., fused=True)``, its arguments and checks: one parameter group.

    The fused kernel does a step in one call: about a third of the time of the per-tensor
    loop for the ``fast`` model's parameters on the CPU.
    """

    KERNEL = ("amsgrad", "lr", "weight_decay", "eps", "maximize", "fused")  # adamw()'s, and betas

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        for i, beta in enumerate(betas):
            _check(f"beta parameter at index {i}", beta, high=1.0)
        _check("weight_decay value", weight_decay)
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=True,
            decoupled_weight_decay=True,
        )
        for p in self.params:
            self.state[p] = {
                "step": torch.zeros((), device=p.device),  # on the device, as fused wants
                "exp_avg": torch.zeros_like(p),  # memory_format=torch.preserve_format
                "exp_avg_sq": torch.zeros_like(p),
            }
            if amsgrad:
                self.state[p]["max_exp_avg_sq"] = torch.zeros_like(p)

    def _update(self, group: dict) -> None:
        states = [self.state[p] for p in self.params]
        beta1, beta2 = group["betas"]
        adamw(
            self.params,
            [p.grad for p in self.params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
            [s["step"] for s in states],
            beta1=beta1,
            beta2=beta2,
            **{k: group[k] for k in self.KERNEL},
        )


class Recipe(NamedTuple):
    """How one model trains: its optimizer and its schedule."""

    optimizer: object
    scheduler: object | None
    step_scheduler: str  # "batch" or "epoch": when fit steps the scheduler


def recipe(spec, params, config, steps_per_epoch: int) -> Recipe:
    """The model's own factories where it declares them (``spec``, a ``models.Model``), else
    ``config.optimizer`` (sgd | adamw) and ``config.scheduler`` (none | onecycle)."""
    params = list(params)
    if spec.optimizer is not None:
        opt = spec.made("its optimizer", spec.optimizer, params, config)
    elif config.optimizer == "adamw":
        opt = AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    spec.check_optimizer(opt)
    scheduler, every = None, spec.step_scheduler
    if spec.scheduler is not None:
        scheduler = spec.made("its scheduler", spec.scheduler, opt, config, steps_per_epoch)
        spec.check_scheduler(scheduler)
    elif config.scheduler == "onecycle":  # lr and momentum (or beta1) cycle over every batch
        total_steps = config.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=total_steps)
        every = "batch"
    return Recipe(opt, scheduler, every)
