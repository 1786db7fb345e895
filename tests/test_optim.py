"""mlp's own fused optimizer and epoch schedules against torch.optim, the oracle: bit for bit, state dicts alike."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mlp_cli.optim import EpochSchedule, FusedOptimizer

CASES = {
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.0, fused=True), dict(lr=0.01, weight_decay=0.0)),
    "adam-decay": (lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05, fused=True), dict(lr=0.01, weight_decay=0.05)),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05, fused=True), dict(lr=0.01, weight_decay=0.05)),
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, fused=True),
            dict(lr=0.05, weight_decay=0.01, momentum=0.9)),
    "sgd-plain": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.0, weight_decay=0.0, fused=True),
                  dict(lr=0.05, weight_decay=0.0, momentum=0.0)),
}


def start_and_grads(steps: int):
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 4, generator=generator), torch.randn(5, generator=generator), torch.randn(3, 5, generator=generator)]
    grads = [[torch.randn(t.shape, generator=generator) for t in start] for _ in range(steps)]
    return start, grads


def run(opt, params, grads) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()


def own(case: str, params):
    kind = case.split("-")[0]
    return FusedOptimizer(kind, params, **CASES[case][1])


def assert_same_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key, state in a["state"].items():
        assert state.keys() == b["state"][key].keys()
        for name, value in state.items():
            other = b["state"][key][name]
            assert value.dtype == other.dtype and torch.equal(value, other), (key, name)


@pytest.mark.parametrize("case", CASES)
def test_same_weights_and_state_as_torch_optim(case):
    start, grads = start_and_grads(5)
    theirs_params = [t.clone().requires_grad_() for t in start]
    ours_params = [t.clone().requires_grad_() for t in start]
    theirs, ours = CASES[case][0](theirs_params), own(case, ours_params)
    run(theirs, theirs_params, grads)
    run(ours, ours_params, grads)
    for a, b in zip(theirs_params, ours_params, strict=True):
        assert torch.equal(a, b)  # the same kernel on the same inputs: exact, whatever the CPU
    assert_same_state(theirs.state_dict(), ours.state_dict())


@pytest.mark.parametrize("case", CASES)
def test_resume_across_implementations_is_bit_identical(case):
    """A last.pt written with torch.optim (before mlp had its own) resumes in ours, and ours loads back into torch."""
    start, grads = start_and_grads(6)
    reference = [t.clone().requires_grad_() for t in start]
    run(CASES[case][0](reference), reference, grads)

    first = [t.clone().requires_grad_() for t in start]
    theirs = CASES[case][0](first)
    run(theirs, first, grads[:3])
    second = [t.detach().clone().requires_grad_() for t in first]
    ours = own(case, second)
    ours.load_state_dict(theirs.state_dict())
    run(ours, second, grads[3:5])
    third = [t.detach().clone().requires_grad_() for t in second]
    back = CASES[case][0](third)
    back.load_state_dict(ours.state_dict())
    run(back, third, grads[5:])
    for a, b in zip(reference, third, strict=True):
        assert torch.equal(a, b)


def test_a_parameter_without_gradient_is_skipped_as_torch_does():
    start, grads = start_and_grads(3)
    theirs_params = [t.clone().requires_grad_() for t in start]
    ours_params = [t.clone().requires_grad_() for t in start]
    theirs, ours = CASES["adam"][0](theirs_params), own("adam", ours_params)
    for params, opt in ((theirs_params, theirs), (ours_params, ours)):
        for i, step_grads in enumerate(grads):
            for j, (p, g) in enumerate(zip(params, step_grads, strict=True)):
                p.grad = None if (i == 1 and j == 2) else g.clone()
            opt.step()
    for a, b in zip(theirs_params, ours_params, strict=True):
        assert torch.equal(a, b)
    assert_same_state(theirs.state_dict(), ours.state_dict())


@pytest.mark.filterwarnings("ignore:Detected call of")  # torch's scheduler stepped without optimizer steps: lr only
@pytest.mark.parametrize("kind,make", [
    ("cosine", lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=17)),
    ("step", lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.3)),
])
def test_schedules_give_torch_lr_sequence_exactly(kind, make):
    p = torch.zeros(2, requires_grad=True)
    theirs_opt = torch.optim.Adam([p], lr=0.003, fused=True)
    theirs = make(theirs_opt)
    ours_opt = FusedOptimizer("adam", [torch.zeros(2, requires_grad=True)], lr=0.003, weight_decay=0.0)
    ours = EpochSchedule(kind, ours_opt, T_max=17, step_size=4, gamma=0.3)
    for _ in range(17):
        theirs.step()
        ours.step()
        assert ours_opt.param_groups[0]["lr"] == theirs_opt.param_groups[0]["lr"]  # exact: same recurrence
    assert ours.state_dict() == theirs.state_dict()
    again = EpochSchedule(kind, FusedOptimizer("adam", [torch.zeros(2, requires_grad=True)], lr=0.003, weight_decay=0.0),
                          T_max=30, step_size=7, gamma=0.5)
    again.load_state_dict(theirs.state_dict())  # a last.pt written with torch's scheduler: its schedule wins
    assert again.last_epoch == 17 and again.lr_at(17) == theirs_opt.param_groups[0]["lr"]
    for _ in range(5):  # past T_max too, where CosineAnnealingLR turns back up
        theirs.step()
        again.step()
        assert again.optimizer.param_groups[0]["lr"] == theirs_opt.param_groups[0]["lr"]


def test_short_training_never_imports_dynamo(tmp_path, multiclass_config):
    """The point of the own optimizer and baseline: `torch._dynamo` (1-1.3 s of start-up) is never imported."""
    code = (
        "import sys\n"
        "from mlp_cli.cli import app\n"
        f"app(['train', {str(multiclass_config)!r}, 'train.epochs=2', 'output_dir={tmp_path / 'run'}', '--quiet'],"
        " standalone_mode=False)\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "summary.json").exists()
