"""Training: seeded, device-resident mini-batch loop with early stopping, atomic checkpoints, resume and signals.

The hot path is plain tensors: one permutation and one gather per epoch, then contiguous slices; losses stay
on the device and are read at most a few times a second. Each rank of a data-parallel job takes its share of
every global batch, so the same loop serves one process or many. What training reports lives in callback.py,
signal handling in signals.py, last.pt's state in state.py and the run folder in rundir.py.
"""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from mlp_cli import checkpoint, params
from mlp_cli.backprop import HandStep
from mlp_cli.callback import Callback, EpochReport, Progress, RunInfo
from mlp_cli.components import fast_step, loss_function, optimizer as make_optimizer, scheduler as make_scheduler
from mlp_cli.config import Config
from mlp_cli.data import Dataset, ReadAhead, Split, load_dataset
from mlp_cli.device import available_bytes, default_threads, human_bytes, resolve_device
from mlp_cli.distributed import World, epoch_plan, local_positions
from mlp_cli.errors import MLPWarning, RunError, TrainingDiverged, TrainingInterrupted
from mlp_cli.evaluate import autocast, evaluate_split, model_outputs
from mlp_cli.files import FolderLock, json_safe, write_text
from mlp_cli.metrics import MAIN_METRIC
from mlp_cli.model import build_model, forward_chain, widths
from mlp_cli.rundir import RUN_FILES, RunDir
from mlp_cli.signals import SignalHandlers, StopFlag
from mlp_cli.state import TrainState, pack_history, unpack_history
from mlp_cli.tasks import TASKS

if TYPE_CHECKING:
    from mlp_cli.diagnostics import Diagnostics

__all__ = [
    "RUN_FILES", "Callback", "EpochReport", "Levers", "Progress", "RunInfo", "StopFlag", "TrainState", "Trainer",
    "pack_history", "train", "unpack_history",
]

PROGRESS_EVERY_S = 0.1
VOTE_EVERY = 16  # steps between the ranks' stop votes under torchrun
PROBE_EVERY_S = 30.0  # the thread probe is repeated at the first epoch start this long after the last one


@dataclass(frozen=True)
class Levers:
    """Hot-path speed-ups, all on by default; benchmarks/bench.py turns each off to measure what it buys."""

    fused: bool = True  # fused (single-kernel) optimizer
    fast_step: bool = True  # the fused Adam kernel called directly (components.fast_step)
    fast_forward: bool = True  # forward without nn.Module hook dispatch (model.forward_chain)
    own_optimizer: bool = True  # optim.FusedOptimizer instead of torch.optim (never imports torch._dynamo)
    probe_threads: bool = True  # CPU threads chosen by a timed probe (device.probe_threads), not default_threads
    hand_backward: bool = True  # gradients by backprop.HandStep once checked equal to autograd's on the first batch


