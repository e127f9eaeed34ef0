"""charlstm serve under concurrent clients: throughput, time to first text, correctness.

    python bench/serve_clients.py [--shape 2x512] [--clients 1,8,32] [--chars 2000]
                                  [--no-record]

Starts a real `charlstm serve` (a subprocess on a free port) on a random-init LSTM of the
given shape (speed does not depend on the weights), then for each client count streams
that many completions at once, each of --chars characters, unseeded (as most clients
ask), and reports the total characters per second, its ratio to one client's, the
median and worst time to the first text, and each client's characters per second. A
second server with `--max-batch 0` (each request on its own, in turns: serving as it was
before continuous batching) gives the one-client baseline. Then the largest count runs
once more with a seed per client, and every client's text must equal what its seed
gives when it runs alone (a mismatch fails the benchmark). Prints the table and the
targets of issue 30 (8 clients >= 3.5x one client, 32 >= 5x, the first text's median at
8 clients <= 150 ms, one client >= 0.95x the unbatched one) and appends the table to
bench/RESULTS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402
from serving import Server  # noqa: E402

from charlstm import checkpoint  # noqa: E402
from charlstm.model.charrnn import CharRNN  # noqa: E402
from charlstm.settings import ModelConfig  # noqa: E402
from charlstm.data.vocab import Vocabulary  # noqa: E402


def random_run(folder: Path, layers: int, hidden: int) -> Path:
    """A run folder whose best.pt holds a random-init LSTM over printable ASCII."""
    vocab = Vocabulary.from_text("".join(chr(c) for c in range(32, 127)) + "\n")
    config = ModelConfig(vocab_size=len(vocab), num_layers=layers, hidden_size=hidden,
                         embed_size=64, dropout=0.0)
    torch.manual_seed(0)
    model = CharRNN(config)
    run = folder / f"random-lstm{layers}x{hidden}"
    run.mkdir(parents=True)
    checkpoint.save({"model_config": config.to_dict(), "vocab": vocab.to_dict(),
                     "model": model.state_dict()}, run / "best.pt")
    return run


def stream(server: Server, seed: int | None, chars: int, started: float) -> dict:
    """One streamed completion: its text, when its first text came and when it ended."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    body = {"model": server.model, "prompt": "The ", "max_tokens": chars,
            "temperature": 0.8, "stream": True}
    if seed is not None:
        body["seed"] = seed
    connection.request("POST", "/v1/completions", json.dumps(body),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    text, first, buffer = [], None, b""
    while True:
        block = response.read1(65536)
        if not block:
            break
        buffer += block
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            payload = event[len(b"data: "):]
            if payload != b"[DONE]":
                piece = json.loads(payload)["choices"][0]["text"]
                if piece and first is None:
                    first = time.perf_counter() - started
                text.append(piece)
    connection.close()
    return {"text": "".join(text), "first": first, "end": time.perf_counter() - started}


def run_clients(server: Server, count: int, chars: int, seeded: bool) -> list[dict]:
    results: list[dict] = [{}] * count
    started = time.perf_counter()

    def client(i: int) -> None:
        results[i] = stream(server, seed=i if seeded else None, chars=chars,
                            started=started)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def measured(results: list[dict]) -> dict:
    total = sum(len(r["text"]) for r in results)
    firsts = [r["first"] for r in results]
    return {"chars_per_second": total / max(r["end"] for r in results),
            "first_median": statistics.median(firsts), "first_worst": max(firsts),
            "per_client": statistics.median(len(r["text"]) / r["end"] for r in results)}


def serve(run: Path, folder: Path, chars: int, *flags: str) -> Server:
    server = Server(str(run), "--max-tokens", str(chars), "--max-n", "1", *flags, cwd=folder)
    server.model = run.name
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2x512", help="layers x hidden units")
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated")
    parser.add_argument("--chars", type=int, default=2000, help="characters per client")
    parser.add_argument("--no-record", action="store_true", help="only print")
    args = parser.parse_args()
    layers, hidden = (int(x) for x in args.shape.split("x"))
    counts = sorted({1, *(int(c) for c in args.clients.split(","))})
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-serve-"))
    run = random_run(folder, layers, hidden)
    unbatched = serve(run, folder, args.chars, "--max-batch", "0")
    try:
        run_clients(unbatched, 1, args.chars, seeded=False)  # warm-up
        before = measured(run_clients(unbatched, 1, args.chars, seeded=False))
    finally:
        unbatched.stop()
    server = serve(run, folder, args.chars, "--max-batch", str(max(64, max(counts))))
    try:
        run_clients(server, 1, args.chars, seeded=False)  # warm-up
        results = {count: measured(run_clients(server, count, args.chars, seeded=False))
                   for count in counts}
        alone = {seed: stream(server, seed, args.chars, time.perf_counter())["text"]
                 for seed in range(max(counts))}  # what each seed gives on its own
        together = run_clients(server, max(counts), args.chars, seeded=True)
        same = all(r["text"] == alone[seed] for seed, r in enumerate(together))
    finally:
        server.stop()
    if not same:
        sys.exit(f"a seeded client of {max(counts)} got other text than alone")
    one = results[1]["chars_per_second"]
    rows = [["1, unbatched (--max-batch 0)", f"{before['chars_per_second']:,.0f}", "",
             f"{before['first_median'] * 1000:,.0f}", f"{before['first_worst'] * 1000:,.0f}",
             f"{before['per_client']:,.0f}"]]
    rows += [[str(count), f"{r['chars_per_second']:,.0f}", f"{r['chars_per_second'] / one:.2f}",
              f"{r['first_median'] * 1000:,.0f}", f"{r['first_worst'] * 1000:,.0f}",
              f"{r['per_client']:,.0f}"] for count, r in results.items()]
    table = markdown_table(["clients", "total chars/s", "x one client",
                            "first text, median ms", "first text, worst ms",
                            "chars/s per client, median"], rows)
    targets = [f"one client {one / before['chars_per_second']:.2f}x the unbatched (>= 0.95)"]
    if 8 in results:
        targets += [f"8 clients {results[8]['chars_per_second'] / one:.2f}x (>= 3.5)",
                    f"first text at 8 clients {results[8]['first_median'] * 1000:.0f} ms "
                    "median (<= 150)"]
    if 32 in results:
        targets.append(f"32 clients {results[32]['chars_per_second'] / one:.2f}x (>= 5)")
    publish(f"charlstm serve: concurrent streamed clients, LSTM {args.shape}, "
            f"{args.chars:,} characters each", table + "\n\nTargets: " + "; ".join(targets)
            + f"; {max(counts)} seeded clients at once got their texts alone: yes",
            record=not args.no_record)


if __name__ == "__main__":
    main()
