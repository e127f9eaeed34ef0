"""Fine-tuning against training from scratch on a small text of another kind.

    python bench/finetune.py [--budget 60s] [--new-chars 200000] [-- extra train arguments]
    python bench/finetune.py --sweep [--parent-steps 500] [--steps 300]
                             [--lr-ratio 1 --lr-ratio 0.3 ...] [--warmup 20 ...]

The parent is a model trained on the built-in `pystdlib` corpus: the default run
(`charlstm train`), or `--parent-steps N` steps of it. The new text is the first
`--new-chars` characters of the built-in `pydocs` corpus (English prose about Python, not
source code). Each run is a real `charlstm train` command in a fresh folder (see runner);
every run on the new text has the same validation split (its last 10%), read whole.

Default: the parent fine-tuned with `--init-from` for `--budget` of wall clock, against
the same budget from scratch with the same model: the validation loss of each. Timed, so
run it on an otherwise idle machine.

--sweep: fixed-step runs (`--steps` each, bf16) fine-tuning the parent with each learning
rate (`--lr-ratio`: a share of the parent's) and warm-up, and one from scratch with the
default settings: a fixed number of steps gives the same loss however loaded the machine
is, so the sweep that chose the fine-tuning defaults (settings.FINE_TUNE_LR_RATIO and
FINE_TUNE_WARMUP_STEPS) can run anywhere.

Anything after `--` goes to every `charlstm train` (e.g. `-- --hidden-size 64` for a quick
check of the script at a tiny scale). Prints a table and appends it to bench/RESULTS.md
with the exact command (`--no-record`: print only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import publish  # noqa: E402
from runner import TrainRun, markdown_table, train  # noqa: E402

from charlstm.data.corpus import build_docs_corpus  # noqa: E402
from charlstm.settings import TrainConfig  # noqa: E402

EVAL = ["--eval-chars", "0"]  # the whole validation split, the same for every run


def new_text(folder: Path, chars: int) -> Path:
    """The first `chars` characters of pydocs, cut at a line end."""
    text = build_docs_corpus(folder).read_text("utf-8")[:chars]
    text = text[:text.rfind("\n") + 1] or text
    path = folder / f"pydocs-{chars // 1000}k.txt"
    path.write_text(text, encoding="utf-8")
    return path


def train_parent(steps: int | None, extra: list[str]) -> TrainRun:
    limit = ["--max-steps", str(steps), "--eval-every", str(steps)] if steps else []
    print(f"training the parent on pystdlib ({steps or 'default'} steps)", file=sys.stderr)
    return train(["pystdlib", *limit, "-q", *extra])


def describe(run: TrainRun) -> list[str]:
    train_config = run.config["train"]
    return [f"{run.val_loss:.4f}", f"{run.val_bpc:.3f}", f"{run.last['step']:,}",
            f"{train_config['lr']:g}", str(train_config["warmup_steps"]),
            f"{run.seconds:.1f} s"]


HEADER = ["run", "val loss (nats)", "val bits/char", "steps", "lr", "warm-up", "wall clock"]


def compare(args, extra: list[str], text: Path, parent: Path) -> str:
    budget = ["--time", args.budget, "-q", *EVAL, *extra]
    runs = [("from scratch", train([str(text), *budget])),
            ("fine-tuned from the pystdlib model",
             train([str(text), "--init-from", str(parent), *budget]))]
    rows = [[name, *describe(run)] for name, run in runs]
    scratch, tuned = runs[0][1].val_loss, runs[1][1].val_loss
    verdict = (f"Validation loss after {args.budget} (same model, {runs[0][1].model()}, "
               f"same validation split): fine-tuned {tuned:.4f} nats, from scratch "
               f"{scratch:.4f} nats; fine-tuning is {abs(scratch - tuned):.4f} nats "
               f"({abs(1 - tuned / scratch) * 100:.1f}%) "
               f"{'lower' if tuned < scratch else 'higher'}.")
    return markdown_table(HEADER, rows) + "\n\n" + verdict


def sweep(args, extra: list[str], text: Path, parent: Path, parent_lr: float) -> str:
    fixed = ["--max-steps", str(args.steps), "--eval-every", str(args.steps),
             "--precision", "bf16", "--dropout", "0", "-q", *EVAL, *extra]
    rows = []
    scratch = train([str(text), *fixed])
    rows.append(["from scratch, default settings", *describe(scratch)])
    for ratio in args.lr_ratio or [1.0, 0.3, 0.1]:
        for warmup in args.warmup or [20, 100]:
            run = train([str(text), "--init-from", str(parent), "--lr",
                         f"{parent_lr * ratio:g}", "--warmup-steps", str(warmup), *fixed])
            rows.append([f"fine-tuned, lr x{ratio:g}, warm-up {warmup}", *describe(run)])
            print(" | ".join(rows[-1]), file=sys.stderr)
    return markdown_table(HEADER, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s", help="wall clock of each run on the new text")
    parser.add_argument("--new-chars", type=int, default=200_000,
                        help="characters of pydocs to fine-tune on (default 200000)")
    parser.add_argument("--parent-steps", type=int,
                        help="train the parent this many steps (default: the default run; "
                             "500 with --sweep)")
    parser.add_argument("--sweep", action="store_true",
                        help="fixed-step runs over learning rates and warm-ups instead")
    parser.add_argument("--steps", type=int, default=300, help="steps of each sweep run")
    parser.add_argument("--lr-ratio", type=float, action="append",
                        help="sweep: a learning rate as a share of the parent's (repeatable)")
    parser.add_argument("--warmup", type=int, action="append",
                        help="sweep: a warm-up in steps (repeatable)")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = [a for a in args.train_args if a != "--"]
    text = new_text(Path(tempfile.mkdtemp(prefix="charlstm-finetune-")), args.new_chars)
    steps = args.parent_steps or (500 if args.sweep else None)
    parent = train_parent(steps, extra)
    parent_note = (f"Parent: `charlstm train pystdlib` ({parent.model()}, "
                   f"{parent.last['step']:,} steps, validation loss {parent.val_loss:.4f} "
                   f"nats on pystdlib). New text: the first {args.new_chars:,} characters of "
                   f"`pydocs`, validation its last 10%.")
    if args.sweep:
        lr = parent.config["train"].get("lr", TrainConfig().lr)
        table = sweep(args, extra, text, parent.workdir / "run", lr)
        label = f"Fine-tuning learning rate and warm-up ({args.steps} steps each)"
    else:
        table = compare(args, extra, text, parent.workdir / "run")
        label = (f"Fine-tuning vs from scratch, {args.budget} on {args.new_chars // 1000} KB "
                 "of pydocs")
    publish(label, table, not args.no_record, body=f"{parent_note}\n\n{table}")


if __name__ == "__main__":
    main()
