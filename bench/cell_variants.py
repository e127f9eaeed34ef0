"""Layer normalisation, the multiplicative LSTM and residual stacks against the fused LSTM,
at one wall clock.

    python bench/cell_variants.py --corpus PATH [--minutes 10] [--cell lstm --cell layernorm
                                  --cell multiplicative] [--batch 128] [--seq-len 32]
                                  [--hidden 512] [--lr 1e-2] [--precision fp32|bf16|auto]
                                  [--no-compile] [--in-charlstm]
                                  [--probe-every 250] [--no-record]
    python bench/cell_variants.py --corpus PATH --in-charlstm --cell lstm --cell lstm:2
                                  --cell residual:2 --cell residual:3 [--train-args ARGS]

Issue 32 asks to try the known levers for character-level LSTMs, layer normalisation
(Ba, Kiros and Hinton, 2016) and the multiplicative LSTM (Krause, Lu, Murray and Renals,
2016), and to keep what pays for its cost in wall clock. torch has no fused kernel for
either, so each runs here as a cell written one time step after another (compiled by
torch.compile unless --no-compile), where charlstm's LSTM is torch.nn.LSTM (oneDNN's
fused kernel on a CPU, cuDNN on a GPU).

Each cell trains the same model around it, charlstm's CharRNN (embedding 64, one layer of
`--hidden`, a plain output layer) with its `rnn` swapped, in the same loop: the plan's
schedule for a large corpus (AdamW at `--lr` 1e-2, beta1 0.7, beta2 0.99, weight decay 0.1, 100
warm-up steps, then a cosine to 1% of the rate over the wall clock, gradient norm cap 1, no
dropout), `--batch` contiguous streams of `--seq-len` characters that carry their state.
The clock starts after two steps, so compiling (timed and shown apart) is not charged to
the compiled cells: that favours them. The validation loss (nats per character over the
corpus's last 10%, read by 64 streams that carry their state) is measured at the end, and
every `--probe-every` steps on the split's first 100,000 characters, to compare the cells
at equal steps as well as at equal time. The cells train one after another, so a change in
the machine's speed during the run falls on one of them: the steps show it.

Issue 32 also asks for depth with residual connections between stacked layers, if they
help. `residual:N` (with --in-charlstm only) is N fused LSTM layers, nn.LSTM one layer
each, every layer after the first adding its input to its output (as in Wu et al., 2016,
Google's neural machine translation system); `lstm:N` is charlstm's own N-layer nn.LSTM.
Both take charlstm's whole plan for an N-layer model of that width (its dropout and weight
drop fitted, the plan timing the very stack it trains).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table, train as run_train  # noqa: E402

from charlstm.device import autocast  # noqa: E402
from charlstm.model.charrnn import CharRNN, detach_state  # noqa: E402
from charlstm.model.dropout import run_with_weight_drop  # noqa: E402
from charlstm.settings import ModelConfig  # noqa: E402
from charlstm.training.optim import make_optimizer, set_learning_rate  # noqa: E402

CPU = torch.device("cpu")
MIN_LR_RATIO, WARMUP, BETAS, WEIGHT_DECAY, CLIP = 0.01, 100, (0.7, 0.99), 0.1, 1.0
PROBE_CHARS, EVAL_STREAMS, EVAL_WINDOW = 100_000, 64, 256


class LayerNormLSTM(nn.Module):
    """One LSTM layer with layer normalisation (Ba et al.): the gates are
    LN(W_x x) + LN(W_h h) + b, and the output is o * tanh(LN(c))."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        gates = 4 * hidden_size
        self.ih = nn.Linear(input_size, gates, bias=False)
        self.hh = nn.Linear(hidden_size, gates, bias=False)
        self.bias = nn.Parameter(torch.zeros(gates))
        with torch.no_grad():  # the forget gate starts open, as in CharRNN
            self.bias[hidden_size:2 * hidden_size].fill_(1.0)
        self.norm_x, self.norm_h = nn.LayerNorm(gates), nn.LayerNorm(gates)
        self.norm_c = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, state):
        h, c = unpacked(state, x, self.hh.in_features)
        inputs = self.norm_x(self.ih(x)) + self.bias  # the whole window at once
        outputs = []
        for t in range(x.size(1)):
            i, f, g, o = (inputs[:, t] + self.norm_h(self.hh(h))).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.norm_c(c))
            outputs.append(h)
        return torch.stack(outputs, 1), (h[None], c[None])


