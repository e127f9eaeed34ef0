"""nanoGPT's character-level CPU recipe and `charlstm train --time` side by side.

    python bench/peers.py --nanogpt DIR [--budget recipe] [--budget 10m] [--repeat N]
                          [--corpus tinyshakespeare [--from PATH] | --corpus pydocs |
                           --corpus FILE] [--variant 'LABEL=ARGS' ...]
                          [--variant-python 'LABEL=PYTHON' ...] [--no-record]
                          [-- charlstm train arguments for every variant]

DIR is a checkout of https://github.com/karpathy/nanoGPT that you cloned yourself; it is
run from there and never copied into this project (see bench/nanogpt.py for what is run
and how its data is prepared, offline). For each budget, and `--repeat` times:

1. nanoGPT's recipe: `train.py config/train_shakespeare_char.py --device=cpu
   --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
   --n_layer=4 --n_head=4 --n_embd=128 --max_iters=M --lr_decay_iters=M --dropout=0.0`,
   timed from launch to exit. `--budget recipe` is M = 2,000 (or `--max-iters`); a
   duration such as `10m` scales M to fill it, at the pace of the last nanoGPT run (a
   `--timing-iters` run first when there was none), to a multiple of its 250-iteration
   evaluation interval.
2. `charlstm train CORPUS --time <nanoGPT's wall clock> --eval-chars 0`, in a fresh
   folder whose CHARLSTM_CORPORA holds the corpus (`charlstm corpus get NAME --from PATH`
   for a named corpus); once per `--variant` (default: one with no more arguments), so
   that settings can be compared with each other beside the same nanoGPT run. A variant
   named in `--variant-python` runs under that interpreter instead, so an earlier
   charlstm (a `git worktree` of its commit, installed in a venv of its own) can run
   beside this one.
3. Both final models are scored on the whole validation split, the last 10% of the corpus
   (charlstm's split, the same text for both): nanoGPT's checkpoint with its own model
   code in non-overlapping 64-character windows (each window's first character predicted
   from the one before it, its last from 64: nanoGPT's context), charlstm's by its own
   final evaluation with `--eval-chars 0`, every character once, in 64 streams each
   warmed on the 128 characters before it. Mean cross-entropy in nats per character.

Prints the table and appends it to bench/RESULTS.md (or `--results FILE`) with the
command, the CPU, and nanoGPT's commit.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nanogpt  # noqa: E402
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, TrainRun, markdown_table, train  # noqa: E402

from charlstm.cli.input import parse_duration  # noqa: E402
from charlstm.errors import UsageError  # noqa: E402
from charlstm.training.evaluation import EVAL_STREAMS, EVAL_WARMUP  # noqa: E402
from charlstm.data.split import split_point  # noqa: E402
from charlstm.settings import TrainConfig  # noqa: E402

RECIPE = "recipe"


@dataclass
class Corpus:
    name: str  # shown in the record
    train_spec: str  # the corpus argument of `charlstm train`: a name or an absolute path
    named: bool  # a known corpus, which each charlstm run gets into its own corpora folder
    source: str | None  # where `charlstm corpus get` takes a named corpus from
    text: str


@dataclass
class Comparison:
    """One budget's nanoGPT run and one charlstm run beside it, and their scores."""

    budget: str  # "recipe" or the duration asked for
    nanogpt_iters: int  # max_iters
    checkpoint_iter: int  # the iteration nanoGPT's checkpoint was saved at
    nanogpt_seconds: float
    nanogpt_loss: float
    charlstm_steps: int
    charlstm_seconds: float
    charlstm_loss: float
    charlstm_model: str  # the model and precision charlstm chose
    variant: str = "charlstm"  # the label of charlstm's settings (see --variant)

    @property
    def ratio(self) -> float:
        return self.charlstm_loss / self.nanogpt_loss


