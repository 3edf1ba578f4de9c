"""SGD, AdamW and the one-cycle schedule without ``torch.optim.Optimizer``.

Constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (about 2 s per stage
process), because ``add_param_group`` and ``zero_grad`` carry ``@torch._disable_dynamo``. The
functional ``torch.optim.sgd.sgd`` and ``torch.optim.adamw.adamw`` do the same arithmetic
without it, so these classes keep only the state and call them. ``OneCycle`` computes
``torch.optim.lr_scheduler.OneCycleLR``'s formulas with its defaults (tested step by step).

Each optimizer exposes ``lr`` and ``momentum`` (beta1 for AdamW), which a schedule sets, and
``state_dict``/``load_state_dict`` for resuming.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd


class SGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)``: one parameter group."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        sgd(
            self.params,
            [p.grad for p in self.params],
            self.buffers,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "buffers": self.buffers}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.buffers = [
            None if b is None else b.to(p.device)
            for b, p in zip(state["buffers"], self.params, strict=True)
        ]


class AdamW:
    """``torch.optim.AdamW(params, lr, weight_decay, fused=True)`` with default betas and eps.

    The fused kernel does a step in one call: about a third of the time of the per-tensor
    loop for the ``fast`` model's parameters on the CPU.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.momentum, self.beta2, self.eps = lr, 0.9, 0.999, 1e-8
        self.weight_decay = weight_decay
        preserve = torch.preserve_format
        self.exp_avgs = [torch.zeros_like(p, memory_format=preserve) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=preserve) for p in self.params]
        self.steps = [torch.zeros((), device=p.device) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        adamw(
            self.params,
            [p.grad for p in self.params],
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            amsgrad=False,
            beta1=self.momentum,
            beta2=self.beta2,
            lr=self.lr,
            weight_decay=self.weight_decay,
            eps=self.eps,
            maximize=False,
            fused=True,
        )

    zero_grad = SGD.zero_grad

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "exp_avgs": self.exp_avgs,
            "exp_avg_sqs": self.exp_avg_sqs,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.momentum = state["lr"], state["momentum"]
        for name in ("exp_avgs", "exp_avg_sqs"):
            saved = state[name]
            for mine, theirs in zip(getattr(self, name), saved, strict=True):
                mine.copy_(theirs)
        self.steps = [
            s.to(p.device, copy=True) for s, p in zip(state["steps"], self.params, strict=True)
        ]


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycle:
    """``OneCycleLR(opt, max_lr, total_steps)`` with its defaults: lr warms up from max_lr/25
    over 30% of the steps, then anneals to max_lr/25e4; momentum cycles 0.95 -> 0.85 -> 0.95.

    Like the torch scheduler, building it sets step 0's values, and ``step()`` after each
    optimizer step moves to the next.
    """

    pct_start, div_factor, final_div_factor = 0.3, 25.0, 1e4
    base_momentum, max_momentum = 0.85, 0.95

    def __init__(self, opt, max_lr: float, total_steps: int) -> None:
        self.opt, self.total_steps = opt, total_steps
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
        self.opt.lr, self.opt.momentum = self.values(self.last_step)

    def step(self) -> None:
        self.last_step += 1
        if self.last_step <= self.total_steps:  # OneCycleLR raises past the end; we stop there
            self._apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state["last_step"]
        self._apply()
