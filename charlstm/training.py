"""Training: the optimisation loop, evaluation, milestone samples and checkpoints.

`Trainer` owns one run. It reports through a `TrainingCallback` (progress, evaluations,
samples, the end) and logs through `logging`; it never prints. Everything that decides
what the next step does (model, optimizer, step, data position, carried hidden state, RNG
states, elapsed time, metrics) goes into the checkpoint, so a resumed run continues
exactly where the saved one stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__, checkpoint, distributed
from .budget import BudgetPlan, cpu_precision, eval_interval, make_optimizer
from .corpus import Corpus
from .data import TrainBatches, eval_batches
from .device import autocast, choose_device, needs_grad_scaler, precision_without_measuring
from .errors import CheckpointError, TrainingDiverged, UsageError
from .files import remove_leftovers, write_atomically
from .model import (CharRNN, ModelConfig, detach_state, keep_state_where, state_from_list,
                    state_to_list)
from .presets import PRESETS, dropout_for
from .sampling import sample

log = logging.getLogger(__name__)

LN2 = math.log(2)
EVAL_STREAMS = 64  # parallel streams when evaluating: a big batch, few cold starts
EVAL_WARMUP = 128  # characters before each evaluation stream that build its state
EVAL_LOGITS = 1 << 23  # at most about this many logits at once when evaluating
LOG_EVERY = 10  # steps between progress reports (each one reads the loss off the device)
CURVE_POINTS = 20  # about this many training-loss points per evaluation, for plots
BAD_STEPS_BEFORE_ROLLBACK = 3  # non-finite steps in a row that are skipped before rolling back
MAX_ROLLBACKS = 5  # rollbacks (each halving the learning rate) before giving up
REFIT_AFTER = 0.1  # with a budget plan: the share of --time trained before refitting it
REFIT_MARGIN = 1.2  # ... if the speed is off by more than this factor either way


@dataclass
class TrainConfig:
    batch_size: int = 32  # parallel streams per step
    seq_len: int = 64  # characters per stream per step, backpropagated through
    bptt_warmup: int = 0  # characters run without gradient where no state is carried
    shuffle: bool = False  # random windows instead of contiguous streams
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine schedule ends at lr * min_lr_ratio
    warmup_steps: int = 100  # steps of linear learning-rate warm-up
    weight_decay: float = 0.01  # AdamW decay of weight matrices and embeddings
    grad_clip: float = 1.0  # cap on the global gradient norm; 0 turns clipping off
    beta1: float = 0.9  # AdamW's momentum: the decay of its running mean of gradients
    max_steps: int | None = 2000  # stop after this many steps
    epochs: float | None = None  # stop after this many passes over the training split
    time_limit: float | None = None  # stop after this many wall-clock seconds
    eval_every: int = 250  # steps between evaluations (and checkpoints)
    eval_chars: int = 500_000  # validation characters per evaluation (its start); 0 = all
    sample_every: int = 0  # steps between milestone samples; 0 = at each evaluation
    sample_length: int = 200  # characters per milestone sample
    val_frac: float = 0.1  # the last fraction of the corpus held out for validation
    seed: int = 1337  # seeds initialisation, dropout and data order
    device: str = "auto"  # auto, cpu, cuda[:N] or mps
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (autocast; fp16 on CUDA only)
    compile: bool = False  # torch.compile the model for training

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "eval_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, "
                                 f"not {getattr(self, name)}")
        for name in ("bptt_warmup", "warmup_steps", "sample_every", "sample_length",
                     "eval_chars"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, "
                                 f"not {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, not {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UsageError(f"--min-lr-ratio must be in [0, 1], not {self.min_lr_ratio}")
        if not self.weight_decay >= 0 or not self.grad_clip >= 0:
            raise UsageError("--weight-decay and --grad-clip must be 0 or more")
        if not 0 <= self.beta1 < 1:
            raise UsageError(f"--beta1 must be in [0, 1), not {self.beta1}")
        if not 0 <= self.val_frac < 1:
            raise UsageError(f"--val-frac must be in [0, 1), not {self.val_frac}")
        for name in ("max_steps", "epochs", "time_limit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                flag = "--time" if name == "time_limit" else f"--{name.replace('_', '-')}"
                raise UsageError(f"{flag} must be positive, not {value}")
        if self.max_steps is None and self.epochs is None and self.time_limit is None:
            raise UsageError("give at least one of --max-steps, --epochs or --time")
        if not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed must be in [0, 2**63), not {self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StepStats:
    step: int
    epoch: float  # passes over the training split so far
    loss: float  # mean training loss (nats per character) since the last report
    lr: float
    chars_per_sec: float
    elapsed: float  # wall-clock seconds of the run so far, evaluations and resumes included


@dataclass
class TrainResult:
    step: int
    reason: str  # "max_steps", "epochs", "time", "interrupted" or "already finished"
    run_dir: Path
    best_val_loss: float | None
    history: list[dict] = field(default_factory=list)

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path | None:
        path = self.run_dir / "best.pt"
        return path if path.exists() else None


class TrainingCallback:
    """Receives what a run does; override what you need (the default ignores all)."""

    def on_start(self, info: dict) -> None: ...

    def on_step(self, stats: StepStats) -> None: ...

    def on_eval(self, record: dict) -> None: ...

    def on_sample(self, step: int, text: str) -> None: ...

    def on_notice(self, message: str) -> None:
        """Something the user should know that does not stop the run (a skipped step);
        logged as a warning unless overridden."""
        log.warning("%s", message)

    def on_end(self, result: TrainResult) -> None: ...


class _Quiet(TrainingCallback):
    """What the processes other than the main one report to: nothing at all."""

    def on_notice(self, message: str) -> None: ...


def split_point(length: int, val_frac: float) -> int:
    """Where the validation split starts: the last `val_frac` of the corpus, at least 1."""
    if val_frac == 0:
        return length
    return length - max(1, min(length - 1, round(length * val_frac)))


class Trainer:
    def __init__(self, corpus: Corpus, model_config: ModelConfig, config: TrainConfig,
                 run_dir: Path, callback: TrainingCallback | None = None,
                 resume_from: dict | None = None, launched_at: float | None = None,
                 plan: BudgetPlan | None = None):
        """`launched_at` is the time.monotonic() at which the process started: the setup
        before training (imports, corpus, measurements) then counts against --time.
        `plan` is the budget plan the settings came from, if any (its measured precision
        is used for precision auto)."""
        self.corpus, self.config, self.run_dir = corpus, config, Path(run_dir)
        self.launched_at, self.plan = launched_at, plan
        self.model_config = model_config
        # with several processes (see distributed) only the main one reports, evaluates
        # and writes; the others train their share of the streams alongside it
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.callback = (callback or TrainingCallback()) if self.is_main else _Quiet()
        self.device = distributed.local_device(choose_device(config.device))
        if model_config.vocab_size != len(corpus.vocab):
            raise UsageError("the model's vocabulary size does not match the corpus")
        tokens = corpus.tokens
        self.val_start = split_point(len(tokens), config.val_frac)
        # evaluations read the start of the validation split, at most eval_chars of it: on a
        # gigabyte corpus the whole split would take hours
        self.val_end = (len(tokens) if not config.eval_chars
                        else min(len(tokens), self.val_start + config.eval_chars))
        torch.manual_seed(config.seed)
        self.model = CharRNN(model_config).to(self.device)
        self.optimizer = make_optimizer(self.model, config.lr, config.weight_decay,
                                        self.device, config.beta1)
        # a fused optimizer takes a bad-step flag on the device and skips the update there,
        # so the step never waits for the device to say whether it was finite
        self._skips_on_device = getattr(self.optimizer, "_step_supports_amp_scaling", False)
        self.batches = TrainBatches(tokens, self.val_start, config.batch_size, config.seq_len,
                                    config.bptt_warmup, config.shuffle, config.seed,
                                    self.rank, self.world_size)
        if self.rank:  # dropout of its own on each process (the main one's as in one process)
            torch.manual_seed(distributed.process_seed(config.seed))
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.best_val_loss: float | None = None
        self.hidden = None
        # training loss summed since the last evaluation, kept so a resume reports the same
        self.eval_loss_sum, self.eval_loss_steps = 0.0, 0
        self.precision = precision_without_measuring(config.precision, self.device)
        self.precision_note = (f"{self.precision} (as asked)" if config.precision != "auto"
                               else f"{self.precision} (auto, on {self.device.type})")
        self._stop_requested = False
        self._stop_agreed = False  # with several processes: a stop asked for on any of them
        self.eval_seconds: float | None = None  # how long the last evaluation and save took
        self._trained_chars, self._training_seconds = 0, 0.0  # for the speed in this process
        self.time_spent: float | None = None  # the --time this run has used up, if it has
        # the divergence guard: a learning-rate factor lowered by each rollback, the bad
        # steps in a row, and the state to roll back to (taken at each save)
        self.lr_scale, self.rollbacks, self.bad_steps = 1.0, 0, 0
        self._good_state: dict | None = None
        # the training-loss curve: [step, mean loss] points every curve_every steps since
        # the last evaluation, and the sum and count of the window being filled
        self._set_curve_every()
        self.curve: list[list] = []
        self.curve_sum, self.curve_steps = 0.0, 0
        # a budget plan is fitted to a speed measured in a few steps: once a tenth of the
        # budget has trained at the real speed, the settings it decided are fitted again
        self._refit_pending = bool(plan and plan.refit and config.time_limit)
        if resume_from is not None:
            self._restore(resume_from)
            self._refit_pending = False
        if self.precision is None and plan is not None:
            self.precision, self.precision_note = plan.precision, plan.precision_note
        if self.precision is None:  # measured by the main process, for all of them
            self.precision, self.precision_note = distributed.run_on_main(lambda: cpu_precision(
                self.model, config.batch_size // self.world_size, config.seq_len, self.device))
        # fp16 scales the loss so small gradients survive; the scale is part of the state
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if needs_grad_scaler(self.precision) else None)
        if self.scaler is not None and resume_from is not None and resume_from.get("scaler"):
            self.scaler.load_state_dict(resume_from["scaler"])
        # batches go to a GPU from page-locked memory, so the copy overlaps the step
        self._pin = self.device.type == "cuda"
        # the module the training step runs: the model itself, or DistributedDataParallel
        # around it with several processes, maybe compiled (evaluation, sampling and
        # checkpoints always use self.model: no collective happens in them)
        trained = distributed.wrap(self.model, self.device)
        self.trained = torch.compile(trained) if config.compile else trained

    # ------------------------------------------------------------------ set-up

    def _restore(self, saved: dict) -> None:
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.batches.load_state_dict(saved["data"])
            self.step = int(saved["step"])
            self.elapsed = float(saved["elapsed"])
            self.history = list(saved["history"])
            self.best_val_loss = saved.get("best_val_loss")
            self.time_spent = saved.get("time_spent")
            self.lr_scale = float(saved.get("lr_scale", 1.0))
            self.rollbacks = int(saved.get("rollbacks", 0))
            self.hidden = state_from_list(self._my_streams(saved["hidden"]),
                                          self.model_config.model, self.device)
            self.eval_loss_sum, self.eval_loss_steps = saved["eval_loss"]
            self.curve = list(saved.get("curve", []))
            self.curve_sum, self.curve_steps = saved.get("curve_window", (0.0, 0))
            self._restore_rng(saved["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"the checkpoint cannot resume this run: {exc}") from exc
        if self.config.precision == "auto" and saved.get("precision"):
            if saved["precision"] == "fp16" and self.device.type != "cuda":
                # started in fp16 on a GPU, which this device cannot do: choose again
                self.precision = precision_without_measuring("auto", self.device)
                self.precision_note = f"{self.precision} (auto; the run started in fp16)"
            else:
                self.precision = saved["precision"]
                self.precision_note = f"{self.precision} (as the run was started)"

    def _my_streams(self, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """This process's streams of a saved state, which holds all B of them."""
        if hidden and hidden[0].size(1) == self.config.batch_size:
            return [t[:, self.batches.streams].contiguous() for t in hidden]  # (L, b, H)
        return hidden

    def _restore_rng(self, rng: dict) -> None:
        """Each process takes the generator states of the process of its rank when the
        run was saved; one with no saved states (the run had fewer processes) is seeded
        from the seed, its rank and the step."""
        saved = rng.get("processes") or [rng]
        if self.rank >= len(saved):
            torch.manual_seed(distributed.process_seed(self.config.seed, self.step))
            return
        torch.set_rng_state(saved[self.rank]["torch"])
        if self.device.type == "cuda" and saved[self.rank].get("cuda"):
            torch.cuda.set_rng_state_all(saved[self.rank]["cuda"])

    # ------------------------------------------------------------------ the loop

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step and save (safe from a signal)."""
        self._stop_requested = True

    def _progress(self) -> float:
        """How far through the run we are, in [0, 1], by whichever limit comes first."""
        cfg, done = self.config, 0.0
        if cfg.max_steps:
            done = max(done, self.step / cfg.max_steps)
        if cfg.epochs:
            done = max(done, self.batches.epochs_done / cfg.epochs)
        if cfg.time_limit:
            done = max(done, self.elapsed / max(cfg.time_limit - self._final_reserve(), 1e-9))
        return min(done, 1.0)

    def _final_reserve(self) -> float:
        """Seconds kept back from --time for the final evaluation and checkpoint.

        The last one measured, or before any, an estimate: evaluation only runs forward, on
        a batch of EVAL_STREAMS, so it goes about three times the training speed.
        """
        if self.eval_seconds is not None:
            return self.eval_seconds
        val_chars = self.val_end - self.val_start
        if not self._training_seconds:
            return 0.5
        return 0.5 + val_chars * self._training_seconds / (3 * self._trained_chars)

    def _limit_reached(self) -> str | None:
        cfg = self.config
        if cfg.max_steps and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.epochs and self.batches.epochs_done >= cfg.epochs:
            return "epochs"
        if cfg.time_limit and self.elapsed + self._final_reserve() >= cfg.time_limit:
            return "time"
        return None

    def _final_is_near(self) -> bool:
        """Whether --time will end the run within half an evaluation interval: then an
        evaluation due now is left to the final one, which would repeat it moments later
        (the plan puts the fourth of four evaluations at the end of the budget, where
        the speed measured at start-up rarely lands it exactly)."""
        cfg = self.config
        if not cfg.time_limit or not self._trained_chars:
            return False
        steps = self._trained_chars / (cfg.batch_size * cfg.seq_len)
        interval = cfg.eval_every * self._training_seconds / steps
        left = cfg.time_limit - self._final_reserve() - self.elapsed
        return left < interval / 2

    def _set_curve_every(self) -> None:
        self.curve_every = LOG_EVERY * max(1, self.config.eval_every
                                           // (CURVE_POINTS * LOG_EVERY))

    def _refit(self) -> None:
        """Fit the budget plan's dropout and evaluation interval (those not given) to the
        speed training has shown, instead of the few steps timed before it: a measurement
        disturbed by whatever else ran on the machine would otherwise set them for the
        wrong number of passes. Nothing changes unless the speed is off by more than
        REFIT_MARGIN. Every process computes the same, from the agreed clock."""
        self._refit_pending = False
        cfg, plan = self.config, self.plan
        speed = self._trained_chars / self._training_seconds
        if 1 / REFIT_MARGIN < speed / plan.chars_per_sec < REFIT_MARGIN:
            return
        left = max(0.0, cfg.time_limit - self._final_reserve() - self.elapsed)
        steps = self.step + speed * left / (cfg.batch_size * cfg.seq_len)
        epochs = steps * cfg.batch_size * cfg.seq_len / max(self.val_start, 1)
        changed = []
        if "dropout" in plan.refit:
            dropout = dropout_for(PRESETS[plan.preset], epochs)
            if dropout != self.model_config.dropout:
                self.model.set_dropout(dropout)
                changed.append(f"dropout {dropout:g}")
        if "eval_every" in plan.refit:
            every = eval_interval(steps, cfg.time_limit)
            if every != cfg.eval_every:
                cfg.eval_every = every
                self._set_curve_every()
                changed.append(f"an evaluation every {every:,} steps")
        if changed:
            self._notice(f"training runs at {_speed(speed)} chars/s, not the "
                         f"{_speed(plan.chars_per_sec)} measured at the start: about "
                         f"{epochs:.1f} passes in the budget, so {' and '.join(changed)}")
            distributed.run_on_main(self._write_config)

    def learning_rate(self) -> float:
        """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio over the run,
        times the divergence guard's factor (1 until a rollback halves it)."""
        cfg = self.config
        floor = cfg.lr * cfg.min_lr_ratio
        cosine = floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * self._progress()))
        if cfg.warmup_steps and self.step < cfg.warmup_steps:
            cosine *= (self.step + 1) / cfg.warmup_steps
        return cosine * self.lr_scale

    def info(self) -> dict:
        cfg = self.config
        return {
            "run_dir": str(self.run_dir), "corpus": self.corpus.describe(),
            "vocab_size": len(self.corpus.vocab), "train_chars": self.val_start,
            "val_chars": len(self.corpus.tokens) - self.val_start,
            "eval_chars": self.val_end - self.val_start,
            "parameters": self.model.num_parameters(), "device": str(self.device),
            "processes": self.world_size,
            "precision": self.precision, "precision_note": self.precision_note,
            "model": self.model_config.to_dict(), "train": cfg.to_dict(),
            "step": self.step, "steps_per_epoch": self.batches.steps_per_epoch,
            "plan": self.plan.note if self.plan else None,
        }

    def fit(self) -> TrainResult:
        """Train until a limit is reached or a stop is requested; always save on the way out."""
        distributed.run_on_main(self._prepare_run_dir)
        if self._limit_reached() or (self.config.time_limit and self.time_spent is not None
                                     and self.time_spent >= self.config.time_limit):
            result = self._result("already finished")
            self.callback.on_end(result)
            return result
        self.callback.on_start(self.info())
        self.model.train()
        cfg = self.config
        started, elapsed_before = time.monotonic(), self.elapsed
        if self.launched_at is not None:  # the setup before training counts against --time
            elapsed_before += max(0.0, started - self.launched_at)
        # float64 sums of float32 losses are exact here, so a window split by a resume adds
        # up to the same bits as an uninterrupted one
        report_sum = torch.zeros((), dtype=self._sum_dtype(), device=self.device)
        report_steps = 0  # steps since the last report, skipped ones included
        pending: list[tuple[int, torch.Tensor]] = []  # their bad-step flags, still unread
        report_started = started

        def take_report(skipped: int) -> tuple[float, int]:
            """The summed loss since the last report and how many steps it is over, folded
            into the evaluation's sum."""
            nonlocal report_steps
            loss, good = report_sum.item(), report_steps - skipped
            self.eval_loss_sum += loss
            self.eval_loss_steps += good
            self.curve_sum += loss
            self.curve_steps += good
            discard_report()
            return loss, good

        def discard_report() -> None:
            nonlocal report_steps
            report_sum.zero_()
            report_steps = 0

        self._good_state = self._snapshot()
        reason = None
        while reason is None:
            if self._should_stop():
                reason = "interrupted"
                break
            step_started = time.monotonic()
            loss, bad = self._train_step()
            self.step += 1
            report_sum += loss.masked_fill(bad, 0.0)  # a skipped step's loss counts for nothing
            report_steps += 1
            pending.append((self.step, bad))
            now = time.monotonic()
            self._trained_chars += cfg.batch_size * cfg.seq_len
            self._training_seconds += now - step_started
            self.elapsed = elapsed_before + (now - started)
            self._agree_on_clock()
            if self._refit_pending and (self._training_seconds
                                        >= REFIT_AFTER * cfg.time_limit):
                self._refit()
            reason = self._limit_reached()
            logging = self.step % LOG_EVERY == 0 or reason is not None
            evaluating = reason is not None or (self.step % cfg.eval_every == 0
                                                and not self._final_is_near())
            if not (logging or evaluating):
                continue
            skipped = self._settle(pending)
            if skipped is None:  # rolled back: the steps since the snapshot are undone
                discard_report()
                reason, report_started = None, time.monotonic()
                continue  # the step rolled back to was evaluated and saved already
            if logging:
                speed = report_steps * cfg.batch_size * cfg.seq_len / max(now - report_started,
                                                                         1e-9)
                loss_sum, good = take_report(skipped)
                skipped = 0
                if self.step % self.curve_every == 0 and self.curve_steps:
                    self.curve.append([self.step, self.curve_sum / self.curve_steps])
                    self.curve_sum, self.curve_steps = 0.0, 0
                self.callback.on_step(StepStats(
                    self.step, self.batches.epochs_done,
                    loss_sum / good if good else math.nan,
                    self.optimizer.param_groups[0]["lr"], speed, self.elapsed))
            if evaluating:
                take_report(skipped)  # the steps since the last report count for this evaluation
                if reason == "time":  # so that a resume with the same --time has nothing to do
                    self.time_spent = cfg.time_limit
                eval_started = time.monotonic()
                self._evaluate_and_save(reason)
                self.eval_seconds = time.monotonic() - eval_started
                self._agree_on_clock()  # the main process's evaluation time, for all
            elif cfg.sample_every and self.step % cfg.sample_every == 0:
                self._milestone_sample()
            report_started = time.monotonic()  # speed counts training, not evaluation
        if reason == "interrupted":
            skipped = self._settle(pending)
            if skipped is None:  # rolled back to the last save: nothing since it counts
                discard_report()
            else:
                take_report(skipped)
            self._save(best=False)
        result = self._result(reason)
        self.callback.on_end(result)
        return result

    @contextlib.contextmanager
    def _writing_run_dir(self):
        """An OSError while writing the run folder becomes a one-line CheckpointError."""
        try:
            yield
        except OSError as exc:
            raise CheckpointError(f"cannot write to the run folder {self.run_dir}: "
                                  f"{exc.strerror or exc}") from exc

    def _prepare_run_dir(self) -> None:
        with self._writing_run_dir():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for leftover in remove_leftovers(self.run_dir):
                log.info("removed %s, left by a writer that was killed", leftover)
            self._write_config()
            self._rewrite_metrics()

    def _write_config(self) -> None:
        with self._writing_run_dir():
            write_atomically(self.run_dir / "config.json",
                             json.dumps(self.info(), indent=2).encode("utf-8"))

    def _should_stop(self) -> bool:
        """Whether a stop was asked for; with several processes, whether it was on any of
        them by the last step's agreement, so that all stop after the same step."""
        return self._stop_agreed if self.world_size > 1 else self._stop_requested

    def _agree_on_clock(self) -> None:
        """With several processes, after each step and evaluation: every process takes
        the main one's clock, speed and evaluation time, so that the time limit and the
        learning-rate schedule come out the same everywhere, and learns whether any
        process was asked to stop. One small collective, on the CPU beside a GPU run
        (so the step does not wait for the GPU); nothing in a single process."""
        if self.world_size == 1:
            return
        clock = [0.0] * 4
        if self.is_main:
            clock = [self.elapsed, self._training_seconds, float(self._trained_chars),
                     -1.0 if self.eval_seconds is None else self.eval_seconds]
        shared = torch.tensor([float(self._stop_requested), *clock], dtype=torch.float64,
                              device=distributed.host_device(self.device))
        stop, elapsed, seconds, chars, eval_seconds = distributed.all_sum(shared).tolist()
        self._stop_agreed = stop > 0
        self.elapsed, self._training_seconds, self._trained_chars = elapsed, seconds, int(chars)
        self.eval_seconds = None if eval_seconds < 0 else eval_seconds

    def _sum_dtype(self) -> torch.dtype:
        """float64 for sums of losses, except on Apple MPS, which has no float64."""
        return torch.float32 if self.device.type == "mps" else torch.float64

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step: its loss and a flag, both still on the device, that is
        True if the loss or a gradient was not finite. Such a step updates nothing: the
        fused optimizer skips it on the device, and the carried state is kept from before
        it. Nothing here waits for the device; the loop reads the flags at its reports."""
        batch = self.batches.next()
        if batch.fresh:
            self.hidden = None
            if batch.warmup is not None:
                with torch.no_grad(), autocast(self.device, self.precision):
                    self.hidden = self.model.advance(batch.warmup.to(self.device))
        self.optimizer.param_groups[0]["lr"] = lr = self.learning_rate()
        self.optimizer.param_groups[1]["lr"] = lr
        inputs, targets = self._to_device(batch.inputs), self._to_device(batch.targets)
        with autocast(self.device, self.precision):
            _, loss, hidden = self.trained(inputs, detach_state(self.hidden), targets)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.config.grad_clip or math.inf)
        # with several processes, the mean over all of them: every process then decides
        # alike below (the gradients and so the norm were averaged in backward already)
        loss = distributed.mean(loss.detach())
        if scaler is not None:
            # inf gradients under fp16 mean the loss scale is too high: the scaler skips
            # the update and lowers the scale, which is routine, not divergence; only a
            # non-finite loss (whose gradients are not finite either) counts as bad
            bad = ~torch.isfinite(loss)
            scaler.step(self.optimizer)
            scaler.update()
        else:
            bad = ~torch.isfinite(loss + norm)  # the norm is not finite if any gradient is
            if self._skips_on_device:
                self.optimizer.found_inf = bad.float()  # the fused kernel's skip flag
                try:
                    self.optimizer.step()
                finally:
                    del self.optimizer.found_inf
            elif not bad:  # an optimizer without the flag: one device sync a step
                self.optimizer.step()
        self.hidden = keep_state_where(bad, self.hidden, detach_state(hidden))
        return loss, bad

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._pin:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    # ------------------------------------------------------------------ divergence guard

    def _settle(self, pending: list[tuple[int, torch.Tensor]]) -> int | None:
        """Read the bad-step flags of the steps since the last report (one device sync)
        and pass each bad step to the guard in order: how many were skipped, or None if
        the guard rolled the run back, which undoes the later steps too."""
        if not pending:
            return 0
        flags = torch.stack([bad for _, bad in pending]).tolist()
        steps = [step for step, _ in pending]
        pending.clear()
        for step, bad in zip(steps, flags):
            if not bad:
                self.bad_steps = 0
            elif self._guard(step):
                return None
        return sum(flags)

    def _guard(self, step: int) -> bool:
        """Handle a skipped (non-finite) step; True if it rolled the run back.

        A few in a row are skipped; then the run goes back to the state of its last save
        (or its start) with half the learning rate, at most MAX_ROLLBACKS times.
        """
        self.bad_steps += 1
        if self.bad_steps < BAD_STEPS_BEFORE_ROLLBACK:
            self._notice(f"step {step:,}: the loss or a gradient was not finite; "
                         "skipped the update")
            return False
        if self.rollbacks >= MAX_ROLLBACKS:
            last = self.run_dir / "last.pt"
            kept = (f"the last good checkpoint is {last}" if last.exists() else
                    "nothing was saved, as it diverged before its first evaluation")
            raise TrainingDiverged(
                f"training diverged: the loss was not finite at step {step:,} even "
                f"after {self.rollbacks} rollbacks, with the learning rate down to "
                f"{self.lr_scale:g} of its schedule; {kept} (try a lower --lr or "
                "--grad-clip)")
        self.rollbacks += 1
        self.lr_scale *= 0.5
        self._restore_snapshot(self._good_state)
        self._notice(f"step {step:,}: {self.bad_steps} non-finite steps in a row; rolled "
                     f"back to step {self.step:,} with the learning rate at "
                     f"{self.lr_scale:g} of its schedule (rollback {self.rollbacks} of at "
                     f"most {MAX_ROLLBACKS})")
        self.bad_steps = 0
        return True

    def _notice(self, message: str) -> None:
        self.callback.on_notice(message)

    def _snapshot(self) -> dict:
        """A copy of everything a rollback restores (in memory: no disk read needed)."""
        return copy.deepcopy({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "data": self.batches.state_dict(), "hidden": self.hidden, "step": self.step,
            "eval_loss": (self.eval_loss_sum, self.eval_loss_steps),
            "curve": (self.curve, self.curve_sum, self.curve_steps),
            "rng": torch.get_rng_state(),
        })

    def _restore_snapshot(self, state: dict) -> None:
        state = copy.deepcopy(state)  # the snapshot stays usable for a further rollback
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["data"])
        self.hidden, self.step = state["hidden"], state["step"]
        self.eval_loss_sum, self.eval_loss_steps = state["eval_loss"]
        self.curve, self.curve_sum, self.curve_steps = state["curve"]
        torch.set_rng_state(state["rng"])

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss in nats per character over the validation split, or its first
        eval_chars characters (None if there is none)."""
        tokens = self.corpus.tokens
        if self.val_start >= self.val_end:
            return None
        # chunks of at most about EVAL_LOGITS logits, so a huge vocabulary stays in memory
        vocab = len(self.corpus.vocab)
        chunk = max(8, min(max(self.config.seq_len, 256), EVAL_LOGITS // (EVAL_STREAMS * vocab)))
        warmup, chunks = eval_batches(tokens, self.val_start, self.val_end, EVAL_STREAMS,
                                      chunk, EVAL_WARMUP)
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros((), dtype=self._sum_dtype(), device=self.device)
        count = 0
        try:
            with autocast(self.device, self.precision):
                state = None
                if warmup is not None:
                    state = self.model.advance(warmup.to(self.device))
                for inputs, targets in chunks:
                    targets = targets.to(self.device)
                    logits, _, state = self.model(inputs.to(self.device), state)
                    total += torch.nn.functional.cross_entropy(
                        logits.float().flatten(0, 1), targets.flatten(),
                        ignore_index=-100, reduction="sum")
                    count += int((targets != -100).sum())
        finally:
            self.model.train(was_training)
        return total.item() / count

    def _milestone_sample(self) -> None:
        if not self.config.sample_length or not self.is_main:
            return
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + self.step)
        text = sample(self.model, self.corpus.vocab, "", self.config.sample_length,
                      temperature=0.8, generator=generator)[0]
        self.callback.on_sample(self.step, text)

    def _evaluate_and_save(self, reason: str | None) -> None:
        train_loss = self.eval_loss_sum / max(self.eval_loss_steps, 1)
        self.eval_loss_sum, self.eval_loss_steps = 0.0, 0
        # only the main process evaluates; the others take its result (and its time of
        # day), so that all their histories and best losses agree
        val_loss, now = distributed.run_on_main(
            lambda: (self.evaluate(), datetime.now(timezone.utc)))
        improved = val_loss is not None and (self.best_val_loss is None
                                             or val_loss < self.best_val_loss)
        if improved:
            self.best_val_loss = val_loss
        record = {
            "step": self.step, "epoch": round(self.batches.epochs_done, 4),
            "train_loss": train_loss, "train_bpc": train_loss / LN2,
            "val_loss": val_loss, "val_bpc": None if val_loss is None else val_loss / LN2,
            "best": improved, "lr": self.optimizer.param_groups[0]["lr"],
            "train_curve": self.curve,
            "elapsed": round(self.elapsed, 3),
            "time": now.isoformat(timespec="seconds"),
        }
        self.history.append(record)
        self.curve = []
        self._save(best=improved)
        distributed.run_on_main(lambda: self._append_metrics(record))
        self.callback.on_eval(record)
        every = self.config.sample_every
        if every == 0 or self.step % every == 0 or reason is not None:
            self._milestone_sample()

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything a resume needs. With several processes every one must call this at
        the same time: the carried state of all B streams and each process's generator
        states are gathered from them (the main process's are also the top-level ones)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.world_size > 1:
            rng["processes"] = distributed.gather(dict(rng))
        return {
            "charlstm_version": __version__,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "vocab": self.corpus.vocab.to_dict(),
            "corpus": self.corpus.describe(),
            "precision": self.precision,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "data": self.batches.state_dict(),
            "hidden": state_to_list(distributed.gather_streams(self.hidden)),  # (L, B, H)
            "processes": self.world_size,
            "eval_loss": [self.eval_loss_sum, self.eval_loss_steps],
            "curve": self.curve,
            "curve_window": [self.curve_sum, self.curve_steps],
            "rng": rng,
            "history": self.history,
            "best_val_loss": self.best_val_loss,
            "time_spent": self.time_spent,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def _save(self, best: bool) -> None:
        paths = [self.run_dir / "last.pt"] + ([self.run_dir / "best.pt"] if best else [])
        state = self.state_dict()  # every process takes part; the main one writes
        distributed.run_on_main(lambda: checkpoint.save(state, *paths))
        self._good_state = self._snapshot()
        if self.is_main:
            log.info("saved %s", ", ".join(str(p) for p in paths))

    def _rewrite_metrics(self) -> None:
        """metrics.jsonl mirrors the history of the checkpoint the run continues from."""
        lines = "".join(json.dumps(record) + "\n" for record in self.history)
        write_atomically(self.run_dir / "metrics.jsonl", lines.encode("utf-8"))

    def _append_metrics(self, record: dict) -> None:
        try:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CheckpointError(f"cannot append to {self.run_dir / 'metrics.jsonl'}: "
                                  f"{exc.strerror or exc}") from exc

    def _result(self, reason: str) -> TrainResult:
        return TrainResult(self.step, reason, self.run_dir, self.best_val_loss, self.history)


def _speed(chars_per_sec: float) -> str:
    return (f"{chars_per_sec / 1000:.0f}k" if chars_per_sec >= 10_000
            else f"{chars_per_sec:,.0f}")
