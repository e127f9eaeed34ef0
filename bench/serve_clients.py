"""charlstm serve under concurrent clients: throughput, time to first text, correctness.

    python bench/serve_clients.py [--shape 2x512] [--clients 1,8] [--chars 2000] [--no-record]

Starts a real `charlstm serve` (a subprocess on a free port) on a random-init LSTM of the
given shape (speed does not depend on the weights), then for each client count streams
that many completions at once, each of --chars characters with its own seed, and
reports the total characters per second, the median and worst time to the first text,
and each client's characters per second. Every client's text must equal what its seed
gives when it runs alone (checked; a mismatch fails the benchmark). Prints the table and
appends it to bench/RESULTS.md.
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


def stream(server: Server, seed: int, chars: int, started: float) -> dict:
    """One streamed completion: its text, when its first text came and when it ended."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    connection.request("POST", "/v1/completions", json.dumps(
        {"model": server.model, "prompt": "The ", "max_tokens": chars, "seed": seed,
         "temperature": 0.8, "stream": True}), {"Content-Type": "application/json"})
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


def run_clients(server: Server, count: int, chars: int) -> list[dict]:
    results: list[dict] = [{}] * count
    started = time.perf_counter()

    def client(i: int) -> None:
        results[i] = stream(server, seed=i, chars=chars, started=started)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2x512", help="layers x hidden units")
    parser.add_argument("--clients", default="1,8", help="client counts, comma-separated")
    parser.add_argument("--chars", type=int, default=2000, help="characters per client")
    parser.add_argument("--no-record", action="store_true", help="only print")
    args = parser.parse_args()
    layers, hidden = (int(x) for x in args.shape.split("x"))
    counts = [int(c) for c in args.clients.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-serve-"))
    run = random_run(folder, layers, hidden)
    server = Server(str(run), "--max-tokens", str(args.chars), "--max-n", "1", cwd=folder)
    server.model = run.name
    try:
        alone = {seed: stream(server, seed, args.chars, time.perf_counter())["text"]
                 for seed in range(max(counts))}  # what each seed gives on its own
        rows = []
        for count in counts:
            results = run_clients(server, count, args.chars)
            for seed, result in enumerate(results):
                if result["text"] != alone[seed]:
                    sys.exit(f"client {seed} of {count} got other text than alone")
            total = sum(len(r["text"]) for r in results)
            wall = max(r["end"] for r in results)
            firsts = [r["first"] for r in results]
            rows.append([str(count), f"{total / wall:,.0f}",
                         f"{statistics.median(firsts) * 1000:,.0f}",
                         f"{max(firsts) * 1000:,.0f}",
                         f"{statistics.median(len(r['text']) / r['end'] for r in results):,.0f}",
                         "yes"])
    finally:
        server.stop()
    table = markdown_table(["clients", "total chars/s", "first text, median ms",
                            "first text, worst ms", "chars/s per client, median",
                            "texts as alone"], rows)
    publish(f"charlstm serve: concurrent streamed clients, LSTM {args.shape}, "
            f"{args.chars:,} characters each", table, record=not args.no_record)


if __name__ == "__main__":
    main()
