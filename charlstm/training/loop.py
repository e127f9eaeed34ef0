"""Training: the loop that runs one training run from its first step to its last save.

`Trainer` owns one run. Each step (step) is followed by the clock (clock), the
budget's refit (budget), and every LOG_EVERY steps a report: the bad-step flags are read
(guard), the loss is reported, and at each evaluation the model is evaluated and saved;
between evaluations last.pt is saved every `save_every` seconds and on a stop
(milestones). It reports through a `TrainingCallback` and never prints. Everything that
decides what the next step does goes into the checkpoint (state), so a resumed run
continues exactly where the saved one stopped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import budget, clock, distributed, evaluation, milestones, optim, state, step
from .budget import BudgetPlan
from .callbacks import Quiet, StepStats, TrainingCallback, TrainResult
from ..checkpoint import Checkpoint
from ..data.batches import TrainBatches
from ..device import choose_device, grad_scaler
from ..errors import UsageError
from .finetune import Start
from .guard import DivergenceGuard
from .gradients import GradientWindow
from .losses import LOG_EVERY, LossTally, ReportWindow, curve_every
from ..model.charrnn import CharRNN
from ..settings import ModelConfig
from .rundir import RunFolder
from ..settings import REGULARISERS, TrainConfig, validation_span

if TYPE_CHECKING:
    from ..data.corpus import Corpus

__all__ = ["Trainer", "TrainingCallback", "StepStats", "TrainResult"]


class Trainer:
    """One training run: built from its settings (and the checkpoint it resumes), run by
    `fit()`."""

    def __init__(self, corpus: Corpus, model_config: ModelConfig, config: TrainConfig,
                 run_dir: Path, callback: TrainingCallback | None = None,
                 resume_from: Checkpoint | None = None, launched_at: float | None = None,
                 plan: BudgetPlan | None = None, start: Start | None = None):
        """`launched_at`: the time.monotonic() at which the process started (the set-up
        counts against --time); `plan`: the budget plan the settings came from, if any;
        `start`: the weights a fine-tuning run starts from, and its parent."""
        self.corpus, self.model_config, self.config = corpus, model_config, config
        self.folder, self.run_dir = RunFolder(run_dir), Path(run_dir)
        self.launched_at, self.plan = launched_at, plan
        # with several processes (see distributed) only the main one reports, evaluates
        # and writes; the others train their share of the streams alongside it
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.callback = (callback or TrainingCallback()) if self.is_main else Quiet()
        self.device = distributed.local_device(choose_device(config.device))
        if model_config.vocab_size != len(corpus.vocab):
            raise UsageError("the model's vocabulary size does not match the corpus")
        tokens = corpus.tokens
        self.val_start, self.val_end = validation_span(len(tokens), config)
        torch.manual_seed(config.seed)
        self.model = CharRNN(model_config).to(self.device)
        if start is not None:
            self.model.load_state_dict(start.weights)
        # a fine-tuning run's parent, recorded in each of its checkpoints
        self.parent = start.parent if start else resume_from and resume_from.parent
        self.optimizer = optim.make_optimizer(self.model, config.lr, config.weight_decay,
                                              self.device, config.beta1,
                                              config.beta2)
        self.batches = TrainBatches(tokens, self.val_start, config.batch_size, config.seq_len,
                                    config.bptt_warmup, config.shuffle, config.seed,
                                    self.rank, self.world_size, config.stream_block)
        if config.early_batch % self.world_size:
            raise UsageError.naming(
                f"{{early_batch}} {config.early_batch} must be a multiple of the number of "
                f"processes ({self.world_size}): each trains an equal share of those streams")
        if self.rank:  # dropout of its own on each process (the main one's as in one process)
            torch.manual_seed(distributed.process_seed(config.seed))
        self.step, self.hidden = 0, None
        self.history: list[dict] = []
        self.best_val_loss: float | None = None
        self.time_spent: float | None = None  # the --time this run has used up, if it has
        self.losses = LossTally()
        self.gradients = GradientWindow(self.device, config.grad_clip)  # norms, clips
        self.clock = clock.RunClock(config, self.val_end - self.val_start)
        self.guard = DivergenceGuard(self._notice, self.folder.last)
        self._stop_requested = False
        self._stop_agreed = False  # with several processes: a stop asked for on any of them
        # a budget plan is fitted to a speed measured in a few steps: once a tenth of the
        # budget has trained at the real speed, the settings it decided are fitted again
        self._refit_pending = bool(plan and plan.refit and config.time_limit)
        if resume_from is not None:
            state.restore(self, resume_from)
            self._refit_pending = False
        self._set_up_step(resume_from, plan)

    # ------------------------------------------------------------------ set-up

    def _set_up_step(self, resume_from: Checkpoint | None, plan: BudgetPlan | None) -> None:
        """The precision (the saved run's, or chosen now), the gradient scaler, and what
        the step runs: the model, or DistributedDataParallel around it with several
        processes, maybe compiled (evaluation, sampling and checkpoints use self.model)."""
        config = self.config
        self.precision, self.precision_note = budget.choose_precision(
            config.precision, self.device, resume_from and resume_from.precision, plan,
            measure=lambda: distributed.run_on_main(lambda: budget.cpu_precision(
                self.model, config.batch_size // self.world_size, config.seq_len,
                self.device)))
        self.scaler = grad_scaler(self.precision, self.device,
                                  resume_from.scaler if resume_from else None)
        trained = distributed.wrap(self.model, self.device)
        self.trained = torch.compile(trained) if config.compile else trained

    def info(self) -> dict:
        """The run's set-up, as config.json holds it and on_start receives it."""
        return {
            "run_dir": str(self.run_dir), "corpus": self.corpus.describe(),
            "vocab_size": len(self.corpus.vocab), "train_chars": self.val_start,
            "val_chars": len(self.corpus.tokens) - self.val_start,
            "eval_chars": self.val_end - self.val_start,
            "parameters": self.model.num_parameters(), "device": str(self.device),
            "processes": self.world_size,
            "precision": self.precision, "precision_note": self.precision_note,
            "model": self.model_config.to_dict(), "train": self.config.to_dict(),
            "step": self.step, "steps_per_epoch": self.batches.steps_per_epoch,
            "plan": self.plan.note if self.plan else None, "parent": self.parent,
        }

    # ------------------------------------------------------------------ the loop

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step and save (safe from a signal)."""
        self._stop_requested = True

    def fit(self) -> TrainResult:
        """Train until a limit is reached or a stop is requested; always save on the way out."""
        distributed.run_on_main(lambda: self.folder.prepare(self.info(), self.history))
        if self._limit_reached() or (self.config.time_limit and self.time_spent is not None
                                     and self.time_spent >= self.config.time_limit):
            return self._end("already finished")
        self.callback.on_start(self.info())
        self.model.train()
        self.clock.start(self.launched_at)
        window = ReportWindow(self.device)
        pending: list[tuple[int, torch.Tensor]] = []  # bad-step flags, still on the device
        self.guard.keep(state.capture(self))
        reason = None
        while reason is None:
            if self._should_stop():
                reason = "interrupted"
                break
            if self.clock.save_is_due(self.config.save_every):
                # as a stop does, but training goes on
                milestones.save_between(self, window, pending)
                window.started = clock.now()
            reason, step_ended = self._train_one(window, pending)
            reports = self.step % LOG_EVERY == 0 or reason is not None
            evaluating = reason is not None or (
                self.step % self.config.eval_every == 0 and not self.clock.final_is_near(
                    self.config.eval_every, self._step_chars()))
            if not (reports or evaluating):
                continue
            skipped = self.guard.settle(pending)
            if skipped is None:  # rolled back: the steps since the snapshot are undone
                self.roll_back()
                window = ReportWindow(self.device)
                self.gradients.discard()
                reason = None
                continue  # the step rolled back to was evaluated and saved already
            if reports:
                self._report(window, skipped, step_ended)
                skipped = 0
            if evaluating:
                window.fold_into(self.losses, skipped)  # its steps since the report count for it
                milestones.evaluate_and_save(self, reason)
                self._agree_on_clock()  # the main process's evaluation time, for all
            elif self.config.sample_every and self.step % self.config.sample_every == 0:
                milestones.show_sample(self)
            window.started = clock.now()  # speed counts training, not evaluation
        if reason == "interrupted":
            milestones.save_between(self, window, pending)
        return self._end(reason)

    def _train_one(self, window: ReportWindow,
                   pending: list[tuple[int, torch.Tensor]]) -> tuple[str | None, float]:
        """One step, its clock and the budget's refit: the limit reached, and the time.
        (Before it, the final evaluation timed, if that is due: clock.PROBE_AT.)"""
        if self.clock.evaluation_needs_timing():
            timing_began = clock.now()
            milestones.time_evaluation(self)
            window.started += clock.now() - timing_began  # the speed shown counts training
        started = clock.now()
        every = self._training_stride()
        loss, bad, self.hidden = step.train_step(self._step_parts(), self.hidden,
                                                 self.learning_rate(), every)
        self.step += 1
        chars = self._step_chars(every)
        window.add(loss, bad, chars)
        pending.append((self.step, bad))
        ended = self.clock.count_step(started, chars)
        self._agree_on_clock()
        if self._refit_pending and self.clock.speed_known() and (
                self.clock.training_seconds >= budget.REFIT_AFTER * self.config.time_limit):
            self._refit()
        reason = self._limit_reached()
        if reason == "time" and self.clock.evaluation_crowds_out_training():
            self._notice(
                f"the final evaluation of {self.clock.eval_chars:,} validation characters "
                f"needs about {self.clock.final_reserve():.0f} s of the "
                f"{self.config.time_limit:g} s budget, so training stopped after "
                f"{self.step:,} step{'s' * (self.step != 1)}: give a smaller --eval-chars "
                "or a longer --time")
        return reason, ended

    def _step_parts(self) -> step.StepParts:
        return step.StepParts(self.model, self.trained, self.optimizer, self.batches,
                                       self.device, self.precision, self.config.grad_clip,
                                       self.scaler, self.gradients)

    def _step_chars(self, every: int = 1) -> int:
        """The characters a step trains, over all processes, when every `every`-th
        stream trains."""
        return self.config.batch_size // every * self.config.seq_len

    def _progress(self) -> float:
        return clock.progress(self.config, self.step, self.batches.epochs_done, self.clock)

    def _training_stride(self) -> int:
        """Which streams the next step trains: every one (1), or during the run's first
        --early-share every (batch size / --early-batch)-th one. The same streams with
        any number of processes: each process's share holds its part of them."""
        early = self.config.early_batch
        if not early or self._progress() >= self.config.early_share:
            return 1
        return self.config.batch_size // early

    def learning_rate(self) -> float:
        """The schedule's learning rate for the next step (see optim.learning_rate)."""
        return optim.learning_rate(self.step, self._progress(), self.config,
                                   self.guard.lr_scale)

    def _limit_reached(self) -> str | None:
        return clock.limit_reached(self.config, self.step, self.batches.epochs_done,
                                   self.clock)

    def _refit(self) -> None:
        """Apply the budget's refit to the speed training has shown (see budget.refit).
        Every process computes the same, from the agreed clock."""
        self._refit_pending = False
        amounts = {name: getattr(self.model_config, name) for name in REGULARISERS}
        change = budget.refit(self.plan, self.config, amounts,
                              self.clock.speed(), self.step, self.clock.time_left(),
                              self.val_start, self.clock.trained_chars, self._progress())
        if change is None:
            return
        # self.model_config is the model's own config object: this updates both
        self.model.set_regularisation(**change.regularisation)
        if change.eval_every is not None:
            self.config.eval_every = change.eval_every
        self._notice(change.notice())
        distributed.run_on_main(lambda: self.folder.write_config(self.info()))

    def _report(self, window: ReportWindow, skipped: int, step_ended: float) -> None:
        speed = window.chars / max(step_ended - window.started, 1e-9)
        loss_sum, good = window.fold_into(self.losses, skipped)
        if self.step % curve_every(self.config.eval_every) == 0:
            self.losses.add_curve_point(self.step)
        grad_norm, clipped, grad_steps = self.gradients.take_report(self.step)
        self.callback.on_step(StepStats(
            self.step, self.batches.epochs_done, loss_sum / good if good else math.nan,
            optim.learning_rate_of(self.optimizer), speed, self.clock.elapsed,
            grad_norm, clipped, grad_steps))

    def _end(self, reason: str) -> TrainResult:
        result = TrainResult(self.step, reason, self.run_dir, self.best_val_loss, self.history)
        self.callback.on_end(result)
        return result

    def _notice(self, message: str) -> None:
        self.callback.on_notice(message)

    def _should_stop(self) -> bool:
        """A stop asked for (with several processes: on any, so all stop alike)."""
        return self._stop_agreed if self.world_size > 1 else self._stop_requested

    def _agree_on_clock(self) -> None:
        """With several processes: the main one's clock for all, and any one's stop."""
        if self.world_size > 1:
            self._stop_agreed = self.clock.agree(self._stop_requested, self.is_main,
                                                 self.device)

    def roll_back(self) -> None:
        """Back to the state the divergence guard kept at the last save."""
        state.restore(self, self.guard.kept(), rolling_back=True)

    def evaluate(self, chars: int | None = None) -> float | None:
        """Mean loss in nats per character over the validation split, or its first
        eval_chars characters, or its first `chars` (None if there is none)."""
        end = self.val_end if chars is None else self.val_start + chars
        return evaluation.evaluate(self.model, self.corpus.tokens, self.val_start, end,
                                   self.config.seq_len, self.device, self.precision)