class MultiplicativeLSTM(nn.Module):
    """One multiplicative LSTM layer (Krause et al.): the recurrent input is
    m = (W_mx x) * (W_mh h), so each input character picks its own transition, and the
    gates are W_x x + W_m m + b, then an LSTM's update."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        gates = 4 * hidden_size
        self.mx = nn.Linear(input_size, hidden_size, bias=False)
        self.mh = nn.Linear(hidden_size, hidden_size, bias=False)
        self.ih = nn.Linear(input_size, gates)
        self.mm = nn.Linear(hidden_size, gates, bias=False)
        with torch.no_grad():
            self.ih.bias.zero_()
            self.ih.bias[hidden_size:2 * hidden_size].fill_(1.0)

    def forward(self, x: torch.Tensor, state):
        h, c = unpacked(state, x, self.mh.in_features)
        multipliers, inputs = self.mx(x), self.ih(x)  # the whole window at once
        outputs = []
        for t in range(x.size(1)):
            m = multipliers[:, t] * self.mh(h)
            i, f, g, o = (inputs[:, t] + self.mm(m)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, 1), (h[None], c[None])


def unpacked(state, x: torch.Tensor, hidden_size: int):
    """(h, c), each (B, H), from nn.LSTM's state of one layer, (1, B, H) each, or None
    (zeros), as nn.LSTM takes it."""
    if state is None:
        zeros = x.new_zeros(x.size(0), hidden_size, dtype=torch.float32)
        return zeros, zeros
    return state[0][0], state[1][0]


class ResidualStack(nn.Module):
    """`num_layers` fused LSTM layers (an nn.LSTM of one layer each), every layer after the
    first adding its input to its output, with dropout between layers as nn.LSTM applies
    it, and weight drop on each layer's recurrent matrix as charlstm's. Its state is
    nn.LSTM's: (h, c), each (num_layers, B, H)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.LSTM(input_size if k == 0 else hidden_size, hidden_size, batch_first=True)
            for k in range(num_layers))
        self.dropout = dropout
        with torch.no_grad():  # the forget gates start open, as in CharRNN
            for layer in self.layers:
                layer.bias_ih_l0[hidden_size:2 * hidden_size].fill_(1.0)
                layer.bias_hh_l0[hidden_size:2 * hidden_size].fill_(0.0)

    def forward(self, x: torch.Tensor, state, weight_drop: float = 0.0):
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            inner = None if state is None else tuple(s[k:k + 1].contiguous() for s in state)
            if k:
                x = F.dropout(x, self.dropout, self.training)
            out, (h, c) = run_with_weight_drop(layer, weight_drop, x, inner)
            x = x + out if k else out
            hs.append(h)
            cs.append(c)
        return x, (torch.cat(hs), torch.cat(cs))


CELLS = {"lstm": None, "layernorm": LayerNormLSTM, "multiplicative": MultiplicativeLSTM,
         "residual": ResidualStack}
COMPILED = ("layernorm", "multiplicative")  # the cells written one time step at a time


class CompiledForTraining(nn.Module):
    """`cell` compiled where gradients are taken (training), and as written where they are
    not (evaluation), so that no_grad does not make torch.compile start over. With
    `dynamic`, one compiled graph serves every batch size (charlstm's early batch trains
    fewer streams than the rest of the run)."""

    def __init__(self, cell: nn.Module, dynamic: bool | None = None):
        super().__init__()
        self.cell = cell
        compiled = torch.compile(cell, dynamic=dynamic)
        object.__setattr__(self, "compiled", compiled)  # not a second submodule

    def forward(self, x: torch.Tensor, state):
        if not torch.is_grad_enabled():
            return self.cell(x, state)
        if state is not None:  # the early batch's streams are a strided view
            state = tuple(s.contiguous() for s in state)
        return self.compiled(x.contiguous(), state)

    def warm_up(self, input_size: int, seq_len: int) -> float:
        """Compile forward and backward now, with and without a state; the seconds taken."""
        started = time.perf_counter()
        for state in (None, "zeros"):
            x = torch.randn(8, seq_len, input_size, requires_grad=True)  # as embeddings do
            if state is not None:
                _, state = self.cell(x[:, :1].detach(), None)
                state = tuple(s.detach() for s in state)
            out, (h, c) = self(x, state)
            (out.sum() + c.sum()).backward()
        self.cell.zero_grad(set_to_none=True)
        return time.perf_counter() - started


