"""Training-loop speed against a bare torch.nn step on the same shapes.

    python bench/loop_speed.py [--corpus PATH] [--preset small] [--seconds 20] [--rounds 3]

The loop is charlstm's whole `Trainer.fit` (batches from the memory-mapped corpus, forward,
backward, clipping, AdamW, learning-rate schedule, carried state, loss reports), timed
between its progress reports, so set-up and the final evaluation are left out. The bare
step is the same model (dropout included) and precision doing only forward, backward and
AdamW on one fixed batch, with torch's default AdamW and with the fused one charlstm
uses; the second ratio is the loop's own overhead. Rounds alternate so that drift in a
shared machine hits all three; the table shows the median of each. Prints the table and appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table  # noqa: E402

from charlstm.model.charrnn import CharRNN, detach_state  # noqa: E402
from charlstm.device import autocast  # noqa: E402
from charlstm.training.setup import make_trainer  # noqa: E402
from charlstm.training.loop import TrainingCallback  # noqa: E402


class Clock(TrainingCallback):
    """Times the loop between its first and last progress report."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def on_step(self, stats) -> None:
        self.marks.append((time.perf_counter(), stats.step))


def loop_speed(trainer, seconds: float) -> float:
    cfg = trainer.config
    clock = Clock()
    trainer.callback = clock
    trainer.config.time_limit = trainer.clock.elapsed + seconds
    trainer.fit()
    (t0, s0), (t1, s1) = clock.marks[0], clock.marks[-1]
    return (s1 - s0) * cfg.batch_size * cfg.seq_len / (t1 - t0)


def bare_speed(trainer, seconds: float, fused: bool) -> float:
    """Forward + backward + AdamW of a fresh copy of the model, nothing else."""
    cfg = trainer.config
    model = CharRNN(trainer.model_config).to(trainer.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=fused or None)
    x = torch.randint(trainer.model_config.vocab_size, (cfg.batch_size, cfg.seq_len),
                      device=trainer.device)
    state = None

    def step():
        nonlocal state
        with autocast(trainer.device, trainer.precision):
            _, loss, state = model(x, state, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state = detach_state(state)

    for _ in range(3):
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * cfg.batch_size * cfg.seq_len / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(SHAKESPEARE) if SHAKESPEARE.exists() else None,
                        help="text to train on (default: tinyshakespeare if present, "
                             "else the built-in corpus)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seconds", type=float, default=20.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="charlstm-loop-"))
    trainer = make_trainer(args.corpus, out=work / "run", preset=args.preset,
                           settings={"precision": args.precision, "eval_every": 10**9,
                                     "sample_length": 0, "max_steps": None,
                                     "time_limit": 1.0},
                           corpora_dir=work / "corpora")
    loops, bares, fused = [], [], []
    for _ in range(args.rounds):
        bares.append(bare_speed(trainer, args.seconds, fused=False))
        fused.append(bare_speed(trainer, args.seconds, fused=True))
        loops.append(loop_speed(trainer, args.seconds))
    loop, bare, bare_fused = (statistics.median(v) for v in (loops, bares, fused))

    def speeds(values):
        return ", ".join(f"{v:,.0f}" for v in values)

    cfg, m = trainer.config, trainer.model_config
    rows = [
        ("shapes", f"{m.model} {m.num_layers}x{m.hidden_size}, embed {m.embed_size}, "
                   f"dropout {m.dropout}, batch {cfg.batch_size} x {cfg.seq_len} chars"),
        ("precision", trainer.precision_note),
        ("bare forward+backward+AdamW (torch default)",
         f"{bare:,.0f} chars/s (rounds: {speeds(bares)})"),
        ("bare forward+backward+AdamW (fused, as charlstm uses)",
         f"{bare_fused:,.0f} chars/s (rounds: {speeds(fused)})"),
        ("charlstm training loop", f"{loop:,.0f} chars/s (rounds: {speeds(loops)})"),
        ("loop / bare default", f"{loop / bare:.1%}"),
        ("loop / bare fused", f"{loop / bare_fused:.1%}"),
    ]
    table = markdown_table(["measure", "value"], [list(row) for row in rows])
    publish("Training loop speed vs a bare step", table, not args.no_record)


if __name__ == "__main__":
    main()