HEADER = ["budget", "nanoGPT iterations (checkpoint)", "nanoGPT wall clock",
          "nanoGPT val loss", "charlstm variant", "charlstm steps", "charlstm wall clock",
          "charlstm val loss", "charlstm / nanoGPT", "charlstm model"]


def results_table(comparisons: list[Comparison]) -> str:
    """The comparisons as a markdown table, losses in nats per character."""
    rows = [[c.budget, f"{c.nanogpt_iters:,} ({c.checkpoint_iter:,})",
             f"{c.nanogpt_seconds:.1f} s", f"{c.nanogpt_loss:.4f}", c.variant,
             f"{c.charlstm_steps:,}", f"{c.charlstm_seconds:.1f} s", f"{c.charlstm_loss:.4f}",
             f"{c.ratio:.3f}", c.charlstm_model] for c in comparisons]
    return markdown_table(HEADER, rows)


def corpus_files(spec: str, source: str | None, corpora: Path) -> Path:
    """The corpus's text file: a path as it is, a known name got into `corpora` the way a
    user would, `charlstm corpus get NAME [--from SOURCE]`."""
    if Path(spec).is_file():
        return Path(spec).resolve()
    command = [sys.executable, "-m", "charlstm", "corpus", "get", spec]
    command += ["--from", source] if source else []
    got = subprocess.run(command, env={**os.environ, "CHARLSTM_CORPORA": str(corpora)},
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if got.returncode != 0:
        sys.exit(f"peers: charlstm corpus get {spec} failed: {got.stderr.strip()}")
    return Path(got.stdout.strip())


def load_corpus(spec: str, source: str | None, corpora: Path) -> Corpus:
    if source is None and spec == "tinyshakespeare":
        source = str(SHAKESPEARE)
    named = not Path(spec).is_file()  # as in charlstm, a file that exists wins
    path = corpus_files(spec, source, corpora)
    # bytes decoded as charlstm decodes them: no newline translation
    return Corpus(path.stem, spec if named else str(path), named, source,
                  path.read_bytes().decode("utf-8"))


def run_charlstm(corpus: Corpus, seconds: float, workdir: Path, extra: list[str],
                 python: str | None = None, eval_chars: int = 0) -> TrainRun:
    """`charlstm train CORPUS --time SECONDS --eval-chars EVAL_CHARS EXTRA` in a fresh
    folder (0, the default: the whole validation split)."""
    if corpus.named:
        corpus_files(corpus.train_spec, corpus.source, workdir / "corpora")
    run = train([corpus.train_spec, "--time", f"{seconds:.1f}s", "--eval-chars",
                 str(eval_chars), *extra], workdir, python)
    characters = run.config["corpus"]["characters"]
    if characters != len(corpus.text):
        sys.exit(f"peers: charlstm read {characters:,} characters, nanoGPT "
                 f"{len(corpus.text):,}: the splits would differ")
    return run


class Session:
    """One invocation: the scratch folder, the corpus prepared for both, and the pace
    of the latest nanoGPT run, which scales the next budget."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root, self.count = args, root, 0
        self.nanogpt = Path(args.nanogpt).resolve()
        self.corpus = load_corpus(args.corpus, args.source, root / "corpora")
        self.val_start = split_point(len(self.corpus.text), TrainConfig().val_frac)
        self.tokens = nanogpt.prepare(self.corpus.text, self.val_start, root, self.nanogpt)
        self.pace: tuple[float, float] | None = None

    def nanogpt_run(self, max_iters: int) -> nanogpt.Run:
        self.count += 1
        say(f"nanoGPT: {max_iters:,} iterations ...")
        run = nanogpt.train(self.nanogpt, self.root, max_iters, f"out-{self.count}")
        self.pace = run.pace()
        say(f"nanoGPT: {run.seconds:.1f} s, {self.pace[1] * 1000:.1f} ms per iteration")
        return run

    def iterations(self, budget: str) -> int:
        if budget == RECIPE:
            return self.args.max_iters
        if self.pace is None:
            say("timing nanoGPT's pace first")
            self.nanogpt_run(self.args.timing_iters)
        return nanogpt.iterations_for_budget(parse_duration(budget), *self.pace)

    def compare(self, budget: str) -> list[Comparison]:
        """nanoGPT at this budget, then each charlstm variant at its wall clock."""
        ran = self.nanogpt_run(self.iterations(budget))
        loss, checkpoint_iter = nanogpt.score(self.nanogpt, ran.checkpoint, self.tokens,
                                              self.val_start)
        say(f"nanoGPT: {loss:.4f} nats")
        comparisons = []
        for k, (label, arguments) in enumerate(self.args.variants):
            say(f"charlstm ({label}) for {ran.seconds:.1f} s ...")
            mine = run_charlstm(self.corpus, ran.seconds,
                                self.root / f"charlstm-{self.count}-{k}",
                                [*arguments, *self.args.train_args],
                                self.args.pythons.get(label))
            say(f"charlstm ({label}): {mine.val_loss:.4f} nats after "
                f"{mine.last['step']:,} steps")
            comparisons.append(Comparison(
                budget, ran.max_iters, checkpoint_iter, ran.seconds, loss, mine.last["step"],
                mine.seconds, mine.val_loss, f"{mine.model()}, {mine.config['precision']}",
                label))
        return comparisons

    def describe(self) -> str:
        """What the record's table measured, for the paragraph above it."""
        n, start = len(self.corpus.text), self.val_start
        recipe = " ".join(f"--{key}={value}" for key, value in nanogpt.RECIPE.items())
        charlstm = " ".join([self.corpus.train_spec, "--time <that wall clock>",
                             "--eval-chars 0", "VARIANT", *self.args.train_args])
        variants = "; ".join(f"{label}: `{shlex.join(arguments)}`" if arguments else
                             f"{label}: (none)" for label, arguments in self.args.variants)
        variants += "".join(f"; {label} ran under `{python}`, charlstm at {checkout_of(python)}"
                            for label, python in self.args.pythons.items())
        block = nanogpt.RECIPE["block_size"]
        return (
            f"nanoGPT ({nanogpt.version(self.nanogpt, self.args.nanogpt_commit)}) runs "
            f"`train.py {nanogpt.CONFIG} {recipe}` with max_iters = lr_decay_iters = the "
            f"iterations shown, timed from launch to exit; then `charlstm train {charlstm}` "
            f"for each variant (its arguments: {variants}). "
            f"Both final models are scored on the whole validation split of "
            f"{self.corpus.name}, its last {n - start:,} of {n:,} characters, in nats per "
            f"character: nanoGPT's checkpoint (saved at the iteration in brackets) in "
            f"non-overlapping {block}-character windows, each window's first character "
            f"predicted from the one before it; charlstm's final evaluation, {EVAL_STREAMS} "
            f"streams each warmed on the {EVAL_WARMUP} characters before it. Below 1 in the "
            f"ratio, charlstm is better.")


def checkout_of(python: str) -> str:
    """Where the charlstm that `python` imports comes from, and its commit if a git
    checkout."""
    found = subprocess.run([python, "-c", "import charlstm, pathlib; "
                            "print(pathlib.Path(charlstm.__file__).resolve().parents[1])"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        sys.exit(f"peers: {python} cannot import charlstm: {found.stderr.strip()[-300:]}")
    folder = found.stdout.strip()
    commit = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return f"{folder} (commit {commit})" if commit else folder


def parse_variants(parser: argparse.ArgumentParser, variants: list[str],
                   pythons: list[str] | None) -> tuple[list[tuple[str, list[str]]], dict]:
    """--variant 'LABEL=ARGS' as (label, arguments) pairs, and --variant-python
    'LABEL=PYTHON' as {label: python}, each naming a variant."""
    pairs = [(label or "charlstm", shlex.split(arguments))
             for label, _, arguments in (v.partition("=") for v in variants)]
    interpreters = dict(v.partition("=")[::2] for v in pythons or [])
    unknown = set(interpreters) - {label for label, _ in pairs}
    if unknown:
        parser.error(f"--variant-python names no --variant: {', '.join(sorted(unknown))}")
    return pairs, interpreters


def say(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, metavar="DIR",
                        help="a checkout of karpathy/nanoGPT (clone it yourself)")
    parser.add_argument("--nanogpt-commit", metavar="HASH",
                        help="the commit DIR holds, for the record, when DIR is not a git "
                             "clone (e.g. a `git archive` export)")
    parser.add_argument("--budget", action="append", metavar="recipe|DURATION",
                        help=f"repeatable: '{RECIPE}' (--max-iters iterations) or a wall "
                             "clock such as 70s or 10m (default: recipe)")
    parser.add_argument("--max-iters", type=int, default=nanogpt.RECIPE_ITERS,
                        help="the recipe's iterations (default: 2000)")
    parser.add_argument("--timing-iters", type=int, default=nanogpt.EVAL_INTERVAL,
                        help="iterations of the run that times nanoGPT before a first "
                             "scaled budget (default: 250)")
    parser.add_argument("--variant", action="append", metavar="LABEL=ARGS",
                        help="repeatable: charlstm train arguments to run beside each "
                             "nanoGPT run, under a label (default: one, 'charlstm', with "
                             "none); arguments after -- go to every variant")
    parser.add_argument("--variant-python", action="append", metavar="LABEL=PYTHON",
                        help="repeatable: run the variant LABEL under this interpreter "
                             "(e.g. an earlier charlstm's venv)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each budget")
    parser.add_argument("--corpus", default="tinyshakespeare",
                        help="a known corpus name or a text file (default: tinyshakespeare)")
    parser.add_argument("--from", dest="source", metavar="PATH",
                        help="where `charlstm corpus get` takes a named corpus from "
                             "(default for tinyshakespeare: ../shared/corpora/"
                             "tinyshakespeare.txt)")
    parser.add_argument("--label", help="the heading in RESULTS.md")
    parser.add_argument("--results", type=Path, help="append here, not to bench/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="more charlstm train arguments, after --")
    args = parser.parse_args()
    args.budget = args.budget or [RECIPE]
    args.train_args = [a for a in args.train_args if a != "--"]
    args.variants, args.pythons = parse_variants(parser, args.variant or ["charlstm="],
                                                 args.variant_python)
    for budget in args.budget:
        try:
            if budget != RECIPE:
                parse_duration(budget)
        except UsageError:
            parser.error(f"--budget takes '{RECIPE}' or a duration such as 70s or 10m, "
                         f"not {budget!r}")
    try:
        nanogpt.check_checkout(Path(args.nanogpt))
    except nanogpt.NanoGPTError as exc:
        parser.error(str(exc))
    if min(args.max_iters, args.timing_iters, args.repeat) < 1:
        parser.error("--max-iters, --timing-iters and --repeat must be at least 1")
    return args


def main() -> None:
    args = parse_arguments()
    root = Path(tempfile.mkdtemp(prefix="charlstm-peers-"))
    try:
        session = Session(args, root)
        comparisons = [row for budget in args.budget for _ in range(args.repeat)
                       for row in session.compare(budget)]
    except nanogpt.NanoGPTError as exc:
        sys.exit(f"peers: {exc}")
    finally:
        if args.keep:
            say(f"scratch folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    table = results_table(comparisons)
    publish(args.label or f"Peers: nanoGPT's CPU recipe and charlstm --time on "
                          f"{session.corpus.name}", table, not args.no_record,
            body=f"{session.describe()}\n\n{table}", results=args.results)


if __name__ == "__main__":
    main()
