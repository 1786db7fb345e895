"""What the hidden layers add: the majority-class (or mean) predictor and the same net with no hidden layer."""

from __future__ import annotations

import numpy as np
import torch

from mlp_cli.components import loss_function
from mlp_cli.config import Config
from mlp_cli.data import Dataset, Split
from mlp_cli.metrics import Accumulator
from mlp_cli.tasks import TASKS

LINEAR_MAX_ROWS = 20_000  # the linear fit sees at most this many training rows (a random subset beyond): 385
# parameters of a 54->7 softmax are pinned down by far fewer rows, and the fit stays a few percent of training


def baselines(config: Config, data: Dataset, device: torch.device) -> dict | None:
    """Test-split metrics (validation when there is no test split) of both baselines."""
    target = data.test if data.test is not None else data.val
    if target is None:
        return None
    names = (TASKS[config.task].baseline, "no_hidden")
    return {
        names[0]: constant_baseline(config, data, target),
        names[1]: linear_baseline(config, data, target, device),
    }


def _metrics(config: Config, data: Dataset, split: Split, outputs: torch.Tensor) -> dict:
    prep = data.prep
    y = split.y.to(outputs.device)
    acc = Accumulator.for_task(config.task, prep, outputs.device)
    acc.update(outputs, y, loss_function(config.loss_name)(outputs, y))
    return acc.result(prep.labels)


@torch.no_grad()
def constant_baseline(config: Config, data: Dataset, split: Split) -> dict:
    """Predict the training prior: class frequencies (logits = log-prior) or the training mean."""
    outputs = TASKS[config.task].prior(data.train.y, len(split), data.n_outputs)
    return _metrics(config, data, split, outputs.float())


def linear_baseline(config: Config, data: Dataset, split: Split, device: torch.device) -> dict:
    """Linear(n_inputs, n_outputs) with the run's loss: least squares in closed form for MSE, otherwise fitted
    full-batch by a small L-BFGS (softmax/logistic/robust regression) on at most LINEAR_MAX_ROWS training rows.

    Why not torch.optim.LBFGS: constructing any torch.optim optimizer imports torch._dynamo (1-1.3 s, more than
    the whole satimage training), and its 200 strong-Wolfe iterations over every row cost up to 75 % of the
    training it is compared to. The fit is convex, so the cheaper fit lands on the same optimum to the tolerance
    below; what the baseline reports is unchanged beyond that.
    """
    generator = torch.Generator().manual_seed(config.train.seed)
    x, y = data.train.x, data.train.y
    if len(x) > LINEAR_MAX_ROWS:
        pick = torch.randperm(len(x), generator=generator)[:LINEAR_MAX_ROWS].to(x.device)
        x, y = x[pick], y[pick]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = torch.nn.Linear(data.n_inputs, data.n_outputs).to(device)
    decay = config.train.weight_decay
    squeeze = TASKS[config.task].squeeze
    if config.loss_name == "mse":
        weight, bias = _least_squares(x.double(), y.double().reshape(len(y), -1), decay)
    else:
        # float64 numpy for the fit: the line search compares losses that differ in their last float32 digits near
        # the end, and numpy's per-call cost on these small arrays is a fraction of torch's.
        xd = x.detach().cpu().double().numpy()
        objective = _objective(config, xd, y.detach().cpu().numpy(), decay)
        w0 = model.weight.detach().cpu().double().numpy()
        theta = _lbfgs(objective, np.concatenate([w0.ravel(), model.bias.detach().cpu().double().numpy()]))
        weight = torch.from_numpy(theta[: w0.size].reshape(w0.shape))
        bias = torch.from_numpy(theta[w0.size :])
    with torch.no_grad():
        model.weight.copy_(weight.reshape(model.weight.shape))
        model.bias.copy_(bias.reshape(model.bias.shape))
        out = squeeze(model(split.x))
    return _metrics(config, data, split, out)


