"""optim.py against torch.optim: the same updates and schedule, without importing torch._dynamo."""

import copy
import io
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from mnist_pipeline.optim import SGD, AdamW, OneCycle, ScratchSGD

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
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()
    return used


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("onecycle", [False, True])
def test_same_weights_and_schedule_as_torch_optim(kind, onecycle):
    ours, batches = model_and_batches()
    theirs, _ = model_and_batches()
    if kind == "sgd":
        opt_a = SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        opt_b = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    else:
        opt_a = AdamW(ours.parameters(), lr=0.01, weight_decay=0.01)
        opt_b = torch.optim.AdamW(theirs.parameters(), lr=0.01, weight_decay=0.01, fused=True)
    sched_a = OneCycle(opt_a, max_lr=0.05, total_steps=STEPS) if onecycle else None
    sched_b = (
        torch.optim.lr_scheduler.OneCycleLR(opt_b, max_lr=0.05, total_steps=STEPS)
        if onecycle
        else None
    )
    assert train(ours, opt_a, sched_a, batches) == train(theirs, opt_b, sched_b, batches)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # bit for bit, not just close


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


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
        ),
        (
            lambda p: AdamW(p, lr=0.01, weight_decay=0.01),
            lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01, fused=True),
        ),
    ],
    ids=["sgd", "adamw"],
)
def test_state_dict_has_torch_optim_layout_and_loads_into_torch_optim(ours, theirs):
    """Our state_dict is torch.optim's: a torch optimizer loads it and takes the same steps."""
    model, batches = model_and_batches()
    opt = ours(model.parameters())
    train(model, opt, None, batches[:5])
    state = opt.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a resume state must load with weights_only=True
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
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


def test_onecycle_drives_a_torch_optim_optimizer():
    """OneCycle sets param_groups, so it schedules torch.optim.Adam as OneCycleLR does."""
    model, _ = model_and_batches()
    ours = torch.optim.Adam(model.parameters(), lr=0.01)
    theirs = torch.optim.Adam(model.parameters(), lr=0.01)
    a = OneCycle(ours, max_lr=0.05, total_steps=10)
    b = torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.05, total_steps=10)
    for _ in range(10):
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]
        assert ours.param_groups[0]["betas"] == theirs.param_groups[0]["betas"]
        ours.step(), theirs.step(), a.step(), b.step()


def test_a_train_stage_never_imports_torch_dynamo(tmp_path, prepared_dir):
    """Constructing torch.optim.SGD would import torch._dynamo: 2 s of every stage's start-up."""
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
