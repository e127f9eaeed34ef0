"""charlstm serve's resident memory under many mixed requests: does it stay flat?

    python bench/serve_memory.py [--shape 1x512] [--requests 10000] [--warmup 500]
                                 [--clients 8] [--limit-mb 50]

Starts a real `charlstm serve` (a subprocess on a free port of 127.0.0.1) on a random-init
LSTM of the given shape, sends --warmup mixed requests, reads the server's resident
memory (VmRSS), sends --requests more from --clients threads, and reads it again. The
mix: completions streamed and not, of different lengths, n, stop strings and top_p,
seeded or not; streams the client hangs up on; scores of a text and of lines; bad
requests. Prints the growth and exits 1 when it passes --limit-mb (issue 30: 10,000
requests after warm-up grow it by at most 50 MB). No timing enters, so it is valid on a
loaded machine; the result is appended to bench/RESULTS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402
from serve_clients import random_run  # noqa: E402
from serving import Server  # noqa: E402


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc: Linux only")


PROMPTS = ("The ", "a", "", "def f(x):\n")


def one_request(server: Server, model: str, rng: random.Random,
                prompts: tuple[str, ...] = PROMPTS) -> None:
    """One request of the mix, its answer read (or hung up on)."""
    kind = rng.random()
    if kind < 0.1:
        body = {"model": model, "text": "the quick brown fox " * rng.randint(1, 50)}
        path = "/v1/score"
    elif kind < 0.15:
        body, path = {"model": model, "lines": ["a line", "another one"] * 5}, "/v1/score"
    elif kind < 0.2:
        body, path = {"model": model, "prompt": "x", "temperature": -1}, "/v1/completions"
    else:
        body = {"model": model, "prompt": rng.choice(prompts),
                "max_tokens": rng.choice([1, 20, 100, 300]), "n": rng.choice([1, 1, 1, 2, 4]),
                "temperature": rng.choice([0, 0.7, 1.0]), "stream": rng.random() < 0.5}
        if rng.random() < 0.3:
            body["seed"] = rng.randint(0, 1000)
        if rng.random() < 0.2:
            body["stop"] = ["e ", "\n"]
        if rng.random() < 0.1:
            body["top_p"] = 0.9
        path = "/v1/completions"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if body.get("stream") and rng.random() < 0.2:
        response.read(rng.randint(1, 100))  # and hang up
        connection.sock.shutdown(2)
    else:
        response.read()
    connection.close()


def send(server: Server, model: str, count: int, clients: int, seed: int,
         prompts: tuple[str, ...] = PROMPTS) -> None:
    """`count` requests of the mix from `clients` threads at once."""
    left = iter(range(count))
    lock = threading.Lock()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while True:
            with lock:
                if next(left, None) is None:
                    return
            one_request(server, model, rng, prompts)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x512", help="layers x hidden units")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--limit-mb", type=float, default=50.0)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    layers, hidden = (int(x) for x in args.shape.split("x"))
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-memory-"))
    run = random_run(folder, layers, hidden)
    server = Server(str(run), "--max-n", "4", cwd=folder)
    try:
        started = time.perf_counter()
        send(server, run.name, args.warmup, args.clients, seed=1)
        before = resident_mb(server.process.pid)
        send(server, run.name, args.requests, args.clients, seed=2)
        after = resident_mb(server.process.pid)
    finally:
        server.stop()
    growth = after - before
    table = markdown_table(
        ["model", "resident after warm-up", "after the requests", "growth", "limit",
         "wall clock"],
        [[f"LSTM {args.shape}", f"{before:,.1f} MB ({args.warmup:,} requests)",
          f"{after:,.1f} MB ({args.requests:,} more, {args.clients} clients)",
          f"{growth:+,.1f} MB", f"{args.limit_mb:g} MB",
          f"{time.perf_counter() - started:,.0f} s"]])
    publish("charlstm serve's resident memory under mixed requests", table,
            not args.no_record)
    if growth > args.limit_mb:
        sys.exit(f"resident memory grew by {growth:,.1f} MB, more than {args.limit_mb} MB")


if __name__ == "__main__":
    main()
