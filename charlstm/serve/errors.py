"""Every 4xx as OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}.

Handlers turn FastAPI's validation errors (422 by default) into 400s that name the field
(and for a number out of range, its range: requests.RANGES), Starlette's 404/405 into the
same shape, the library's UsageError (a prompt with characters the model never saw,
options out of range) into a 400 with its message, and anything unexpected into a
one-line 500: never a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CharlstmError
from .requests import CHECKED_BY_THE_LIBRARY, RANGES

log = logging.getLogger("charlstm.serve")

TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
         404: "invalid_request_error", 405: "invalid_request_error",
         413: "invalid_request_error", 500: "server_error", 503: "server_error",
         504: "server_error"}


class APIError(Exception):
    """A request the server refuses, with its status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers  # e.g. Retry-After with a 503


def error_response(status: int, message: str, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers, content={"error": {
        "message": message, "type": TYPES.get(status, "invalid_request_error"),
        "param": param, "code": code}})


# the library's names of settings that a request gives under another (OpenAI's) name
FIELD_OF = {"num_samples": "n", "length": "max_tokens", "min_length": "novelty_min"}


def _validation_message(error: dict) -> tuple[str, str | None]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(location) or None
    if error.get("type") == "json_invalid":
        return f"the body is not valid JSON: {error.get('ctx', {}).get('error', '')}", None
    if error.get("type") == "missing":
        return f"'{field}' is required", field
    given = error.get("input")
    allowed = RANGES.get(field) or CHECKED_BY_THE_LIBRARY.get(field)
    if (allowed and isinstance(given, (int, float)) and not isinstance(given, bool)
            and given not in allowed):  # NaN too, and an infinity
        return allowed.refusal(f"'{field}'", given), field
    what = error.get("msg", "invalid value")
    return (f"'{field}': {what}" if field else f"the body: {what}"), field


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        message, param = _validation_message(errors[0]) if errors else ("invalid request", None)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"
                   }.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message)

    @app.exception_handler(CharlstmError)
    async def refused(request: Request, exc: CharlstmError):
        # the library names settings as the Python API does; here they are the fields
        named = [FIELD_OF.get(name, name) for name in exc.settings]
        message = exc.spelled(lambda name: f"'{FIELD_OF.get(name, name)}'")
        return error_response(400 if exc.exit_code == 2 else 500, message,
                              named[0] if named else None)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return error_response(500, f"internal error: {type(exc).__name__}")