class WithResidualStack(CharRNN):
    """CharRNN whose stacked layers are a ResidualStack."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.rnn = ResidualStack(config.embed_size, config.hidden_size, config.num_layers,
                                 config.dropout if config.num_layers > 1 else 0.0)

    def _run(self, x: torch.Tensor, state):
        return self.rnn(x, state, self.config.weight_drop if self.training else 0.0)


def as_charlstm(cell: str, argv: list[str]) -> None:
    """Run charlstm's command line with ARGV, every model it trains having `cell` as its
    recurrent layer (one layer only) or, for `residual`, its stack: the whole of
    charlstm's training (the plan, its batches, schedule, divergence guard and evaluation)
    around another cell. A compiled cell is compiled as the model is built, before the
    first step, so that its compiling counts against the budget but not in the speed the
    plan's refit reads from the steps. A residual stack is also what the plan times."""
    from charlstm.cli import main as command_line
    from charlstm.training import budget, loop

    if cell == "residual":
        loop.CharRNN = budget.CharRNN = WithResidualStack
        sys.argv = ["charlstm", *argv]
        command_line()
        return

    class WithCell(CharRNN):
        def __init__(self, config: ModelConfig):
            super().__init__(config)
            if config.num_layers != 1:
                sys.exit(f"cell_variants: {cell} is written for one layer")
            self.rnn = CompiledForTraining(CELLS[cell](config.embed_size, config.hidden_size),
                                           dynamic=True)
            seconds = self.rnn.warm_up(config.embed_size, seq_len)
            print(f"cell_variants: {cell} compiled in {seconds:.1f} s", file=sys.stderr)

    seq_len = int(argv[argv.index("--seq-len") + 1]) if "--seq-len" in argv else 32
    if CELLS[cell] is not None:
        loop.CharRNN = WithCell
    sys.argv = ["charlstm", *argv]
    command_line()


def cell_and_layers(spec: str) -> tuple[str, int]:
    """'NAME' or 'NAME:LAYERS' as (name, layers): a compiled cell has one layer, a
    residual stack two or more (two unless given)."""
    name, _, count = spec.partition(":")
    if name not in CELLS or (count and not count.isdigit()):
        raise argparse.ArgumentTypeError(f"{spec!r}: NAME[:LAYERS], NAME one of "
                                         f"{', '.join(CELLS)}")
    fewest = 2 if name == "residual" else 1
    layers = int(count) if count else fewest
    if layers < fewest or (name in COMPILED and layers > 1):
        raise argparse.ArgumentTypeError(
            f"{spec!r}: {name} takes " + ("one layer" if name in COMPILED else
                                          f"at least {fewest} layers"))
    return name, layers


