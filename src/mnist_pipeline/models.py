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


class WhiteningStem(nn.Module):
    """A fixed first layer: (N, 1, 28, 28) -> (N, 2 * components, 7, 7), never trained.

    Its filters are the leading principal components of the training images' 5x5 patches,
    scaled to unit variance (PCA whitening), each next to its negation so that the ReLU keeps
    both signs. ``fit`` sets them from the training images before training. A convolution of
    stride 2, a 2x2 max pool and a ReLU follow, with no gradient: nothing before the first
    trained layer needs one.
    """

    def __init__(self, components: int = 16, kernel: int = 5) -> None:
        super().__init__()
        self.kernel = kernel
        self.register_buffer("weight", torch.zeros(2 * components, 1, kernel, kernel))

    @torch.no_grad()
    def fit(self, images: torch.Tensor, count: int = 2000) -> None:
        """Set the filters from the first ``count`` of ``images``, (N, 784) or (N, 1, 28, 28)."""
        k = self.kernel
        x = images[:count].reshape(-1, 1, 28, 28).float().cpu()
        # Every k x k patch the stem sees, one per row: a convolution with one-hot filters is
        # several times faster than F.unfold and lands in this layout without a copy.
        one_hot = torch.eye(k * k).view(k * k, 1, k, k).to(memory_format=torch.channels_last)
        patches = F.conv2d(x, one_hot, stride=2, padding=k // 2).permute(0, 2, 3, 1)
        patches = patches.reshape(-1, k * k)
        mean = patches.mean(0)
        covariance = (patches.T @ patches / len(patches) - torch.outer(mean, mean)).double()
        variances, vectors = torch.linalg.eigh(covariance)  # ascending
        components = len(self.weight) // 2  # each filter is there with its negation
        variances = variances.flip(0)[:components]
        vectors = vectors.flip(1)[:, :components]
        # An eigenvector's sign is arbitrary: fix it by its product with a ramp, which has no
        # ties to break the way "the largest entry" would between near-equal entries.
        ramp = torch.arange(1, k * k + 1, dtype=torch.float64)
        signs = (ramp @ vectors).sign()
        filters = (vectors * signs / (variances + 1e-4).sqrt()).T.reshape(-1, 1, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, stride=2, padding=self.kernel // 2)  # (N, C, 14, 14)
        # 2x2 max pooling as three maxima of strided views: in channels_last this is about
        # twice as fast on the CPU as max_pool2d, which also computes indices for backward.
        x = torch.maximum(
            torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
            torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]),
        )
        return F.relu(x)  # (N, C, 7, 7)


def flatten_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W*C): a view of a channels_last tensor, where x.flatten(1) copies."""
    return x.permute(0, 2, 3, 1).flatten(1)


def fast_cnn() -> nn.Module:
    """Beyond the tutorial: 99% validation accuracy in 2 epochs, in less training time than
    the tutorial's CNN takes for its 93% (BENCHMARKS.md).

    The time goes to convolutions and their gradients, so the first layer is fixed (a
    WhiteningStem, set from the data by ``fit_stem``): it needs no gradient, and neither does
    the input of the first trained convolution. Unpadded 3x3 convolutions on the 7x7 map
    cost a third of padded ones. Weights and activations are channels_last, which the oneDNN
    convolutions prefer on the CPU.
    """
    return nn.Sequential(
        WhiteningStem(components=16),  # (N, 32, 7, 7)
        nn.Conv2d(32, 32, 3, bias=False),  # (N, 32, 5, 5)
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, bias=False),  # (N, 64, 3, 3)
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        Lambda(flatten_channels_last),
        nn.Linear(64 * 9, 10),
    ).to(memory_format=torch.channels_last)


def fit_stem(model: nn.Module, images: torch.Tensor) -> None:
    model[0].fit(images)


# --- The registry ---
def cross_entropy(
    out: torch.Tensor, yb: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    return F.cross_entropy(out, yb, reduction=reduction, label_smoothing=label_smoothing)


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
    if config.optimizer != "sgd" or config.weight_decay or config.label_smoothing:
        raise UserError(
            f"models.{config.name}: logistic_scratch trains with the hand-written SGD and nll "
            "only; remove optimizer/weight_decay/label_smoothing"
        )
    return ScratchSGD(model.parameters(), lr=config.lr, momentum=config.momentum)


@dataclasses.dataclass(frozen=True)
class Architecture:
    build: Callable[[], object]
    loss_func: Callable[..., torch.Tensor]
    make_optimizer: Callable[..., object]
    image_input: bool = False  # the data path reshapes batches to (N, 1, 28, 28)
    # Sets what the model learns from the training images before training, not by gradient.
    fit_data: Callable[[nn.Module, torch.Tensor], None] | None = None


ARCHITECTURES: dict[str, Architecture] = {
    "logistic_scratch": Architecture(LogisticScratch, nll, scratch_optimizer),
    "logistic": Architecture(Mnist_Logistic, cross_entropy, torch_optimizer),
    "cnn": Architecture(Mnist_CNN, cross_entropy, torch_optimizer),
    "cnn_sequential": Architecture(cnn_sequential, cross_entropy, torch_optimizer),
    "cnn_adaptive": Architecture(cnn_adaptive, cross_entropy, torch_optimizer, image_input=True),
    "fast": Architecture(
        fast_cnn, cross_entropy, torch_optimizer, image_input=True, fit_data=fit_stem
    ),
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
