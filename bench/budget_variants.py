"""`charlstm train --time` with several settings, or several charlstm versions, one after
another at the same budget, each scored on the whole validation split.

    python bench/budget_variants.py --budget 10m --corpus pydocs
        --variant 'LABEL=TRAIN ARGS' [--variant ...] [--variant-python 'LABEL=PYTHON' ...]

bench/peers.py without nanoGPT: the same `charlstm train CORPUS --time BUDGET --eval-chars
0 ARGS` runs in fresh folders (corpora as peers.py gets them), and the same
`--variant-python` to run a variant under another interpreter, such as an earlier
charlstm's venv. Unlike bench/settings.py the machine's speed enters (that is the point
of a budget), so run it alone on a quiet machine. The first variant is the reference.
Prints the table and appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from peers import checkout_of, load_corpus, parse_variants, run_charlstm, say  # noqa: E402
from runner import markdown_table  # noqa: E402

from charlstm.cli.input import parse_duration  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m", help="the --time of every run")
    parser.add_argument("--corpus", default="tinyshakespeare",
                        help="a known corpus name or a text file (default: tinyshakespeare)")
    parser.add_argument("--from", dest="source", metavar="PATH",
                        help="where `charlstm corpus get` takes a named corpus from")
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=ARGS")
    parser.add_argument("--variant-python", action="append", metavar="LABEL=PYTHON",
                        help="run the variant LABEL under this interpreter")
    parser.add_argument("--eval-chars", type=int, default=0, metavar="N",
                        help="validation characters each evaluation reads, the final one "
                             "too (default 0: the whole split; on a split of millions an "
                             "evaluation would take much of a short budget)")
    parser.add_argument("--label", help="the heading in RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the runs' scratch folder")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    seconds = parse_duration(args.budget)
    variants, pythons = parse_variants(parser, args.variant, args.variant_python)
    root = Path(tempfile.mkdtemp(prefix="charlstm-variants-"))
    rows, reference = [], None
    try:
        corpus = load_corpus(args.corpus, args.source, root / "corpora")
        for k, (label, extra) in enumerate(variants):
            say(f"{label} for {seconds:g} s ...")
            run = run_charlstm(corpus, seconds, root / f"run-{k}", extra, pythons.get(label),
                               args.eval_chars)
            say(f"{label}: {run.val_loss:.4f} nats after {run.last['step']:,} steps")
            reference = run.val_loss if reference is None else reference
            rows.append([label, f"`{shlex.join(extra)}`" if extra else "(none)",
                         f"{run.seconds:.1f} s", f"{run.last['step']:,}",
                         f"{run.val_loss:.4f}",
                         f"{run.val_loss - reference:+.4f}" if rows else "reference",
                         f"{run.model()}, {run.config['precision']}"])
    finally:
        if args.keep:
            say(f"scratch folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    header = ["variant", "train arguments", "wall clock", "steps", "val loss (nats)",
              "vs the first", "model"]
    where = "".join(f" {label} ran under `{python}`, charlstm at {checkout_of(python)}."
                    for label, python in pythons.items())
    over = (f"the first {args.eval_chars:,} characters of the validation split (the last "
            "10%)" if args.eval_chars else "the whole validation split (the last 10%)")
    intro = (f"`charlstm train {args.corpus} --time {args.budget} --eval-chars "
             f"{args.eval_chars} ARGS` for each variant, one after another; validation loss "
             f"in nats over {over}.{where}\n\n")
    table = markdown_table(header, rows)
    publish(args.label or f"Settings at a {args.budget} budget on {args.corpus}", table,
            not args.no_record, body=intro + table)


if __name__ == "__main__":
    main()
