"""A real `charlstm serve` in a subprocess on a free port of 127.0.0.1, for the tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m charlstm serve ARGS --port FREE`, started and waited for."""

    def __init__(self, *args: str, cwd: Path, env: dict | None = None, key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        full_env.pop("CHARLSTM_DEBUG", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "charlstm", "serve", *args, "--port", str(self.port)],
            cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("the server ended: " + self.process.stderr.read().decode())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the server did not start in 120 s")
                time.sleep(0.2)

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                raw: bytes | None = None) -> tuple[int, dict | str]:
        """(status, JSON body or text) of one request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if self.key and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def post(self, path: str, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def stop(self, signal_number: int | None = None) -> int:
        if self.process.poll() is None:
            if signal_number is None:
                self.process.terminate()
            else:
                self.process.send_signal(signal_number)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def stream_events(server: Server, body: dict) -> list:
    """The `data:` payloads of a streamed completion, in order ("[DONE]" as is)."""
    status, text = server.post("/v1/completions", {**body, "stream": True})
    assert status == 200, text
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
