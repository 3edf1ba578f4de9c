"""Model registry: one entry per step of the tutorial, by the name params.yaml uses.

Each entry says how to build the model, its loss, its optimizer and how the data path shapes
a batch for it, so one ``fit`` trains them all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import optim
from .errors import UserError
from .params import ARCHITECTURE_NAMES


# --- Step 1 of the tutorial: logistic regression from scratch, no torch.nn, no torch.optim ---
def log_softmax(x: torch.Tensor) -> torch.Tensor:
    return x - x.exp().sum(-1).log().unsqueeze(-1)


def nll(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    picked = -input[range(target.shape[0]), target]
    return picked.sum() if reduction == "sum" else picked.mean()


class LogisticScratch:
    """The tutorial's first model: plain tensors ``weights`` and ``bias`` with requires_grad."""

    def __init__(self) -> None:
        self.weights = torch.randn(784, 10) / math.sqrt(784)  # Xavier initialisation
        self.weights.requires_grad_()
        self.bias = torch.zeros(10, requires_grad=True)
        self.training = True

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:  # (N, 784) -> (N, 10) log-probs
        return log_softmax(xb @ self.weights + self.bias)

    def parameters(self) -> list[torch.Tensor]:
        return [self.weights, self.bias]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights.detach().clone(), "bias": self.bias.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"weights", "bias"}:
            raise RuntimeError(f"expected keys weights, bias; got {sorted(state)}")
        with torch.no_grad():
            self.weights.copy_(state["weights"])
            self.bias.copy_(state["bias"])

    def to(self, device: torch.device) -> LogisticScratch:
        self.weights = self.weights.detach().to(device).requires_grad_()
        self.bias = self.bias.detach().to(device).requires_grad_()
        return self

    def train(self, mode: bool = True) -> LogisticScratch:
        self.training = mode
        return self

    def eval(self) -> LogisticScratch:
        return self.train(False)


class ScratchSGD:
    """The tutorial's hand-written update, ``p -= p.grad * lr`` under no_grad, plus momentum."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        if dist.is_available() and dist.is_initialized():  # under torchrun: average like DDP
            for p in self.params:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()
        with torch.no_grad():
            for p, v in zip(self.params, self.velocity, strict=True):
                v.mul_(self.momentum).add_(p.grad)
                p -= v * self.lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:  # for resuming an interrupted run
        return {"lr": self.lr, "momentum": self.momentum, "velocity": self.velocity}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.momentum = state["lr"], state["momentum"]
        for v, saved in zip(self.velocity, state["velocity"], strict=True):
            v.copy_(saved)


# --- Steps 2-5: torch.nn models ---
class Lambda(nn.Module):
    """A layer from a function, as in the tutorial."""

    def __init__(self, func: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.func = func

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


def preprocess(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, 1, 28, 28)  # (N, 784) -> (N, 1, 28, 28)


def flatten(x: torch.Tensor) -> torch.Tensor:
    return x.view(x.size(0), -1)


class Mnist_Logistic(nn.Module):  # noqa: N801 - the tutorial's name
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return self.lin(xb)


class Mnist_CNN(nn.Module):  # noqa: N801 - the tutorial's name
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1)

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.view(-1, 1, 28, 28)
        xb = F.relu(self.conv1(xb))  # (N, 16, 14, 14)
        xb = F.relu(self.conv2(xb))  # (N, 16, 7, 7)
        xb = F.relu(self.conv3(xb))  # (N, 10, 4, 4)
        xb = F.avg_pool2d(xb, 4)  # (N, 10, 1, 1)
        return xb.view(-1, xb.size(1))


def cnn_sequential() -> nn.Module:
    return nn.Sequential(
        Lambda(preprocess),
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        Lambda(flatten),
    )


def cnn_adaptive() -> nn.Module:
    """Any single-channel image size: the data path reshapes to (N, 1, H, W)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        Lambda(flatten),
    )


def fast_cnn() -> nn.Module:
    """Beyond the tutorial: a small batch-normalised CNN, 99% validation accuracy in 2 epochs,
    in less training time than the tutorial's CNN takes for its 93% (BENCHMARKS.md).

    At this size the time goes to BatchNorm, ReLU and pooling more than to the convolutions,
    so max-pooling comes first where they meet: BatchNorm and ReLU then see 4x fewer values.
    The weights are channels_last, which makes the oneDNN convolutions faster on the CPU.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2, bias=False),  # (N, 16, 14, 14)
        nn.MaxPool2d(2),  # (N, 16, 7, 7)
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.MaxPool2d(2),  # (N, 32, 3, 3)
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(32 * 9, 10),
    ).to(memory_format=torch.channels_last)


# --- The registry ---
def cross_entropy(out: torch.Tensor, yb: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(out, yb, reduction=reduction)


def torch_optimizer(model, config):
    """torch.optim.SGD or AdamW, through their functional forms (see optim.py)."""
    if config.optimizer == "adamw":
        return optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def scratch_optimizer(model, config) -> ScratchSGD:
    if config.optimizer != "sgd" or config.weight_decay:
        raise UserError(
            f"models.{config.name}: logistic_scratch trains with the hand-written SGD only; "
            "remove optimizer/weight_decay"
        )
    return ScratchSGD(model.parameters(), lr=config.lr, momentum=config.momentum)


@dataclasses.dataclass(frozen=True)
class Architecture:
    build: Callable[[], object]
    loss_func: Callable[..., torch.Tensor]
    make_optimizer: Callable[..., object]
    image_input: bool = False  # the data path reshapes batches to (N, 1, 28, 28)


ARCHITECTURES: dict[str, Architecture] = {
    "logistic_scratch": Architecture(LogisticScratch, nll, scratch_optimizer),
    "logistic": Architecture(Mnist_Logistic, cross_entropy, torch_optimizer),
    "cnn": Architecture(Mnist_CNN, cross_entropy, torch_optimizer),
    "cnn_sequential": Architecture(cnn_sequential, cross_entropy, torch_optimizer),
    "cnn_adaptive": Architecture(cnn_adaptive, cross_entropy, torch_optimizer, image_input=True),
    "fast": Architecture(fast_cnn, cross_entropy, torch_optimizer, image_input=True),
}

assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES, "params.ARCHITECTURE_NAMES is out of date"


def get_architecture(arch: str) -> Architecture:
    """Look up an architecture; an unknown name fails, listing the valid ones."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise UserError(
            f"unknown model architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}"
        ) from None


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