def in_charlstm(args) -> None:
    """`charlstm train CORPUS --time MINUTES` with each cell, one after another, in fresh
    folders: the plan's settings with each cell (and, for a stack, its layers), at
    `--precision`; by default fp32 when a compiled cell is among them (what `auto`
    measured best for the fused LSTM on the CPU these cells were first measured on;
    measuring it for a compiled cell would compile it twice more), else auto."""
    rows, reference = [], None
    cells = args.cell or [("lstm", 1), ("layernorm", 1)]
    precision = args.precision or ("fp32" if any(c in COMPILED for c, _ in cells) else "auto")
    for cell, layers in cells:
        launcher = [sys.executable, str(Path(__file__).resolve()), "--as-charlstm", cell]
        stack = ["--num-layers", str(layers), "--hidden-size", str(args.hidden)] * (layers > 1)
        run = run_train([str(args.corpus), "--time", f"{args.minutes * 60:g}s", "--eval-chars",
                         "0", "--sample-length", "0", "--precision", precision, *stack,
                         *shlex.split(args.train_args)], launcher=launcher)
        name = cell if layers == 1 else f"{cell}, {layers} layers"
        print(f"{name}: {run.val_loss:.4f} after {run.last['step']:,} steps", flush=True)
        reference = run.val_loss if reference is None else reference
        settings = run.config["train"]
        rows.append([name, f"{run.seconds:.1f} s", f"{run.last['step']:,}",
                     f"{run.val_loss:.4f}",
                     f"{run.val_loss - reference:+.4f}" if rows else "reference",
                     f"{run.model()}, batch {settings['batch_size']} (early "
                     f"{settings.get('early_batch', 0)}), {run.config['precision']}"])
    header = ["cell", "wall clock", "steps", "val loss (nats)", "vs the first", "model"]
    table = markdown_table(header, rows)
    body = (f"`charlstm train {args.corpus} --time {args.minutes * 60:g}s --eval-chars 0 "
            f"--sample-length 0 --precision {precision}"
            + (f" {args.train_args}" if args.train_args else "")
            + f"` (and for N layers `--num-layers N --hidden-size {args.hidden}`), run by "
            "`bench/cell_variants.py --as-charlstm CELL` (charlstm's command line with CELL "
            "as the recurrent layer, a compiled cell compiled while training, its compiling "
            "counted against the budget; or with a residual stack of fused layers), one "
            "after another; validation loss in nats over the whole split (the last 10%).\n\n"
            + table)
    title = ("The plan with stacked and residual LSTM layers in charlstm's loop"
             if any(layers > 1 for _, layers in cells) else
             "The plan with a layer-normalised or multiplicative LSTM in charlstm's loop")
    publish(title, table, not args.no_record, body)


def read_corpus(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(training ids, validation ids: the last 10%, vocabulary size)."""
    codes = np.frombuffer(path.read_text(encoding="utf-8").encode("utf-32-le"), np.uint32)
    vocab, ids = np.unique(codes, return_inverse=True)
    ids = torch.from_numpy(ids.astype(np.int64))
    split = len(ids) - len(ids) // 10
    return ids[:split], ids[split:], len(vocab)


def build(cell: str, vocab_size: int, hidden: int) -> tuple[CharRNN, nn.Module]:
    """CharRNN with `cell` as its recurrent layer, and that layer uncompiled."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(model="lstm", num_layers=1, hidden_size=hidden,
                                embed_size=64, vocab_size=vocab_size, dropout=0.0))
    if CELLS[cell] is not None:
        model.rnn = CELLS[cell](64, hidden)
    return model, model.rnn


def evaluate(model: CharRNN, rnn: nn.Module, ids: torch.Tensor, precision: str) -> float:
    """Mean loss in nats over `ids`, read by EVAL_STREAMS streams that carry their state,
    with the uncompiled `rnn` (eval mode and no_grad would make torch.compile start over)."""
    trained, model.rnn = model.rnn, rnn
    length = (len(ids) - 1) // EVAL_STREAMS
    rows = torch.stack([ids[k * length:(k + 1) * length + 1] for k in range(EVAL_STREAMS)])
    state, total = model.initial_state(EVAL_STREAMS), 0.0
    model.eval()
    with torch.no_grad(), autocast(CPU, precision):
        for start in range(0, length, EVAL_WINDOW):
            x = rows[:, start:start + EVAL_WINDOW]
            y = rows[:, start + 1:start + EVAL_WINDOW + 1]
            _, loss, state = model(x[:, :y.size(1)], state, y)
            total += loss.item() * y.numel()
    model.train()
    model.rnn = trained
    return total / (length * EVAL_STREAMS)


