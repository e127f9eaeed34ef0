"""`charlstm serve`: trained models over HTTP (an OpenAI-compatible API) and a playground."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CharlstmError, UsageError
from ..ranges import PORT
from ..serve.options import ServeOptions
from .app import DEVICE_OPTION, HELP, app, corpora_dir

DEFAULTS = ServeOptions()
INSTALL_HINT = ("charlstm serve needs FastAPI and uvicorn, which are not installed: "
                "pip install 'charlstm[serve]' (or, in a clone, pip install -e '.[serve]')")


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm serve checkpoints/shakespeare-lstm      # then open http://127.0.0.1:8000/\n\n"
    "  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' "
    "-d '{\"model\": \"shakespeare-lstm\", \"prompt\": \"ROMEO:\", \"max_tokens\": 200}'\n\n"
    "  CHARLSTM_API_KEY=s3cret charlstm serve RUN_A RUN_B --host 0.0.0.0\n\n"
    "See docs/serve.md for the endpoints, limits and a reverse proxy."))
def serve(
    runs: List[Path] = typer.Argument(..., metavar="RUN",
                                      help="Run folders or .pt files to serve; each is "
                                           "named after its run folder."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="The address to listen on; 0.0.0.0 for every interface."),
    port: int = typer.Option(8000, "--port", help="The TCP port to listen on."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CHARLSTM_API_KEY",
                                          show_default=False,
                                          help="Require the header Authorization: Bearer KEY on "
                                               "every API request."),
    max_tokens: int = typer.Option(DEFAULTS.max_tokens, "--max-tokens",
                                   help="The most characters one sample may ask for."),
    max_n: int = typer.Option(DEFAULTS.max_samples, "--max-n",
                              help="The most samples one request may ask for (n times "
                                   "the number of prompts)."),
    max_body: int = typer.Option(DEFAULTS.max_body_bytes, "--max-body",
                                 help="The largest request body, in bytes."),
    max_batch: int = typer.Option(DEFAULTS.max_batch, "--max-batch",
                                  help="The most samples stepped together as one batch on "
                                       "a model; 0 generates each request on its own, in "
                                       "turns."),
    max_queue: int = typer.Option(DEFAULTS.max_queue, "--max-queue",
                                  help="The most requests waiting for room in a full batch; "
                                       "more get 503 with Retry-After."),
    timeout: float = typer.Option(DEFAULTS.request_seconds, "--timeout",
                                  help="Seconds a completion may take, waiting included; "
                                       "then its choices end with finish_reason "
                                       "\"time_limit\"."),
    grace: float = typer.Option(DEFAULTS.grace_seconds, "--grace",
                                help="On SIGTERM or Ctrl-C, seconds running streams may go "
                                     "on before the server exits."),
    device: str = DEVICE_OPTION,
) -> None:
    """Serve models over HTTP: an OpenAI-compatible API and a playground page."""
    if port not in PORT:
        raise UsageError(PORT.refusal("--port", port))
    options = ServeOptions(max_tokens=max_tokens, max_samples=max_n,
                           max_body_bytes=max_body, api_key=api_key, max_batch=max_batch,
                           max_queue=max_queue, request_seconds=timeout,
                           grace_seconds=grace)  # checked before fastapi is imported
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise CharlstmError(INSTALL_HINT) from None
    from ..serve import create_app, load_models

    models = load_models(runs, device)
    for served in models.values():  # where their training texts' copy indexes are cached
        served.lm.corpora_dir = corpora_dir()
    application = create_app(models, options)
    listening = _listen(host, port)  # bound here: a port in use is one line, exit 1
    if not api_key and not _is_loopback(host):
        print(f"charlstm: warning: listening on {host} without --api-key: anyone who can "
              "reach this machine can use the models", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"charlstm: serving {', '.join(models)} at http://{shown}:{port}/ "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=grace))
    server.run(sockets=[listening])
    raise typer.Exit(130)  # only Ctrl-C or a signal ends a server


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, for uvicorn to listen on."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, kind, proto)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError as exc:
        raise CharlstmError(f"could not listen on {host}:{port}: "
                            f"{exc.strerror or exc}") from None
    return listening


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
