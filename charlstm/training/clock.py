"""The run's clock and its limits: elapsed time, what `--time` leaves of it, and when
the run ends (max_steps, epochs or time_limit, whichever comes first).

`elapsed` counts the whole run (evaluations, and every earlier session of a resumed run);
the speed counts training steps only. A time limit keeps back a reserve for the final
evaluation and checkpoint, so the run ends within its budget. With several processes
(torchrun) every process takes the main one's clock after each step (`agree`), so that
all stop after the same step and compute the same learning rate, and save at the same
step when `--save-every` says a checkpoint is due (`save_is_due`).

`launched_at` tells when this process started, so that `--time` also counts the set-up
before training (imports, reading the corpus, measuring the machine).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from . import distributed
from ..settings import TrainConfig

# evaluation runs forward only, on a batch of EVAL_STREAMS: about this many times the
# training speed (the reserve's first estimate, and the budget plan's)
EVAL_SPEEDUP = 3.0
# a final evaluation that needs more than this share of --time is worth a warning
EVAL_SHARE_WARNED = 0.25
# A run with --time that has made no evaluation by PROBE_AT[0] of its budget, and whose
# evaluations read at least PROBE_MIN characters, times one over PROBE_CHARS of them
# (milestones.time_evaluation) instead of keeping the EVAL_SPEEDUP guess for its final
# one: on 50 MB of manual pages, evaluating only at the end, runs with the guess ended
# 9-75 s early on an Intel Xeon and 10 s late on an AMD EPYC (bench/RESULTS.md). It
# times one again at PROBE_AT[1], as the machine's pace drifts: at 30 minutes there, a
# run timed only at half its budget ended 11.5 s late, its final evaluation taking 110 s
# where that timing had said 90. (It does so if the time left is more than PROBE_ROOM
# times what the first timing took.) The longer of the timings' extrapolations is kept
# back, with PROBE_MARGIN on top, for the save and the timing's noise.
PROBE_AT = (0.5, 0.9)
PROBE_ROOM = 2.0
PROBE_MIN = 1 << 18
PROBE_CHARS = 1 << 16
PROBE_MARGIN = (1.0, 1.1)  # seconds added, and the factor
# An evaluation measured (or timed) while training went at one pace is taken to last as
# much longer as training is slower now: at 60 minutes on 50 MB of manual pages, on an
# Intel Xeon, training slowed from 19.8k to 15.4k chars/s after the last evaluation
# (73 s), the final one took about 90 s, and the run ended 18.8 s late (bench/RESULTS.md).
# The pace is the last PACE_WINDOW to 5/4 of it seconds of training, in steps of the
# current size only: the early batch's smaller steps go at another pace, which says
# nothing of the machine's, so an evaluation measured at another step size is kept as it
# was. With several processes every one computes it from the agreed clock (see `agree`).
PACE_WINDOW = 60.0

IMPORTED_AT = time.monotonic()


def eval_seconds(eval_chars: int, speed: float) -> float:
    """An evaluation's seconds, estimated: `eval_chars` read at about EVAL_SPEEDUP times
    the training speed of `speed` chars/s (the final reserve's and the budget plan's)."""
    return eval_chars / (EVAL_SPEEDUP * speed)


def launched_at(fallback: float | None = None) -> float:
    """The time.monotonic() at which this process started, so --time counts from launch.

    Linux tells a process's start in clock ticks since boot; elsewhere the best available
    is `fallback` (such as when the program's first module was imported), else when this
    module was.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
        if 0 <= age < 3600:
            return time.monotonic() - age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return IMPORTED_AT if fallback is None else fallback


def now() -> float:
    return time.monotonic()


class RunClock:
    def __init__(self, config: TrainConfig, eval_chars: int, elapsed: float = 0.0):
        """`config` holds the time limit; `eval_chars` is what each evaluation reads (for
        the reserve's first estimate); `elapsed`, the seconds earlier sessions took."""
        self.config, self.eval_chars = config, eval_chars
        self.elapsed = elapsed
        self.training_seconds, self.trained_chars = 0.0, 0  # in this session, steps only
        # this session's first step, (seconds, chars): kept out of the speed, since it also
        # sets up the kernels, and with --compile compiles the model
        self._first_step: tuple[float, int] | None = None
        self.eval_seconds: float | None = None  # how long the last evaluation and save took
        self._eval_pace: float | None = None  # the training pace when it was measured
        self._timed: list[tuple[float, float | None]] = []  # (seconds, pace) per timing
        self._timings = 0  # of PROBE_AT, the timings passed (evaluation_needs_timing)
        self._timing_took = 0.0  # seconds the last timing took
        self._started, self._elapsed_before = 0.0, elapsed
        self.saved_at: float | None = None  # elapsed when the save interval began
        self._chars_at_save = 0  # trained_chars at the last save (an interval begins after)
        # (training_seconds, trained_chars) after a step, every quarter PACE_WINDOW, the
        # last five, since the step size became `_step_size` (see `pace`)
        self._marks: list[tuple[float, int]] = []
        self._step_size = 0

    @property
    def time_limit(self) -> float | None:
        return self.config.time_limit

    def start(self, launched_at: float | None) -> None:
        """Training starts now; with `launched_at`, the set-up since then counts too."""
        self._started, self._elapsed_before = now(), self.elapsed
        if launched_at is not None:
            self._elapsed_before += max(0.0, self._started - launched_at)

    def count_step(self, step_started: float, chars: int) -> float:
        """A step of `chars` characters begun at `step_started` has ended: the time now."""
        ended = now()
        self._mark(chars)
        if self._first_step is None:
            self._first_step = (ended - step_started, chars)
        self.trained_chars += chars
        self.training_seconds += ended - step_started
        self.elapsed = self._elapsed_before + (ended - self._started)
        return ended

    def save_is_due(self, every: float) -> bool:
        """Whether `every` seconds (0: never) of the run have passed since the first step
        after the last save, or after the session's start: neither the set-up nor a save
        is training that a save would keep, and a slow save must not make the next one
        due at once. Every process comes to the same answer, as all count the main
        one's elapsed time (see `agree`)."""
        if not every or self.trained_chars == self._chars_at_save:
            return False
        if self.saved_at is None:
            self.saved_at = self.elapsed
        return self.elapsed - self.saved_at >= every

    def saved(self) -> None:
        """A checkpoint was written: the next save interval begins with the next step."""
        self.saved_at, self._chars_at_save = None, self.trained_chars

    def speed(self) -> float:
        """Characters per second of training so far in this session, leaving out its
        first step once there are others: that one also set up the kernels (and with
        --compile compiled the model, which can take minutes), which no later step does."""
        seconds, chars = self.training_seconds, self.trained_chars
        if self._first_step is not None and seconds > self._first_step[0]:
            seconds, chars = seconds - self._first_step[0], chars - self._first_step[1]
        return chars / seconds

    def _mark(self, chars: int) -> None:
        """Before counting a step of `chars`: mark the clock as the steps before left it
        (after `agree`, the same on every process), for `pace`. A new step size starts
        the marks again, and forgets the pace any evaluation was measured at."""
        if chars != self._step_size:
            self._step_size, self._marks = chars, []
            self._eval_pace = None
            self._timed = [(seconds, None) for seconds, _ in self._timed]
        if self._first_step is None:  # it also set up the kernels: no mark before it
            return
        if not self._marks or self.training_seconds - self._marks[-1][0] >= PACE_WINDOW / 4:
            self._marks = self._marks[-4:] + [(self.training_seconds, self.trained_chars)]

    def pace(self) -> float | None:
        """Characters per second over the last PACE_WINDOW (to 5/4 of it) seconds of
        training in steps of the current size, or None before a quarter of that."""
        if not self._marks:
            return None
        seconds, chars = self._marks[0]
        span = self.training_seconds - seconds
        if span < PACE_WINDOW / 4:
            return None
        return (self.trained_chars - chars) / span

    def _at_pace_now(self, seconds: float, pace: float | None) -> float:
        """`seconds` measured when training went at `pace`, at today's pace."""
        now = self.pace()
        return seconds if pace is None or now is None else seconds * pace / now

    def evaluated(self, seconds: float) -> None:
        """An evaluation and its save took `seconds`, at the training pace of now."""
        self.eval_seconds, self._eval_pace = seconds, self.pace()

    def speed_known(self) -> bool:
        """Whether the steps so far tell the speed: any step does, except a first step
        with --compile alone, which compiled the model (minutes, on a CPU) and says
        nothing of the steps after it."""
        if self._first_step is None:
            return False
        return not self.config.compile or self.trained_chars > self._first_step[1]

    def final_reserve(self) -> float:
        """Seconds kept back from --time for the final evaluation and checkpoint.

        The last one measured, or before any, the longest timing of a slice of one
        (PROBE_AT) with PROBE_MARGIN, each at the pace training goes now (PACE_WINDOW),
        or before that, an estimate: evaluation goes about EVAL_SPEEDUP times the
        training speed.
        """
        if self.eval_seconds is not None:
            return self._at_pace_now(self.eval_seconds, self._eval_pace)
        if self._timed:
            added, factor = PROBE_MARGIN
            return added + factor * max(self._at_pace_now(*timing) for timing in self._timed)
        if not self.training_seconds or not self.speed_known():
            return 0.5
        return 0.5 + eval_seconds(self.eval_chars, self.speed())

    def evaluation_crowds_out_training(self) -> bool:
        """Whether the final evaluation's reserve takes more than EVAL_SHARE_WARNED of
        --time: a run ended by the time limit then mostly evaluated, and the user is told
        (a huge --eval-chars, or a very short --time)."""
        limit = self.time_limit
        return bool(limit) and self.final_reserve() > EVAL_SHARE_WARNED * limit

    def time_left(self) -> float:
        """Seconds of training left within --time (after the final reserve)."""
        return self.time_limit - self.final_reserve() - self.elapsed

    def progress(self) -> float:
        """How far through --time the run is (not capped)."""
        return self.elapsed / max(self.time_limit - self.final_reserve(), 1e-9)

    def evaluation_needs_timing(self) -> bool:
        """Whether to time a slice of an evaluation now (see PROBE_AT): the final reserve
        would otherwise be the guess for a long evaluation, or an earlier timing that the
        machine's pace may have left behind."""
        return (bool(self.time_limit) and self.eval_seconds is None
                and self.eval_chars >= PROBE_MIN and self.speed_known()
                and self._timings < len(PROBE_AT)
                and self.progress() >= PROBE_AT[self._timings]
                and self.time_left() > PROBE_ROOM * self._timing_took)

    def timed_evaluation(self, seconds: float, took: float) -> None:
        """A whole evaluation would take `seconds`, at the pace a timed slice of one
        went, and the timing took `took`: the final reserve, with PROBE_MARGIN, or the
        earlier timing's if that was longer at today's pace (two back-to-back timings of
        the same slice differed by up to 35% on an Intel Xeon, so the longer is the
        safer). A session that begins past several of PROBE_AT (a resumed run) times
        once for all."""
        passed = sum(self.progress() >= share for share in PROBE_AT)
        self._timings, self._timing_took = max(self._timings + 1, passed), took
        self._timed.append((seconds, self.pace()))

    def time_is_up(self) -> bool:
        return bool(self.time_limit) and self.elapsed + self.final_reserve() >= self.time_limit

    def final_is_near(self, eval_every: int, step_chars: int) -> bool:
        """Whether --time will end the run within half an evaluation interval: then an
        evaluation due now is left to the final one, which would repeat it moments later
        (the plan puts the fourth of four evaluations at the end of the budget, where
        the speed measured at start-up rarely lands it exactly)."""
        if not self.time_limit or not self.trained_chars:
            return False
        steps = self.trained_chars / step_chars
        interval = eval_every * self.training_seconds / steps
        return self.time_left() < interval / 2

    def agree(self, stop_requested: bool, is_main: bool, device: torch.device) -> bool:
        """With several processes, after each step and evaluation: every process takes
        the main one's clock, speed and evaluation time, so that the time limit and the
        learning-rate schedule come out the same everywhere; whether any process was
        asked to stop. One small collective, on the CPU beside a GPU run (so the step
        does not wait for the GPU)."""
        clock = [0.0] * 4
        if is_main:
            clock = [self.elapsed, self.training_seconds, float(self.trained_chars),
                     -1.0 if self.eval_seconds is None else self.eval_seconds]
        shared = torch.tensor([float(stop_requested), *clock], dtype=torch.float64,
                              device=distributed.host_device(device))
        stop, elapsed, seconds, chars, eval_seconds = distributed.all_sum(shared).tolist()
        self.elapsed, self.training_seconds, self.trained_chars = elapsed, seconds, int(chars)
        self.eval_seconds = None if eval_seconds < 0 else eval_seconds
        return stop > 0


def progress(config: TrainConfig, step: int, epochs_done: float, clock: RunClock) -> float:
    """How far through the run it is, in [0, 1], by whichever limit comes first."""
    done = 0.0
    if config.max_steps:
        done = max(done, step / config.max_steps)
    if config.epochs:
        done = max(done, epochs_done / config.epochs)
    if config.time_limit:
        done = max(done, clock.progress())
    return min(done, 1.0)


def limit_reached(config: TrainConfig, step: int, epochs_done: float,
                  clock: RunClock) -> str | None:
    """The limit the run has reached ("max_steps", "epochs" or "time"), if any."""
    if config.max_steps and step >= config.max_steps:
        return "max_steps"
    if config.epochs and epochs_done >= config.epochs:
        return "epochs"
    if clock.time_is_up():
        return "time"
    return None
