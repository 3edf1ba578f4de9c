"""optim.py against torch.optim: the same updates, every torch.optim.lr_scheduler on them, and
no torch._dynamo import."""

import copy
import io
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from torch.optim import lr_scheduler

from mnist_pipeline.models.tutorial import ScratchSGD
from mnist_pipeline.optim import SGD, AdamW

STEPS = 40


def model_and_batches():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, stride=2, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 13 * 13, 10),
    )
    batches = [(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(STEPS)]
    return model, batches


def train(model, opt, scheduler, batches) -> list[tuple[float, float]]:
    """Train; return the (lr, momentum) each step used."""
    used = []
    for x, y in batches:
        group = opt.param_groups[0]
        used.append((group["lr"], group.get("momentum", group.get("betas", (None,))[0])))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(loss.item())
        elif scheduler is not None:
            scheduler.step()
    return used


# Every scheduler of torch.optim.lr_scheduler, built on an optimizer; a new one fails the test
# below until it is added here.
SCHEDULERS = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, 5, gamma=0.5),
    "MultiStepLR": lambda opt: lr_scheduler.MultiStepLR(opt, [10, 25]),
    "ConstantLR": lambda opt: lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=10),
    "LinearLR": lambda opt: lr_scheduler.LinearLR(opt, total_iters=10),
    "ExponentialLR": lambda opt: lr_scheduler.ExponentialLR(opt, 0.95),
    "PolynomialLR": lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=30, power=2.0),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS),
    "CosineAnnealingWarmRestarts": lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, 7),
    "CyclicLR": lambda opt: lr_scheduler.CyclicLR(opt, 0.001, 0.05, step_size_up=6),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, 0.05, total_steps=STEPS),
    "LambdaLR": lambda opt: lr_scheduler.LambdaLR(opt, lambda step: 0.97**step),
    "MultiplicativeLR": lambda opt: lr_scheduler.MultiplicativeLR(opt, lambda step: 0.97),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=1),
    "SequentialLR": lambda opt: lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, total_iters=5), lr_scheduler.StepLR(opt, 5)], [5]
    ),
    "ChainedScheduler": lambda opt: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(opt, 0.5, total_iters=8), lr_scheduler.ExponentialLR(opt, 0.9)]
    ),
}
# Ours, and its torch.optim twin with the same settings.
OPTIMIZERS = {
    "sgd": (
        lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    ),
    "adamw": (
        lambda p: AdamW(p, lr=0.01, weight_decay=0.01),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01, fused=True),
    ),
}
# torch.optim's other arguments, and its defaults (AdamW's weight_decay is 0.01).
VARIANTS = {
    "sgd nesterov": (
        lambda p: SGD(p, 0.05, 0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, 0.05, 0.9, nesterov=True),
    ),
    "sgd dampening, maximize": (
        lambda p: SGD(p, 0.05, 0.9, 0.5, maximize=True),
        lambda p: torch.optim.SGD(p, 0.05, 0.9, 0.5, maximize=True),
    ),
    "sgd defaults": (SGD, torch.optim.SGD),
    "adamw amsgrad": (
        lambda p: AdamW(p, 0.01, amsgrad=True),
        lambda p: torch.optim.AdamW(p, 0.01, amsgrad=True, fused=True),
    ),
    "adamw defaults, maximize": (
        lambda p: AdamW(p, maximize=True),
        lambda p: torch.optim.AdamW(p, maximize=True, fused=True),
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_torch_optims_other_arguments_and_defaults_step_as_torch_optim(variant):
    ours, theirs = VARIANTS[variant]
    model, batches = model_and_batches()
    twin, _ = model_and_batches()
    opt, twin_opt = ours(model.parameters()), theirs(twin.parameters())
    train(model, opt, None, batches)
    train(twin, twin_opt, None, batches)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    restored = ours(model.parameters())
    restored.load_state_dict(round_trip(opt.state_dict()))
    assert restored.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


REFUSED = [  # (which optimizer, its keyword arguments): torch.optim raises ValueError for each
    ("sgd", {"lr": -0.1}),
    ("sgd", {"momentum": -1}),
    ("sgd", {"weight_decay": -1}),
    ("sgd", {"nesterov": True}),
    ("adamw", {"lr": -1}),
    ("adamw", {"eps": -1}),
    ("adamw", {"betas": (1.5, 0.9)}),
    ("adamw", {"betas": (0.9, 1.0)}),
    ("adamw", {"weight_decay": float("nan")}),
    ("adamw", {"params": []}),
    ("sgd", {"params": "non-leaf"}),
]


@pytest.mark.parametrize("which, kwargs", REFUSED, ids=[f"{w} {k}" for w, k in REFUSED])
def test_what_torch_optim_refuses_ours_refuses_with_its_error(which, kwargs):
    params = list(model_and_batches()[0].parameters())
    kwargs = dict(kwargs)
    if kwargs.get("params") == "non-leaf":
        kwargs["params"] = [params[0] * 2]
    kwargs.setdefault("params", params)
    pair = {"sgd": (SGD, torch.optim.SGD), "adamw": (AdamW, torch.optim.AdamW)}[which]
    errors = []
    for cls in pair:
        with pytest.raises(ValueError) as err:
            cls(**kwargs)
        errors.append(str(err.value))
    assert errors[0].split(":")[0] == errors[1].split(":")[0], errors


def test_every_torch_scheduler_is_tested():
    assert set(lr_scheduler.__all__) - {"LRScheduler"} == set(SCHEDULERS)


def round_trip(state: dict) -> dict:
    """``state`` through torch.save and a weights_only load, as a resume state goes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("kind", [None, *SCHEDULERS])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_torch_scheduler_drives_ours_as_torch_optim_and_resumes_exactly(optimizer, kind):
    """Bit for bit the weights and (lr, momentum) of the torch.optim twin; and a run whose
    optimizer and scheduler are rebuilt from their state halfway ends with the same weights."""
    ours, theirs = OPTIMIZERS[optimizer]
    schedule = SCHEDULERS.get(kind, lambda opt: None)
    model, batches = model_and_batches()
    twin, _ = model_and_batches()
    opt, twin_opt = ours(model.parameters()), theirs(twin.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    used = train(model, opt, schedule(opt), batches)
    assert used == train(twin, twin_opt, schedule(twin_opt), batches)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # bit for bit, not just close

    resumed, _ = model_and_batches()
    opt = ours(resumed.parameters())
    scheduler = schedule(opt)
    train(resumed, opt, scheduler, batches[: STEPS // 2])
    state = round_trip(
        {
            "model": resumed.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else None,
        }
    )
    resumed, _ = model_and_batches()  # fresh objects, as a resumed run builds them
    opt = ours(resumed.parameters())
    scheduler = schedule(opt)
    resumed.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if scheduler:
        scheduler.load_state_dict(state["scheduler"])
    assert used[STEPS // 2 :] == train(resumed, opt, scheduler, batches[STEPS // 2 :])
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_optimizer_state_round_trip_continues_identically():
    """state_dict/load_state_dict: a restored optimizer takes the same next steps."""
    model, batches = model_and_batches()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, None, batches[:5])
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())
    train(model, opt, None, batches[5:])
    clone, _ = model_and_batches()
    clone.load_state_dict(saved_model)
    opt2 = SGD(clone.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(saved_opt)
    train(clone, opt2, None, batches[5:])
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_state_dict_has_torch_optim_layout_and_loads_into_torch_optim(optimizer):
    """Our state_dict is torch.optim's: a torch optimizer loads it and takes the same steps."""
    ours, theirs = OPTIMIZERS[optimizer]
    model, batches = model_and_batches()
    opt = ours(model.parameters())
    train(model, opt, None, batches[:5])
    state = round_trip(opt.state_dict())  # a resume state must load with weights_only=True
    twin, _ = model_and_batches()
    twin.load_state_dict(model.state_dict())
    torch_opt = theirs(twin.parameters())
    torch_opt.load_state_dict(state)
    assert set(state) == {"state", "param_groups"}
    assert state["param_groups"][0]["params"] == list(range(len(list(model.parameters()))))
    train(model, opt, None, batches[5:])
    train(twin, torch_opt, None, batches[5:])
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_optimizers_accept_a_closure_and_zero_grad_like_torch_optim():
    model, batches = model_and_batches()
    opt = SGD(model.parameters(), lr=0.05)
    x, y = batches[0]

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = [p.clone() for p in model.parameters()]
    assert isinstance(opt.step(closure), torch.Tensor)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_scratch_sgd_is_the_tutorials_update_with_momentum():
    """p -= v * lr with v = momentum * v + grad, read from param_groups like torch.optim."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = ScratchSGD([w], lr=0.1, momentum=0.5)
    for expected in ([0.9, 1.9], [0.75, 1.75]):  # v = 1, then 1.5 (the gradient is 1)
        w.sum().backward()
        opt.step()
        opt.zero_grad()
        assert torch.allclose(w.detach(), torch.tensor(expected))
    opt.param_groups[0]["lr"] = 0.0  # what a schedule sets
    w.sum().backward()
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([0.75, 1.75]))


def test_scratch_sgd_takes_a_torch_scheduler_and_resumes_from_its_state():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = ScratchSGD([w], lr=0.1, momentum=0.5)
    scheduler = lr_scheduler.StepLR(opt, 1, gamma=0.5)
    w.sum().backward()
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.05
    state = round_trip({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()})
    again = ScratchSGD([w], lr=0.1, momentum=0.5)
    lr_scheduler.StepLR(again, 1, gamma=0.5).load_state_dict(state["scheduler"])
    again.load_state_dict(state["optimizer"])
    assert again.param_groups[0]["lr"] == 0.05
    assert torch.equal(again.state[w]["velocity"], opt.state[w]["velocity"])


def test_no_scheduler_on_our_optimizers_imports_torch_dynamo():
    """Building each, stepping it and saving and loading its state, in a fresh process."""
    probe = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from test_optim import OPTIMIZERS, SCHEDULERS, model_and_batches, round_trip, train
from mnist_pipeline.models.tutorial import ScratchSGD
optimizers = [ours for ours, _ in OPTIMIZERS.values()] + [lambda p: ScratchSGD(p, lr=0.05)]
for ours in optimizers:
    for schedule in SCHEDULERS.values():
        model, batches = model_and_batches()
        opt = ours(model.parameters())
        scheduler = schedule(opt)
        train(model, opt, scheduler, batches[:3])
        opt.load_state_dict(round_trip(opt.state_dict()))
        scheduler.load_state_dict(round_trip(scheduler.state_dict()))
print('DYNAMO' if 'torch._dynamo' in sys.modules else 'NO-DYNAMO')
"""
    result = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "tests")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NO-DYNAMO"]


def test_a_train_stage_never_imports_torch_dynamo(tmp_path, prepared_dir):
    """Constructing torch.optim.SGD would import torch._dynamo: BENCHMARKS.md times it."""
    import yaml
    from conftest import tiny_params

    params = tmp_path / "params.yaml"
    models = {"fast": {"arch": "fast"}, "logistic": {"arch": "logistic"}}
    params.write_text(yaml.safe_dump(tiny_params(models=models)))
    probe = (
        "import runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n    print('DYNAMO' if 'torch._dynamo' in sys.modules else 'NO-DYNAMO')\n"
    )
    for model in models:
        out = tmp_path / model
        args = ["--params", str(params), "--model", model, "--prepared", str(prepared_dir)]
        args += ["--out", str(out / "m.pt"), "--history", str(out / "h.tsv")]
        args += ["--timing", str(out / "t.json"), "--state", str(out / "state.pt")]
        result = subprocess.run(
            [sys.executable, "-c", probe, str(REPO / "stages" / "train.py"), *args],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("NO-DYNAMO"), result.stdout
