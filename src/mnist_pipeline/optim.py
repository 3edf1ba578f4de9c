"""Optimizers and schedules with torch.optim's interface, and the one place that picks them.

Constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (about 2 s per stage
process), because ``add_param_group`` and ``zero_grad`` carry ``@torch._disable_dynamo``. The
functional ``torch.optim.sgd.sgd`` and ``torch.optim.adamw.adamw`` do the same arithmetic
without it, so ``SGD`` and ``AdamW`` keep only the state and call them. ``ScratchSGD`` is the
tutorial's hand-written update. ``OneCycle`` computes ``torch.optim.lr_scheduler.OneCycleLR``'s
formulas with its defaults (tested step by step).

Each optimizer exposes what torch.optim's do: ``param_groups`` (a schedule sets "lr" and
"momentum" or "betas" there), ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict``,
so a torch.optim optimizer or scheduler can stand in for any of them, and ``fit`` takes either.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd


class _Optimizer:
    """What the optimizers share: one parameter group, zero_grad, and the state_dict layout of
    torch.optim (``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``):
    a group holds every key its torch.optim twin's does, so either loads the other's state."""

    state_names: tuple[str, ...] = ()  # per-parameter state, by torch.optim's names

    def __init__(self, params, **defaults) -> None:
        self.param_groups = [{"params": list(params), **defaults}]
        self.defaults = defaults
        self.state: dict[torch.Tensor, dict] = {}

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

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

    def _update(self, group: dict) -> None:
        raise NotImplementedError

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

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.param_groups[0].items() if k != "params")
        return f"{type(self).__name__}({settings})"


class SGD(_Optimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay)``: one parameter group."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=0,
            weight_decay=weight_decay,
            nesterov=False,
            maximize=False,
            foreach=None,
            differentiable=False,
            fused=None,
        )

    def _update(self, group: dict) -> None:
        buffers = [self.state.get(p, {}).get("momentum_buffer") for p in self.params]
        sgd(
            self.params,
            [p.grad for p in self.params],
            buffers,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        if group["momentum"]:  # sgd() fills in the buffers it created
            for p, b in zip(self.params, buffers, strict=True):
                self.state.setdefault(p, {})["momentum_buffer"] = b


class AdamW(_Optimizer):
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay, fused=True)``.

    The fused kernel does a step in one call: about a third of the time of the per-tensor
    loop for the ``fast`` model's parameters on the CPU.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=False,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=True,
            decoupled_weight_decay=True,
        )
        preserve = torch.preserve_format
        for p in self.params:
            self.state[p] = {
                "step": torch.zeros((), device=p.device),  # on the device, as fused wants
                "exp_avg": torch.zeros_like(p, memory_format=preserve),
                "exp_avg_sq": torch.zeros_like(p, memory_format=preserve),
            }

    def _update(self, group: dict) -> None:
        states = [self.state[p] for p in self.params]
        beta1, beta2 = group["betas"]
        adamw(
            self.params,
            [p.grad for p in self.params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            fused=True,
        )

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        group = self.param_groups[0]
        group["betas"] = tuple(group["betas"])


class ScratchSGD(_Optimizer):
    """The tutorial's hand-written update, ``p -= p.grad * lr`` under no_grad, plus momentum.

    Under torchrun it averages the gradients across ranks itself, as DDP would: the
    from-scratch model is no ``nn.Module`` for DDP to wrap.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        for p in self.params:
            self.state[p] = {"velocity": torch.zeros_like(p)}

    def _update(self, group: dict) -> None:
        if dist.is_available() and dist.is_initialized():
            for p in self.params:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()
        for p in self.params:
            v = self.state[p]["velocity"]
            v.mul_(group["momentum"]).add_(p.grad)
            p -= v * group["lr"]


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycle:
    """``OneCycleLR(opt, max_lr, total_steps)`` with its defaults: lr warms up from max_lr/25
    over 30% of the steps, then anneals to max_lr/25e4; momentum (beta1 for Adam-like
    optimizers) cycles 0.95 -> 0.85 -> 0.95. Works on any optimizer with ``param_groups``.

    Like the torch scheduler, building it sets step 0's values, and ``step()`` after each
    optimizer step moves to the next.
    """

    pct_start, div_factor, final_div_factor = 0.3, 25.0, 1e4
    base_momentum, max_momentum = 0.85, 0.95

    def __init__(self, opt, max_lr: float, total_steps: int) -> None:
        self.optimizer, self.total_steps = opt, total_steps
        initial = max_lr / self.div_factor
        self.phases = (  # (end step, start lr, end lr, start momentum, end momentum)
            (
                float(self.pct_start * total_steps) - 1,
                initial,
                max_lr,
                self.max_momentum,
                self.base_momentum,
            ),
            (
                total_steps - 1,
                max_lr,
                initial / self.final_div_factor,
                self.base_momentum,
                self.max_momentum,
            ),
        )
        self.last_step = 0
        self._apply()

    def values(self, step: int) -> tuple[float, float]:
        """(lr, momentum) at ``step``, computed as OneCycleLR.get_lr does."""
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                return _anneal_cos(lr0, lr1, pct), _anneal_cos(m0, m1, pct)
            start = end
        raise AssertionError("unreachable")

    def _apply(self) -> None:
        lr, momentum = self.values(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            elif "momentum" in group:
                group["momentum"] = momentum

    def step(self) -> None:
        self.last_step += 1
        if self.last_step <= self.total_steps:  # OneCycleLR raises past the end; we stop there
            self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state["last_step"]
        self._apply()


@dataclasses.dataclass
class Recipe:
    """How one model trains: its optimizer, its schedule and the loss it minimises."""

    optimizer: object
    scheduler: object | None
    step_scheduler: str  # "batch" or "epoch": when fit steps the scheduler
    train_loss: Callable[..., torch.Tensor]  # the model's loss, label-smoothed where set


def recipe(spec, params, config, steps_per_epoch: int) -> Recipe:
    """The one place that turns a model's config into its optimizer, schedule and training
    loss: the model's own factories where it declares them (``spec``, a ``models.Model``),
    else ``config.optimizer`` (sgd | adamw) and ``config.scheduler`` (none | onecycle)."""
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
    elif config.scheduler == "onecycle":
        scheduler = OneCycle(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
        every = "batch"
    train_loss = spec.loss
    if config.label_smoothing:  # of the loss trained on only; val_loss stays plain
        train_loss = functools.partial(spec.loss, label_smoothing=config.label_smoothing)
    return Recipe(opt, scheduler, every, train_loss)