class Trainer:
    """One training run of one config into one run directory.

    `run()` is `setup()`, then `train_epoch()` and `end_epoch()` per epoch until done, then `finish()`; tests and
    benchmarks call these seams one by one.
    """

    def __init__(
        self,
        config: Config,
        run_dir: Path | None = None,
        *,
        callback: Callback | None = None,
        data: Dataset | None = None,
        read_ahead: ReadAhead | None = None,
        world: World | None = None,
        resume: bool = False,
        overwrite: bool = False,
        stop: StopFlag | None = None,
        levers: Levers | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir if run_dir is not None else cast(str, config.output_dir))  # load_config fills output_dir
        self.rundir = RunDir(self.run_dir, config, resume=resume, overwrite=overwrite)
        self.callback = callback or Callback()
        self.world = world or World()
        self.resume = resume
        self.overwrite = overwrite
        self.stop = stop if stop is not None else StopFlag()
        self.levers = levers or Levers()
        self.data = data
        self.read_ahead = read_ahead  # this config's files, already being read on a thread (cli train)
        self.state = TrainState()
        self.best_state: dict | None = None
        # Set by setup():
        self.device: torch.device | None = None
        self.model: torch.nn.Sequential | None = None
        self.net: torch.nn.Module | None = None  # the model as trained: wrapped for DDP and/or compiled
        self.loss_fn: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.generator: torch.Generator | None = None
        self.diagnostics: Diagnostics | None = None
        self.total_params = 0
        self.started = 0.0  # perf_counter at setup; this session's wall time counts from here
        self.next_save = math.inf  # perf_counter at which the next mid-epoch last.pt is due
        self.lock: FolderLock | None = None  # the run directory's lock, held by the main rank from setup to finish
        self.threads = 1
        self.thread_probes: list[dict] = []  # each probe's record (device.probe_threads), for summary.json
        self.next_probe = math.inf
        self.hand_checked: bool | None = None  # HandStep's gradients equal autograd's on this run's first batch

    # -- setup

    def check_run_dir(self) -> dict | None:
        """Refuse to clobber a run unless asked; with --resume, load last.pt. Changes nothing on disk."""
        return self.rundir.check()

    def _check_memory(self, device: torch.device, n_in: int, n_out: int, rows: int | None = None) -> None:
        cfg = self.config
        # A batch never holds more rows than the training split: batch_size 10**9 means full-batch training.
        batch = min(cfg.train.batch_size, rows) if rows else cfg.train.batch_size
        need = params.memory_bytes(widths(n_in, n_out, cfg.model), batch, cfg.train.optimizer)
        have = available_bytes(device)
        if have is not None and need > have:
            total = params.total(params.count_layers(widths(n_in, n_out, cfg.model)))
            raise RunError(
                f"the model needs at least {human_bytes(need)} to train ({total:,} parameters, their gradients and "
                f"{cfg.train.optimizer} state, plus activations for batch {batch}) but {device.type} has "
                f"{human_bytes(have)} free; shrink model.hidden or train.batch_size"
            )

    def _stop_before_training(self) -> None:
        if self.stop:
            assert self.stop.signum is not None  # a StopFlag is true only once a signal set it
            raise TrainingInterrupted(
                f"{signal.Signals(self.stop.signum).name} received before training started; nothing was changed",
                self.stop.signum,
            )

    # -- run

    def run(self) -> dict:
        with SignalHandlers(self.stop):
            try:
                self.setup()
                self._loop()
                return self.finish()
            finally:
                self.release_lock(failed=True)

    def release_lock(self, failed: bool = False) -> None:
        """Let other runs into the run directory (`failed`: also remove it if this run created it and left it empty)."""
        if self.lock is not None:
            self.lock.release(failed=failed)
            self.lock = None

    def setup(self) -> None:
        """Everything before the first step; nothing in the run directory changes until data and model are valid."""
        self.started = time.perf_counter()
        cfg, tcfg = self.config, self.config.train
        if self.world.is_main and self.lock is None:
            # Taken before anything is checked or read, so two runs never interleave their files.
            self.lock = FolderLock(self.run_dir).acquire()
        stored = self.check_run_dir()
        device = resolve_device(tcfg.device)
        if cfg.model.batch_norm and tcfg.batch_size < 2 * self.world.size:
            raise RunError(
                f"model.batch_norm needs at least 2 rows per process in every batch: train.batch_size "
                f"{tcfg.batch_size} over {self.world.size} processes; raise it to {2 * self.world.size} or more"
            )
        if device.type == "cuda" and self.world.size > 1:
            device = torch.device("cuda", self.world.local_rank)  # torchrun: one GPU per process on this node
        if tcfg.precision == "bf16" and device.type != "cuda":
            warnings.warn("train.precision bf16 applies on CUDA only; training in float32 on the CPU", MLPWarning, stacklevel=2)
        if self.data is None and self.read_ahead is not None:
            self.read_ahead.wait(lambda: bool(self.stop))  # Ctrl-C need not wait for a long parse to end
            self._stop_before_training()
        data = self.data if self.data is not None else load_dataset(cfg, self.read_ahead)
        self.read_ahead = None  # its arrays are taken; let them go with the full table
        if stored is not None:
            self.rundir.check_same_data(stored, data.prep)
        n_in, n_out = data.n_inputs, data.n_outputs
        self._check_memory(device, n_in, n_out, len(data.train))
        layers = params.count_layers(widths(n_in, n_out, cfg.model), cfg.model.batch_norm)
        total = self.total_params = params.total(layers)
        threads = tcfg.threads or default_threads(total)
        if device.type == "cpu":
            torch.set_num_threads(threads)
        if data.val is None and tcfg.early_stopping:
            warnings.warn(
                "there are no validation rows (data.val_fraction is 0, or rounds to 0 rows for this little data), so "
                "early stopping is off and the last epoch's weights are kept",
                MLPWarning,
                stacklevel=2,
            )

        seed_everything(tcfg.seed)
        model = build_model(n_in, n_out, cfg.model).to(device)
        self.model = model
        self.net = self._wrap(model, device)
        self.loss_fn = loss_function(cfg.loss_name)
        self.optimizer = make_optimizer(
            tcfg.optimizer, model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, momentum=tcfg.momentum,
            fused=self.levers.fused and fused_available(device),
            # torch.optim for what our own optimizer does not cover: plateau (its scheduler needs a torch
            # Optimizer) and compile (which imports torch._dynamo anyway).
            own=self.levers.own_optimizer and tcfg.scheduler != "plateau" and not tcfg.compile,
        )
        self.scheduler = make_scheduler(
            tcfg.scheduler, self.optimizer, epochs=tcfg.epochs, step_size=tcfg.step_size, gamma=tcfg.gamma,
            patience=max(1, tcfg.early_stopping // 2) if tcfg.early_stopping else 5,
        )
        self.generator = torch.Generator().manual_seed(tcfg.seed)
        self.device = device
        self.data = data.to(device)
        if stored is not None:
            self._restore(stored)
        self.threads = threads
        if device.type == "cpu" and not tcfg.threads and self.levers.probe_threads and self.world.size == 1 \
                and not tcfg.compile:
            threads = self._probe_threads()
        self._stop_before_training()  # the last moment at which nothing on disk has changed
        if self.world.is_main:
            removed = self.rundir.prepare(fresh=stored is None)
            if removed:
                self.callback.on_message(f"removed {removed} temporary file(s) left by an interrupted save")
        self.world.barrier()

        steps = math.ceil(len(data.train) / tcfg.batch_size)
        self.callback.on_start(
            RunInfo(cfg, self.run_dir, str(device), threads, layers, total, len(data.train),
                    len(data.val) if data.val is not None else 0, len(data.test) if data.test is not None else 0,
                    steps, self.state.epoch, data.prep.labels, self.world.size)
        )
        if tcfg.diagnostics:
            from mlp_cli.diagnostics import Diagnostics

            self.diagnostics = Diagnostics(model, cfg.model.activation, cfg.task, self.run_dir if self.world.is_main else None)
            if stored is None:
                rows = self.diagnostics.measure(self._diagnostic_batch(), self.loss_fn, epoch=0)
                self.callback.on_diagnostics(rows, "layer health at initialization")
        self.next_save = time.perf_counter() + tcfg.checkpoint_interval

    def _wrap(self, model, device):
        net = model
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            if self.config.model.batch_norm and device.type == "cuda":
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            elif self.config.model.batch_norm:
                warnings.warn(
                    "batch_norm under torchrun on the CPU normalizes with each process's own rows (SyncBatchNorm "
                    "needs CUDA), so results differ slightly from one process",
                    MLPWarning,
                    stacklevel=2,
                )
            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if self.config.train.compile:
            net = torch.compile(net)
        return net

    def _probe_threads(self) -> int:
        """Times a few real-sized training steps on a scratch copy of the model at 1, 2, ... threads and trains
        with the fastest count whose results are bit-identical to one thread's (device.probe_threads)."""
        import copy

        from mlp_cli.device import probe_threads, thread_candidates

        assert self.data is not None and self.model is not None and self.loss_fn is not None  # setup() sets them
        candidates, train = thread_candidates(), self.data.train
        if len(candidates) < 2 or not isinstance(train, Split):
            return self.threads
        batch, n = self.config.train.batch_size, len(train)
        sizes = sorted({size for size in (min(batch, n), n % batch) if size >= 2})  # full and short last batch
        batches = [(train.x[:size], train.y[:size]) for size in sizes]
        model, loss_fn, task = copy.deepcopy(self.model).train(), self.loss_fn, self.config.task

        def step() -> list[torch.Tensor]:
            outputs = []
            with torch.random.fork_rng(devices=[]):  # dropout draws the same masks each time, and not the run's
                torch.manual_seed(0)
                for xb, yb in batches:
                    for p in model.parameters():
                        p.grad = None
                    loss = loss_fn(model_outputs(model, xb, task).float(), yb)
                    loss.backward()
                    outputs += [loss.detach()] + [p.grad for p in model.parameters() if p.grad is not None]
            return outputs

        self.threads, record = probe_threads(step, candidates)
        torch.set_num_threads(self.threads)
        record["epoch"] = self.state.epoch
        self.thread_probes.append(record)
        self.next_probe = time.perf_counter() + PROBE_EVERY_S
        return self.threads

    def _diagnostic_batch(self):
        assert self.data is not None, "called from setup() once the data exist"
        train = self.data.train
        return train.head(min(len(train), max(self.config.train.batch_size, 256)))

    def _loop(self) -> None:
        tcfg = self.config.train
        assert self.data is not None, "call setup() first"
        while self.state.epoch < tcfg.epochs:
            # Checked before each epoch, so a resumed run that had already stopped early stays stopped.
            if tcfg.early_stopping and self.data.val is not None and self.state.bad_epochs >= tcfg.early_stopping:
                self.callback.on_message(
                    f"early stopping: validation loss has not improved for {tcfg.early_stopping} epochs; "
                    f"keeping epoch {self.state.best_epoch}"
                )
                break
            epoch = self.state.epoch + 1
            if time.perf_counter() >= self.next_probe:  # the machine may have got busier or quieter
                self._probe_threads()
            epoch_started = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            report = self.end_epoch(epoch, train_loss, time.perf_counter() - epoch_started)
            # Under torchrun every rank must leave the loop together, so a stop asked on any rank stops all.
            if self.world.agree(bool(self.callback.on_epoch(report)), self.device):
                self.callback.on_message(f"stopped after epoch {epoch}: a callback asked to stop")
                break

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training rows; returns the mean training loss (read once, at the end)."""
        assert self.data is not None and self.model is not None and self.net is not None and self.loss_fn is not None, "call setup() first"
        assert self.optimizer is not None and self.generator is not None and self.device is not None, "call setup() first"
        tcfg, train, world = self.config.train, self.data.train, self.world
        n, batch = len(train), tcfg.batch_size
        resuming_mid_epoch = self.state.step > 0
        if resuming_mid_epoch:
            assert self.state.epoch_generator_state is not None  # saved with every mid-epoch last.pt
            self.generator.set_state(self.state.epoch_generator_state)
        self.state.epoch_generator_state = self.generator.get_state()
        if isinstance(train, Split):
            order = torch.randperm(n, generator=self.generator)
            min_rows = 2 * world.size if self.config.model.batch_norm else 1
            plan = epoch_plan(n, batch, world, min_rows)
            positions = local_positions(n, batch, world, min_rows)
            if positions is not None:
                order = order[positions]
            order = order.to(self.device, non_blocking=True)
            # One gather per epoch; every batch below is then a contiguous view.
            x_epoch, y_epoch = train.x.index_select(0, order), train.y.index_select(0, order)
            counts = [count for count, _, _ in plan]
            batches = ((x_epoch[lo:hi], y_epoch[lo:hi]) for _, lo, hi in plan[self.state.step :])
        else:  # streamed from disk: the epoch's shuffle is seeded from the same generator
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            counts, batches = train.epoch(seed, batch, world, skip=self.state.step)
        first = self.state.step
        step_losses = torch.zeros(len(counts), dtype=torch.float32, device=self.device)
        if resuming_mid_epoch and world.is_main:  # saved losses are sums over ranks; rank 0 carries them
            assert self.state.partial_losses is not None  # saved with every mid-epoch last.pt
            step_losses.copy_(self.state.partial_losses.to(self.device))
        # Each step's loss sum stays on the device: appended to a short list (cheaper than writing into a
        # tensor every step) and moved into step_losses whenever losses are read, a few times a second.
        pending: list[torch.Tensor] = []
        flushed = [first]

        def losses() -> torch.Tensor:
            if pending:
                step_losses[flushed[0] : flushed[0] + len(pending)] = torch.stack(pending)
                flushed[0] += len(pending)
                pending.clear()
            return step_losses

        loss_fn, task = self.loss_fn, self.config.task
        levers = self.levers
        net = forward_chain(self.model) if self.net is self.model and levers.fast_forward else self.net
        # The direct kernel call needs the optimizer's state, which its own first step creates.
        optimizer_step = self.optimizer.step if not levers.fast_step else fast_step(self.optimizer) if self.optimizer.state else None
        clip = tcfg.grad_clip
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        # The loss is a sum; scaling it by world/count turns its gradient into the global batch mean. A batch
        # size has at most two values per epoch.
        seeds = {count: torch.tensor(world.size / count, device=self.device) for count in set(counts)}
        hand = self._hand_step()
        self.net.train()
        distributed = world.size > 1
        cast = autocast(self.device, tcfg.precision)
        next_tick = time.perf_counter() + PROGRESS_EVERY_S
        next_save = self.next_save
        epoch_started = time.perf_counter()
        for step, (xb, yb) in zip(range(first, len(counts)), batches, strict=True):
            if hand is not None and self.hand_checked is None:
                self.hand_checked = hand.matches_autograd(self.model, loss_fn, xb, yb, seeds[counts[step]])
                hand = hand if self.hand_checked else None
            if hand is not None:
                grads, loss_sum = hand(xb, yb, seeds[counts[step]])
                for p, grad in zip(parameters, grads, strict=True):
                    p.grad = grad
            else:
                with cast:
                    out = model_outputs(net, xb, task)
                loss_sum = loss_fn(out.float(), yb)
                for p in parameters:  # zero_grad(set_to_none=True) without the Optimizer's bookkeeping
                    p.grad = None
                # Scaled in the graph rather than backward(seed): the same gradients bit for bit (1.0 * seed is
                # seed), but backward with a gradient argument imports torch.fx's symbolic shapes and sympy (0.5-1 s).
                (loss_sum * seeds[counts[step]]).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, clip, foreach=True)
            if optimizer_step is None:
                self.optimizer.step()
                optimizer_step = fast_step(self.optimizer)
            else:
                optimizer_step()
            pending.append(loss_sum.detach())
            # Under torchrun every rank must stop at the same step, or the others would wait forever in all-reduce;
            # they vote every VOTE_EVERY steps (and at the epoch's end), not every step, to spare a sync per step.
            if distributed:
                if (step + 1) % VOTE_EVERY == 0 or step + 1 == len(counts):
                    if world.agree(bool(self.stop), self.device):
                        self._interrupt(epoch, step + 1, losses())
            elif self.stop:
                self._interrupt(epoch, step + 1, losses())
            now = time.perf_counter()
            if now >= next_tick:
                next_tick = now + PROGRESS_EVERY_S
                done = losses()[: step + 1]
                running = done.sum().item()
                if not distributed and not math.isfinite(running):
                    self._diverged(epoch, done)
                rows = sum(counts[: step + 1])
                self.callback.on_progress(Progress(epoch, tcfg.epochs, step + 1, len(counts), rows, now - epoch_started, running / rows))
                # Ranks reach their time checks at different steps, so under torchrun last.pt is written only
                # at epoch ends and on a signal, where all ranks agree on the state.
                if not distributed and now >= next_save and step + 1 < len(counts):
                    self.state.step = step + 1
                    self.state.partial_losses = losses().cpu()
                    self.save_last()
                    next_save = time.perf_counter() + tcfg.checkpoint_interval
        self.next_save = next_save
        self.state.step = 0
        self.state.partial_losses = None
        every = losses()
        total = world.all_reduce(every.double().sum().reshape(1))
        mean = total.item() / n
        if not math.isfinite(mean):
            self._diverged(epoch, every)
        return mean
    def _hand_step(self) -> HandStep | None:
        """backprop.HandStep for this epoch, where it applies and has not failed its first-batch check."""
        assert self.model is not None and self.loss_fn is not None and self.device is not None, "call setup() first"
        tcfg = self.config.train
        if not self.levers.hand_backward or self.hand_checked is False or self.net is not self.model \
                or (tcfg.precision != "fp32" and self.device.type == "cuda"):
            return None
        return HandStep.for_model(self.model, self.loss_fn, TASKS[self.config.task].squeeze)

    def _diverged(self, epoch: int, losses: torch.Tensor) -> None:
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()
        step = int(bad[0]) + 1 if len(bad) else len(losses)
        kept = (
            f"best.pt and last.pt from epoch {self.state.epoch} are kept" if self.state.epoch else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"the training loss became non-finite at epoch {epoch}, step {step}; lower train.lr "
            f"(now {self.config.train.lr:g}), set train.grad_clip, or check the data for extreme values; {kept}"
        )

    def _interrupt(self, epoch: int, step: int, losses: torch.Tensor) -> None:
        signum = self.stop.signum or signal.SIGINT
        name = signal.Signals(signum).name
        # Saved as a mid-epoch state even after the epoch's last step; resume then just closes the epoch.
        self.state.step = step
        self.state.partial_losses = self.world.all_reduce(losses.clone()).cpu()
        if not torch.isfinite(self.state.partial_losses[:step]).all():
            self._diverged(epoch, self.state.partial_losses[:step])  # never save weights that are already NaN
        self.save_last()
        raise TrainingInterrupted(
            f"{name} received: stopped at epoch {epoch}, step {step}; saved {self.run_dir / 'last.pt'}", signum
        )

    def end_epoch(self, epoch: int, train_loss: float, seconds: float) -> EpochReport:
        """Validate, keep the best weights, step the scheduler, write best.pt, metrics.csv and last.pt."""
        cfg, state = self.config, self.state
        assert self.data is not None and self.model is not None and self.optimizer is not None, "call setup() first"
        val = None
        if self.data.val is not None:
            val = self.evaluate(self.data.val)
        monitor = val["loss"] if val is not None else train_loss
        improved = monitor < state.best_loss
        if improved:
            state.best_loss, state.best_epoch, state.bad_epochs = monitor, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            state.bad_epochs += 1
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(monitor)
            else:
                self.scheduler.step()
        main = MAIN_METRIC[cfg.task]
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"] if val else None,
               f"val_{main}": val[main] if val else None, "lr": lr, "seconds": round(seconds, 4)}
        state.history.append(row)
        state.epoch = epoch
        diagnostics = None
        if self.diagnostics is not None:
            diagnostics = self.diagnostics.measure(self._diagnostic_batch(), self.loss_fn, epoch=epoch)
        if self.world.is_main:
            if improved and self.data.val is not None:
                assert self.best_state is not None  # an improved epoch has just stored its weights
                checkpoint.save(self.run_dir / "best.pt", self.payload(self.best_state, epoch, {"val": val}, kind="best"))
            self.rundir.write_metrics(state.history)
            self.save_last()
        self.world.barrier()
        return EpochReport(epoch, cfg.train.epochs, train_loss, val, lr, seconds, improved, state.best_epoch, main, diagnostics)

    def evaluate(self, split) -> dict:
        """Loss and metrics of the current model on `split` (all ranks' rows under torchrun)."""
        from mlp_cli.metrics import Accumulator

        assert self.data is not None and self.model is not None, "call setup() first"
        prep = self.data.prep
        acc = Accumulator.for_task(self.config.task, prep, self.device)
        if self.world.size > 1:
            split = split.shard(self.world)
        evaluate_split(self.model, split, self.config, prep, self.loss_fn, self.config.train.precision, acc)
        if self.world.size > 1:
            acc.load_state(self.world.all_reduce(acc.state()))
        return acc.result(prep.labels)

    # -- files

    def payload(self, model_state: dict, epoch: int, metrics: dict, kind: str, **extra) -> dict:
        """A checkpoint of this run holding `model_state`."""
        assert self.data is not None, "call setup() first"
        return checkpoint.payload(self.config, model_state, self.data.prep, kind=kind, epoch=epoch, metrics=metrics, **extra)

    def save_last(self) -> None:
        """last.pt: the model and everything a resume needs to continue bit for bit (main rank only)."""
        if not self.world.is_main:
            return
        assert self.model is not None and self.generator is not None and self.device is not None, "call setup() first"
        train_state = self.state.to_dict(
            optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator, device=self.device,
            best_state=self.best_state, elapsed=time.perf_counter() - self.started,
        )
        metrics = {"history": self.state.history[-1:]}
        checkpoint.save(
            self.run_dir / "last.pt",
            self.payload(self.model.state_dict(), self.state.epoch, metrics, kind="last", train_state=train_state),
        )

    def _restore(self, stored: dict) -> None:
        assert self.model is not None and self.generator is not None, "called from setup() once these exist"
        self.model.load_state_dict(stored["model_state"])
        self.state, best_state = TrainState.from_dict(
            stored["train_state"], optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator
        )
        if best_state is not None:
            self.best_state = {k: v.to(self.device) for k, v in best_state.items()}

    def finish(self) -> dict:
        """Keep the best weights, evaluate every split and the baselines, write best.pt and summary.json."""
        cfg, state = self.config, self.state
        assert self.data is not None and self.model is not None and self.device is not None, "call setup() first"
        if self.best_state is not None and self.data.val is not None:
            self.model.load_state_dict(self.best_state)
        else:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            state.best_epoch = state.epoch
        train = self.evaluate(self.data.train)
        val = self.evaluate(self.data.val) if self.data.val is not None else None
        # The same Split object when one file is train and test (load_dataset): the same rows give the same figures.
        test = copy.deepcopy(train) if self.data.test is self.data.train else self.evaluate(self.data.test) if self.data.test is not None else None
        baselines = None
        if self.world.is_main and isinstance(self.data.train, Split):  # baselines need the table in memory
            from mlp_cli.baselines import baselines as compute_baselines

            baselines = compute_baselines(self.config, self.data, self.device)
        wall = state.wall_seconds + (time.perf_counter() - self.started)
        summary = {
            "params": self.total_params,
            "epochs_run": state.epoch,
            "best_epoch": state.best_epoch,
            "stopped_early": state.epoch < cfg.train.epochs,
            "wall_seconds": round(wall, 3),
            "device": str(self.device),
            "threads": self.threads if self.device.type == "cpu" else None,
            "thread_probes": self.thread_probes,
            "world_size": self.world.size,
            "train": train,
            "val": val,
            "test": test,
            "baselines": baselines,
            "versions": checkpoint.versions(),
            "run_dir": str(self.run_dir),
        }
        if self.world.is_main:
            checkpoint.save(
                self.run_dir / "best.pt",
                self.payload(self.best_state, state.best_epoch, {"val": val, "test": test}, kind="best"),
            )
            write_text(self.run_dir / "summary.json", json.dumps(json_safe(summary), indent=2) + "\n")
        self.release_lock()
        self.world.barrier()
        self.callback.on_end(summary)
        return summary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def fused_available(device: torch.device) -> bool:
    """torch has fused (single-kernel) Adam/AdamW/SGD for CUDA, and for CPU since 2.4."""
    return device.type in ("cuda", "cpu")


def train(config: Config, run_dir: Path | None = None, **options) -> dict:
    """Train `config` into `run_dir` (default: its output_dir); returns the summary written to summary.json."""
    return Trainer(config, run_dir, **options).run()