def _least_squares(x: torch.Tensor, y: torch.Tensor, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin over (W, b) of mean((xW' + b - y)^2) + decay/2 |W|^2 (the bias not decayed), by its normal equations."""
    n, k = x.shape
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], dim=1)
    gram = design.t() @ design
    gram[:k, :k] += torch.eye(k, dtype=x.dtype, device=x.device) * (n * decay / 2)
    coef = torch.linalg.lstsq(gram, design.t() @ y).solution  # lstsq: a rank-deficient table (constant column) is fine
    return coef[:k].t(), coef[k]


MAX_ITER = 100
HISTORY = 20


def _objective(config: Config, x: np.ndarray, y: np.ndarray, decay: float):
    """(W, b) flattened -> (mean loss + decay/2 |W|^2, its gradient), for the run's loss: the gradients of
    cross-entropy and logistic loss in closed form; other losses (mae, huber) through torch's autograd."""
    n, k = x.shape
    xt = torch.from_numpy(x)
    if config.loss_name in ("cross_entropy", "bce"):
        # torch rather than numpy for the matrix products: numpy's OpenBLAS would start its own threads beside
        # torch's OpenMP ones, and on a busy 2-core machine that is 10-100x slower.
        binary = config.loss_name == "bce"
        yt = torch.from_numpy(y)
        rows = torch.arange(n)

        def objective(theta: np.ndarray):
            t = torch.from_numpy(theta)
            split = t.numel() - t.numel() // (k + 1)
            w, b = t[:split].view(-1, k), t[split:]
            z = torch.addmm(b, xt, w.t())
            if binary:
                z = z[:, 0]
                yd = yt.double()
                loss = torch.nn.functional.softplus(z) - yd * z
                dz = (torch.sigmoid(z) - yd)[:, None] / n
            else:
                logp = torch.log_softmax(z, dim=1)
                loss = -logp[rows, yt]
                dz = logp.exp_()
                dz[rows, yt] -= 1.0
                dz /= n
            value = float(loss.sum()) / n + 0.5 * decay * float((w * w).sum())
            return value, torch.cat([(dz.t() @ xt + decay * w).flatten(), dz.sum(0)]).numpy()

        return objective
    loss_fn, squeeze = loss_function(config.loss_name), TASKS[config.task].squeeze
    yt = torch.from_numpy(y).double()

    def autograd_objective(theta: np.ndarray):
        t = torch.from_numpy(theta).requires_grad_()
        w, b = t[: t.numel() - t.numel() // (k + 1)].view(-1, k), t[t.numel() - t.numel() // (k + 1) :]
        loss = loss_fn(squeeze(torch.addmm(b, xt, w.t())), yt) / n + 0.5 * decay * w.pow(2).sum()
        (grad,) = torch.autograd.grad(loss, t)
        return float(loss.detach()), grad.numpy()

    return autograd_objective


def _lbfgs(objective, theta: np.ndarray, tolerance: float = 1e-7) -> np.ndarray:
    """Minimizes objective(theta) -> (loss, gradient) by L-BFGS (two-loop recursion, backtracking Armijo line
    search) and returns theta. Stops at MAX_ITER iterations, or when the gradient's largest entry falls below
    `tolerance` or the loss changes by less than 1e-9 (torch.optim.LBFGS's tolerance_grad and tolerance_change).
    """
    loss, grad = objective(theta)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for iteration in range(MAX_ITER):
        if np.abs(grad).max() <= tolerance:
            break
        q = grad.copy()
        if s_hist:  # two-loop recursion
            alphas = []
            for s, y in zip(reversed(s_hist), reversed(y_hist), strict=True):
                alpha = s.dot(q) / y.dot(s)
                alphas.append(alpha)
                q -= alpha * y
            q *= s_hist[-1].dot(y_hist[-1]) / y_hist[-1].dot(y_hist[-1])
            for (s, y), alpha in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
                q += (alpha - y.dot(q) / y.dot(s)) * s
        direction = -q
        slope = grad.dot(direction)
        if slope >= 0:  # not a descent direction (rounding): restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            direction, slope = -grad, -grad.dot(grad)
        step = min(1.0, 1.0 / np.abs(grad).sum()) if iteration == 0 else 1.0
        for _ in range(30):
            new_loss, new_grad = objective(theta + step * direction)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        s, y = step * direction, new_grad - grad
        if y.dot(s) > 1e-10:
            s_hist.append(s)
            y_hist.append(y)
            if len(s_hist) > HISTORY:
                s_hist.pop(0)
                y_hist.pop(0)
        theta, grad, change, loss = theta + s, new_grad, abs(new_loss - loss), new_loss
        if change < 1e-9:
            break
    return theta
