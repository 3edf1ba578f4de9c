"""Training: device choice, whole-batch loaders, and the tutorial's loss_batch / fit / get_data.

``loss_batch``, ``fit`` and ``get_data`` keep the tutorial's shape and grow what a pipeline
needs: a history per epoch, a device, a seed, a scheduler, and (under torchrun) global metrics.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

from .errors import UserError
from .models import count_parameters, get_architecture
from .params import TrainConfig


class DivergenceError(UserError):
    """The loss became NaN or infinite."""


def select_device(spec: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an absent device is an error, not a fallback."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r}: CUDA is not available here; use device: auto or cpu")
        index = int(spec.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UserError(f"device {spec!r}: only {count} CUDA device(s) here (0..{count - 1})")
    elif spec == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps': MPS is not available here; use device: auto or cpu")
    elif spec not in ("cpu", "mps") and not spec.startswith("cuda"):
        raise UserError(f"device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps")
    return torch.device(spec)


class Batches:
    """Whole batches sliced from in-memory tensors: a seeded shuffle, then one index per batch.

    Unlike ``DataLoader(TensorDataset)``, nothing is fetched sample by sample. Under
    torchrun (``world > 1``) each rank takes a disjoint, contiguous shard of every global
    batch; ``weight`` then says how much this shard counts toward the global mean loss.
    """

    def __init__(self, x, y, bs, shuffle=False, seed=0, rank=0, world=1) -> None:
        self.x, self.y, self.bs, self.shuffle = x, y, bs, shuffle
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None
        self.weight = 1.0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.bs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = None
        if self.shuffle:  # shuffled on the CPU with the seeded generator: same order everywhere
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        for start in range(0, n, self.bs):
            stop = min(start + self.bs, n)
            if self.world > 1:  # this rank's shard of the global batch [start, stop)
                bounds = torch.linspace(start, stop, self.world + 1).round().long().tolist()
                lo, hi = bounds[self.rank], bounds[self.rank + 1]
                self.weight = (hi - lo) * self.world / (stop - start)
                start, stop = lo, hi
            if order is None:
                yield self.x[start:stop], self.y[start:stop]  # views: no copy
            else:
                idx = order[start:stop]
                yield self.x[idx], self.y[idx]


def get_data(train_ds, valid_ds, bs, *, device="cpu", seed=0, image_input=False, rank=0, world=1):
    """The tutorial's get_data: a shuffled train loader and a valid loader of twice the batch.

    The tensors move to ``device`` once; ``image_input`` reshapes them to (N, 1, 28, 28) once
    (the tutorial's ``preprocess``/``WrappedDataLoader``), so batches are views or one gather.
    """

    def prepare(ds):
        x, y = ds.tensors
        x = x.to(device)
        return (x.view(-1, 1, 28, 28) if image_input else x), y.to(device)

    return (
        Batches(*prepare(train_ds), bs, shuffle=True, seed=seed, rank=rank, world=world),
        Batches(*prepare(valid_ds), bs * 2, rank=rank, world=world),
    )


def loss_batch(model, loss_func, xb, yb, opt=None, weight=1.0):
    """The tutorial's loss_batch: the loss of one batch, and a step when ``opt`` is given."""
    loss = loss_func(model(xb), yb)

    if opt is not None:
        (loss * weight if weight != 1.0 else loss).backward()
        opt.step()
        opt.zero_grad()

    return loss.item(), len(xb)


def all_reduce_sums(*values: float, device) -> list[float]:
    """Sum per-rank figures across ranks under torchrun; identity in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate_loader(model, loss_func, dl, device) -> tuple[float, float]:
    """Mean loss (summed, then divided by N) and accuracy over a loader; global under DDP."""
    model.eval()
    loss_sum = correct = count = 0.0
    for xb, yb in dl:
        out = model(xb)
        loss_sum += loss_func(out, yb, reduction="sum").item()
        correct += (out.argmax(dim=1) == yb).sum().item()
        count += len(yb)
    loss_sum, correct, count = all_reduce_sums(loss_sum, correct, count, device=device)
    return loss_sum / count, correct / count


def fit(
    epochs,
    model,
    loss_func,
    opt,
    train_dl,
    valid_dl,
    *,
    scheduler=None,
    name="model",
    device="cpu",
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """The tutorial's fit, returning a history: one dict per epoch.

    A NaN or infinite loss stops training with a DivergenceError naming model, epoch and lr.
    """
    from tqdm import tqdm

    history = []
    quiet = not sys.stderr.isatty()
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        loss_sum = count = 0.0
        bar = tqdm(train_dl, desc=f"{name} epoch {epoch}", leave=False, disable=quiet)
        for xb, yb in bar:
            lr = opt.param_groups[0]["lr"]
            loss, n = loss_batch(model, loss_func, xb, yb, opt, getattr(train_dl, "weight", 1.0))
            if not math.isfinite(loss):
                raise DivergenceError(
                    f"model {name!r} diverged in epoch {epoch}: loss is {loss} at lr {lr:g}; "
                    "lower lr"
                )
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss * n
            count += n
        loss_sum, count = all_reduce_sums(loss_sum, count, device=device)
        val_loss, val_acc = evaluate_loader(model, loss_func, valid_dl, device)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / count,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - start,
        }
        if not math.isfinite(val_loss):
            raise DivergenceError(
                f"model {name!r} diverged in epoch {epoch}: val loss is {val_loss} at lr "
                f"{opt.param_groups[0]['lr']:g}; lower lr"
            )
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return history


def make_scheduler(opt, config: TrainConfig, steps_per_epoch: int):
    """The per-batch learning-rate schedule named by ``config.scheduler`` (None for 'none')."""
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
        )
    return None


def seed_everything(seed: int) -> None:
    # CPU kernels are deterministic for a fixed seed and thread count (tested); CUDA runs are
    # not promised byte-identical. torch.use_deterministic_algorithms is left off: importing
    # what it needs costs over 2 s per stage.
    torch.manual_seed(seed)


def build_model(config: TrainConfig, device):
    """The seeded model, its loss and optimizer for one resolved config."""
    arch = get_architecture(config.arch)
    seed_everything(config.seed)
    model = arch.build().to(device)
    return model, arch.loss_func, arch.make_optimizer(model, config)


def train_model(config: TrainConfig, train_ds, valid_ds, device, *, rank=0, world=1, wrap=None):
    """Train one configured model; return (model, history). ``wrap`` applies DDP."""
    arch = get_architecture(config.arch)
    model, loss_func, opt = build_model(config, device)
    net = wrap(model) if wrap else model  # DDP shares the model's parameters and optimizer
    train_dl, valid_dl = get_data(
        train_ds,
        valid_ds,
        config.bs,
        device=device,
        seed=config.seed,
        image_input=arch.image_input,
        rank=rank,
        world=world,
    )
    scheduler = make_scheduler(opt, config, len(train_dl))

    def report(row: dict) -> None:
        if rank == 0:
            print(
                f"{config.name} epoch {row['epoch']}: train_loss {row['train_loss']:.4f} "
                f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f} "
                f"({row['seconds']:.1f}s)",
                flush=True,
            )

    history = fit(
        config.epochs,
        net,
        loss_func,
        opt,
        train_dl,
        valid_dl,
        scheduler=scheduler,
        name=config.name,
        device=device,
        on_epoch=report,
    )
    return model, history


def checkpoint(model, config: TrainConfig, device) -> dict:
    """What models/<name>.pt holds: CPU tensors and plain values, loadable with weights_only."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "state_dict": state,
        "config": config.to_dict(),
        "device": str(device),
        "parameters": count_parameters(model),
    }


def load_checkpoint(path, config: TrainConfig | None = None, device="cpu"):
    """Load models/<name>.pt with weights_only=True and rebuild its model; errors are one line."""
    from pathlib import Path

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found; run its train stage first") from None
    except Exception as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a loadable weights-only checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "config"} <= set(ckpt):
        raise UserError(f"{path}: not a checkpoint of this pipeline (no state_dict/config)")
    arch_name = ckpt["config"].get("arch")
    if config is not None and arch_name != config.arch:
        raise UserError(
            f"{path}: checkpoint architecture {arch_name!r} does not match params "
            f"arch {config.arch!r}; retrain with dvc repro"
        )
    model = get_architecture(arch_name).build()
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit architecture {arch_name!r} ({err})") from None
    return model.to(device), ckpt
