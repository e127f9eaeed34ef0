"""What `charlstm export` makes of the default model: file sizes, the validation loss of
quantized weights, and the speed of the exports against charlstm's own sampler.

    python bench/export.py [--run RUN] [--steps 2000] [--chars 2000] [--threads N]
                           [--no-browser] [--no-record] [-- train arguments]

The model is the default run (`charlstm train`, for --steps steps; anything after `--`
goes to `charlstm train`), or --run. For it, this records:

- the size of best.pt and of each export: safetensors, onnx, and the web page at full
  precision, float16 and int8;
- the validation loss (nats and bits per character, the whole validation split, read as
  training evaluates it) of the weights as each page holds them, dequantized;
- the characters per second of each web page in headless chromium (the page's own
  streaming loop, --chars characters at temperature 0.8, as a user sees it);
- the characters per second at batch 1 of onnxruntime stepping the ONNX export one
  character at a time with a NumPy picker (as docs/export.md's snippet does) against
  charlstm's `generate()`, both at temperature 0.8 with --threads threads.

Timings want a quiet machine; the sizes and losses do not. Prints the table and appends it
to bench/RESULTS.md (--no-record only prints).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table, train  # noqa: E402

import charlstm  # noqa: E402
from charlstm import checkpoint  # noqa: E402
from charlstm.data.corpus import encode  # noqa: E402
from charlstm.export import web  # noqa: E402
from charlstm.export.exporting import export  # noqa: E402
from charlstm.settings import TrainConfig, validation_span  # noqa: E402
from charlstm.training.evaluation import evaluate  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PRIME = "def "
TEMPERATURE = 0.8


def validation_loss(run: Path, state_dict: dict, corpora_dir: Path) -> float:
    """The whole validation split's mean loss (nats/char) with these weights."""
    record = checkpoint.read(checkpoint.find(run))
    lm = charlstm.load(run, device="cpu")
    lm.model.load_state_dict(state_dict)
    config = TrainConfig.from_dict({**record.train_config, "eval_chars": 0})
    corpus = encode(record.corpus["source"], corpora_dir, val_frac=config.val_frac)
    start, end = validation_span(len(corpus.tokens), config)
    return evaluate(lm.model, corpus.tokens, start, end, config.seq_len,
                    torch.device("cpu"), "fp32")


def charlstm_speed(run: Path, chars: int) -> float:
    lm = charlstm.load(run, device="cpu")
    lm.sample(PRIME, length=50, temperature=TEMPERATURE, seed=0)  # warm-up, step choice
    started = time.perf_counter()
    lm.sample(PRIME, length=chars, temperature=TEMPERATURE, seed=1)
    return chars / (time.perf_counter() - started)


def onnxruntime_speed(path: Path, chars: int, threads: int) -> float:
    """Characters per second of the ONNX graph stepped one character at a time."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    config, vocab = json.loads(meta["model_config"]), json.loads(meta["vocab"])["chars"]
    names = [i.name for i in session.get_inputs()][1:]
    rng = np.random.default_rng(1)

    def sample(length: int) -> None:
        shape = (config["num_layers"], 1, config["hidden_size"])
        state = [np.zeros(shape, np.float32) for _ in names]
        ids = [vocab.index(ch) for ch in PRIME]
        for _ in range(length):
            logits, *state = session.run(None, {"ids": np.array([ids], np.int64),
                                                **dict(zip(names, state))})
            scaled = logits[0, -1] / TEMPERATURE
            probs = np.exp(scaled - scaled.max())
            ids = [int(rng.choice(len(vocab), p=probs / probs.sum()))]

    sample(50)  # warm-up
    started = time.perf_counter()
    sample(chars)
    return chars / (time.perf_counter() - started)


def browser_speeds(pages: dict[str, Path], chars: int) -> dict[str, float]:
    """Characters per second of each page's own loop in headless chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ["SE_OFFLINE"] = "true"
    profile = tempfile.mkdtemp(prefix="charlstm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_script_timeout(3600)
    speeds = {}
    try:
        for label, page in pages.items():
            driver.get(page.resolve().as_uri())
            WebDriverWait(driver, 120).until(
                lambda d: d.execute_script("return !!window.charlstmPage"))
            run = ("const done = arguments[arguments.length - 1];"
                   "window.charlstmPage.run(arguments[0]).then(r => done(r.seconds));")
            driver.execute_async_script(run, dict(prime=PRIME, temperature=TEMPERATURE,
                                                  seed=0, length=50))  # warm-up (JIT)
            seconds = driver.execute_async_script(run, dict(
                prime=PRIME, temperature=TEMPERATURE, seed=1, length=chars))
            speeds[label] = chars / seconds
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train the "
                                                 "default model)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="training steps of the default model (default 2000)")
    parser.add_argument("--chars", type=int, default=2000,
                        help="characters generated per speed measure (default 2000)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads for torch and onnxruntime")
    parser.add_argument("--no-browser", action="store_true", help="skip chromium")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="charlstm train arguments for the model, after --")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-"))
    run = args.run
    if run is None:
        extra = [a for a in args.train_args if a != "--"]
        train(["--max-steps", str(args.steps), "--sample-length", "0", *extra], folder)
        run = folder / "run"
    corpora_dir = folder / "corpora" if args.run is None else Path(
        os.environ.get("CHARLSTM_CORPORA", "corpora"))
    source = checkpoint.find(run)
    files = {"best.pt": source,
             "safetensors": export(run, "safetensors", folder / "model.safetensors"),
             "onnx": export(run, "onnx", folder / "model.onnx")}
    pages = {f"web {q or 'float32'}": export(run, "web", folder / f"page-{q}.html",
                                             quantize=q) for q in (None, "float16", "int8")}
    files.update(pages)
    weights = charlstm.load(run, device="cpu").model.state_dict()
    losses = {label: validation_loss(run, web.dequantized(weights, q), corpora_dir)
              for label, q in (("web float32", None), ("web float16", "float16"),
                               ("web int8", "int8"))}
    browser = ({} if args.no_browser or not CHROMIUM.exists()
               else browser_speeds(pages, args.chars))
    rows = []
    for label, path in files.items():
        loss = losses.get(label)
        rows.append([label, f"{path.stat().st_size:,}",
                     "" if loss is None else f"{loss:.5f} ({loss / math.log(2):.4f})",
                     f"{browser[label]:,.0f}" if label in browser else ""])
    table = markdown_table(["file", "bytes", "val loss nats (bits/char)",
                            "chromium chars/s"], rows)
    ours, theirs = charlstm_speed(run, args.chars), onnxruntime_speed(
        files["onnx"], args.chars, args.threads)
    table += ("\n\nBatch 1, temperature 0.8, " f"{args.threads} thread(s): charlstm "
              f"generate() {ours:,.0f} chars/s, onnxruntime {theirs:,.0f} chars/s "
              f"({theirs / ours:.2f}x).")
    model = charlstm.load(run).config
    publish(f"Exports of the {model.model} {model.num_layers}x{model.hidden_size} model",
            table, not args.no_record)


if __name__ == "__main__":
    main()
