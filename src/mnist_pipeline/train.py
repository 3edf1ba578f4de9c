"""Training: the tutorial's loss_batch and fit, grown into train_model.

``fit`` keeps the tutorial's shape and adds what a pipeline needs: a history per epoch, a
schedule, global metrics under torchrun, and a hook after each epoch (which saves the state
that lets an interrupted run resume).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from .errors import UserError
from .loader import get_data
from .models import get_model
from .optim import recipe
from .params import TrainConfig
from .resume import restore, snapshot


class DivergenceError(UserError):
    """The loss became NaN or infinite."""


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
    for xb, yb, _ in dl:
        out = model(xb)
        loss_sum += loss_func(out, yb, reduction="sum").item()
        correct += (out.argmax(dim=1) == yb).sum().item()
        count += len(yb)
    loss_sum, correct, count = all_reduce_sums(loss_sum, correct, count, device=device)
    return loss_sum / count, correct / count


def _diverged(name: str, epoch: int, what: str, value: float, lr: float) -> DivergenceError:
    return DivergenceError(
        f"model {name!r} diverged in epoch {epoch}: {what} is {value} at lr {lr:g}; lower lr"
    )


def fit(
    epochs,
    model,
    loss_func,
    opt,
    train_dl,
    valid_dl,
    *,
    train_loss_func=None,
    scheduler=None,
    step_scheduler="batch",
    name="model",
    device="cpu",
    history: list[dict] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """The tutorial's fit, returning a history: one dict per epoch.

    ``opt`` is any optimizer with torch.optim's interface; ``scheduler`` any scheduler, stepped
    after every batch or every epoch (``step_scheduler``; a ReduceLROnPlateau after every
    epoch, on val_loss). Training minimises ``train_loss_func`` (``loss_func`` unless given:
    fast's is label-smoothed) and reports it as train_loss; val_loss is always ``loss_func``.
    Training continues after the epochs already in ``history`` (a resumed run). A NaN or
    infinite loss stops training with a DivergenceError naming model, epoch and lr.
    """
    from tqdm import tqdm

    history = [] if history is None else history  # appended to in place
    train_loss_func = train_loss_func or loss_func
    quiet = not sys.stderr.isatty()
    for epoch in range(len(history), epochs):
        start = time.perf_counter()
        model.train()
        loss_sum = count = 0.0
        bar = tqdm(train_dl, desc=f"{name} epoch {epoch}", leave=False, disable=quiet)
        for xb, yb, weight in bar:
            lr = opt.param_groups[0]["lr"]
            loss, n = loss_batch(model, train_loss_func, xb, yb, opt, weight)
            if not math.isfinite(loss):
                raise _diverged(name, epoch, "loss", loss, lr)
            if scheduler is not None and step_scheduler == "batch":
                scheduler.step()
            loss_sum += loss * n
            count += n
        loss_sum, count = all_reduce_sums(loss_sum, count, device=device)
        val_loss, val_acc = evaluate_loader(model, loss_func, valid_dl, device)
        if not math.isfinite(val_loss):
            raise _diverged(name, epoch, "val loss", val_loss, lr)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None and step_scheduler == "epoch":
            scheduler.step()
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / count,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return history


def build_model(spec, config: TrainConfig, device):
    """The seeded network of ``spec`` (a ``models.Model``) for one config, on ``device``."""
    # CPU kernels are deterministic for a fixed seed and thread count (tested); CUDA runs are
    # not promised byte-identical. torch.use_deterministic_algorithms is left off: importing
    # what it needs costs over 2 s per stage.
    torch.manual_seed(config.seed)
    return spec.build_checked().to(device)


def train_model(
    config: TrainConfig,
    train_ds,
    valid_ds,
    device,
    *,
    rank=0,
    world=1,
    wrap=None,
    writer: bool = True,
    state: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
):
    """Train one configured model; return (model, history).

    The model's ``models.Model`` is looked up once and checked against the config before
    anything is built. Under torchrun ``wrap`` applies DDP (``distributed.wrapper``) and each
    rank trains on its shard of every batch (``loader.Batches``). ``state`` is a
    ``resume.snapshot`` to continue from. The ``writer`` prints a line per epoch, and before
    it hands a fresh snapshot to ``on_epoch``.
    """
    spec = get_model(config.arch)
    spec.check(config)
    model = build_model(spec, config, device)
    if spec.fit_data is not None and not state:  # a resumed run loads it with the rest
        spec.fit_data(model, train_ds.tensors[0])
    net = wrap(model) if wrap else model  # DDP shares the model's parameters and optimizer
    train_dl, valid_dl = get_data(
        train_ds,
        valid_ds,
        config.bs,
        device=device,
        seed=config.seed,
        image_input=spec.image_input,
        rank=rank,
        world=world,
    )
    spec.check_forward(model, next(iter(valid_dl))[0][:2])  # eval mode, no grad: changes nothing
    how = recipe(spec, model.parameters(), config, len(train_dl))
    history = restore(state, model, how.optimizer, how.scheduler, train_dl) if state else []

    def report(row: dict) -> None:  # the writer's
        if on_epoch is not None:
            on_epoch(snapshot(model, how.optimizer, how.scheduler, train_dl, history))
        print(
            f"{config.name} epoch {row['epoch']}: train_loss {row['train_loss']:.4f} "
            f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f} "
            f"({row['seconds']:.1f}s)",
            flush=True,
        )

    history = fit(
        config.epochs,
        net,
        spec.loss,
        how.optimizer,
        train_dl,
        valid_dl,
        train_loss_func=spec.train_loss(config),
        scheduler=how.scheduler,
        step_scheduler=how.step_scheduler,
        name=config.name,
        device=device,
        history=history,
        on_epoch=report if writer else None,
    )
    return model, history
