"""The ASGI middleware every request passes first: the API key, then the body size.

The key is compared in constant time (hmac.compare_digest) with the one in
`Authorization: Bearer KEY`, as OpenAI clients send it; the playground page itself
(GET /, static, holding no model data) and GET /health (for load balancers and
orchestrators, which send no key) are served without one, and sends the key the
user types with each of its requests. The body is read here, up to the limit: a larger
one (by its Content-Length, or as it arrives) gets a 413 before any parsing; the body
read is then handed on, followed by the client's later messages (a disconnect). Bodies
are JSON whatever their Content-Type says (`curl -d` says form-encoded), so a POST's is
declared JSON to FastAPI.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = {("GET", "/"), ("HEAD", "/"), ("GET", "/health"), ("HEAD", "/health")}


class Gate:
    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.expected is not None and (scope["method"], scope["path"]) not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await _refuse(send, 401, "a valid API key is needed: send the header "
                                     "'Authorization: Bearer KEY'", "invalid_api_key")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await _refuse(send, 413, self._too_large(), "body_too_large")
        body, more, later = b"", True, []
        while more and scope["method"] in ("POST", "PUT", "PATCH"):
            message = await receive()
            if message["type"] != "http.request":
                later.append(message)  # a disconnect: handed on after the body
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _refuse(send, 413, self._too_large(), "body_too_large")
        if scope["method"] == "POST":
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                          if k != b"content-type"]
                     + [(b"content-type", b"application/json")]}
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if later:
                return later.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return (f"the request body is larger than {self.max_body_bytes:,} bytes "
                "(charlstm serve --max-body raises the limit)")


async def _refuse(send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