def train(cell: str, corpus: tuple, args) -> dict:
    """Train `cell` for args.minutes after two untimed steps; its numbers."""
    train_ids, val_ids, vocab_size = corpus
    model, rnn = build(cell, vocab_size, args.hidden)
    if args.compile and CELLS[cell] is not None:
        model.rnn = torch.compile(rnn)
    optimizer = make_optimizer(model, args.lr, WEIGHT_DECAY, CPU, *BETAS)
    starts = torch.arange(args.batch) * (len(train_ids) // args.batch)
    offsets = torch.arange(args.seq_len + 1)
    state, step, probes, budget = model.initial_state(args.batch), 0, [], args.minutes * 60
    trained = warm_up = 0.0
    while trained < budget:
        began = time.perf_counter()
        progress = trained / budget
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        lr = args.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * cosine)
        set_learning_rate(optimizer, lr * min(1.0, (step + 1) / WARMUP))
        rows = train_ids[(starts[:, None] + step * args.seq_len + offsets) % len(train_ids)]
        with autocast(CPU, args.precision):
            _, loss, state = model(rows[:, :-1], state, rows[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        state, step = detach_state(state), step + 1
        if step <= 2:
            warm_up += time.perf_counter() - began
        else:
            trained += time.perf_counter() - began
        if step % args.probe_every == 0:
            probes.append((step, evaluate(model, rnn, val_ids[:PROBE_CHARS], args.precision)))
    final = evaluate(model, rnn, val_ids, args.precision)
    return {"cell": cell, "warm_up": warm_up, "steps": step, "seconds": trained,
            "probes": probes, "final": final}


def report(results: list[dict], args, chars: int) -> tuple[str, str]:
    """(the table, the body with the probes) for RESULTS.md."""
    common = min(r["steps"] for r in results) // args.probe_every * args.probe_every
    rows = []
    for r in results:
        at = dict(r["probes"]).get(common)
        per_step = r["seconds"] / max(1, r["steps"] - 2)
        rows.append([r["cell"], f"{r['warm_up']:.1f}", f"{r['steps']:,}",
                     f"{per_step * 1000:.0f}", f"{args.batch * args.seq_len / per_step:,.0f}",
                     f"{at:.4f}" if at is not None else "-", f"**{r['final']:.4f}**"])
    header = ["cell", "first two steps (s)", "steps", "ms/step", "chars/s",
              f"probe at step {common:,}", "val loss, whole split"]
    table = markdown_table(header, rows)
    probes = "\n".join(f"- {r['cell']}: " + ", ".join(f"{s:,}: {v:.4f}" for s, v in r["probes"])
                       for r in results)
    body = (f"{args.corpus.name}: {chars:,} characters; {args.minutes:g} minutes of training "
            f"each, peak learning rate {args.lr:g}, batch {args.batch} x {args.seq_len}, "
            f"width {args.hidden}, "
            f"{args.precision}, {'compiled' if args.compile else 'eager'} cells.\n\n{table}\n\n"
            f"Validation loss on the split's first {PROBE_CHARS:,} characters, by step:\n\n"
            f"{probes}\n")
    return table, body


def main() -> None:
    if sys.argv[1:2] == ["--as-charlstm"]:  # a launcher for in_charlstm's runs
        as_charlstm(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--cell", action="append", type=cell_and_layers,
                        metavar="NAME[:LAYERS]",
                        help=f"one of {', '.join(CELLS)}; LAYERS (and residual) with "
                             "--in-charlstm only")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                        help="default: fp32 (auto for --in-charlstm without compiled cells)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--probe-every", type=int, default=250)
    parser.add_argument("--in-charlstm", action="store_true",
                        help="train each cell by `charlstm train CORPUS --time MINUTES` "
                             "(the plan and all of charlstm's loop) instead of this loop")
    parser.add_argument("--train-args", default="", metavar="ARGS",
                        help="with --in-charlstm: more `charlstm train` arguments for every "
                             "run (the settings a plan gave another model, say)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.in_charlstm:
        in_charlstm(args)
        return
    cells = args.cell or [(c, 1) for c in CELLS if c != "residual"]
    if any(c == "residual" or layers > 1 for c, layers in cells) or args.precision == "auto":
        parser.error("stacks and --precision auto run with --in-charlstm only")
    args.precision = args.precision or "fp32"
    corpus = read_corpus(args.corpus)
    results = []
    for cell, _ in cells:
        r = train(cell, corpus, args)
        results.append(r)
        print(f"{cell}: {r['steps']:,} steps in {r['seconds']:.0f} s after "
              f"{r['warm_up']:.1f} s for the first two; val loss {r['final']:.4f}", flush=True)
    table, body = report(results, args, len(corpus[0]) + len(corpus[1]))
    publish("Layer normalisation and the multiplicative LSTM against the fused LSTM",
            table, not args.no_record, body)


if __name__ == "__main__":
    main()
