"""The tutorial's models, step by step: from-scratch logistic regression to the CNN.

logistic_scratch is plain tensors, a hand-written log_softmax and nll, and the tutorial's
hand-written SGD (``ScratchSGD``); the others are torch.nn models trained with cross-entropy
and the pipeline's SGD (optim.py), torch.optim's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..optim import OneGroupOptimizer
from .contract import Model


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


def convs() -> list[nn.Module]:
    """The tutorial CNN's three stride-2 convolutions, each with its ReLU."""
    return [
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
    ]


def cnn_sequential() -> nn.Module:
    return nn.Sequential(Lambda(preprocess), *convs(), nn.AvgPool2d(4), Lambda(flatten))


def cnn_adaptive() -> nn.Module:
    """Any single-channel image size: the data path reshapes to (N, 1, H, W)."""
    return nn.Sequential(*convs(), nn.AdaptiveAvgPool2d(1), Lambda(flatten))


class ScratchSGD(OneGroupOptimizer):
    """The tutorial's hand-written update, ``p -= p.grad * lr`` under no_grad, plus momentum.

    A ``torch.optim.Optimizer``, so torch's schedulers take it, without torch._dynamo (see
    optim.py), with torch.optim's state layout. Under torchrun it averages the gradients
    across ranks itself: the model is no ``nn.Module`` for DDP to wrap.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        self.state = {p: {"velocity": torch.zeros_like(p)} for p in self.params}

    def _update(self, group: dict) -> None:  # under no_grad
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        for p in self.params:
            if world > 1:
                dist.all_reduce(p.grad)
                p.grad /= world
            v = self.state[p]["velocity"]
            v.mul_(group["momentum"]).add_(p.grad)
            p -= v * group["lr"]


def scratch_sgd(params, config) -> ScratchSGD:
    """The tutorial's ``p -= p.grad * lr`` with momentum: no weight decay to apply."""
    if config.weight_decay:
        raise UserError(
            f"model 'logistic_scratch': its hand-written SGD has no weight decay; "
            f"remove models.{config.name}.weight_decay"
        )
    return ScratchSGD(params, lr=config.lr, momentum=config.momentum)


MODELS = [
    Model("logistic_scratch", LogisticScratch, loss=nll, optimizer=scratch_sgd),
    Model("logistic", Mnist_Logistic),
    Model("cnn", Mnist_CNN),
    Model("cnn_sequential", cnn_sequential),
    Model("cnn_adaptive", cnn_adaptive, image_input=True),
]
