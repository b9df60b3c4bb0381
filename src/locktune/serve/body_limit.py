"""Request bodies counted as they arrive, and cut with a 413 once past the limit.

A Content-Length over the limit is refused from the header, before any of the body is read.  But a chunked
upload has no Content-Length, and a client may send a small one and then more: the old header-only check
let a 1.5 GB chunked body be spooled to disk in full before the upload's own size check saw it.  So the
app's `receive` is wrapped: it counts bytes, and the first message past the limit raises inside whatever is
reading (Starlette's multipart parser closes, and so deletes, the temporary files it had started), the
app's own answer is dropped, and the client gets the 413.  At most `limit` bytes of a request reach memory
or disk.

Before answering, the rest of the body is read and thrown away, up to DRAIN_BYTES more and DRAIN_S seconds:
an HTTP/1.1 client reads the answer only once it has sent its body, and a server that closes a connection
with unread bytes in it makes the kernel reset it, so the client sees a dropped connection instead of the
413 (the soak test saw exactly that).  A body that goes on past the drain is cut with the connection.

A plain ASGI middleware, not the decorator form: that one costs every request a task and a stream copy.
"""

from __future__ import annotations

import json

import anyio

DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_S = 5.0


class BodyTooLarge(Exception):
    """Raised inside the app's body reader once a request passes the limit."""


class CapBody:
    """Refuse request bodies over `limit` bytes with a JSON 413, whether or not they declare a length."""

    def __init__(self, app, limit: int, upload_limit_bytes: int):
        self.app = app
        self.limit = limit  # the upload limit plus room for the form's other fields and multipart framing
        self.upload_limit_bytes = upload_limit_bytes  # what the message quotes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            if int(length) <= DRAIN_BYTES:  # a body that ends within the drain: let the client finish sending
                await _drain(receive)
            return await self._refuse(send, f"request is {int(length) / 1e6:.1f} MB")
        seen = 0
        cut = False
        started = False

        async def counted_receive():
            nonlocal seen, cut
            if cut:  # the app read again after the cut: the request is over for it
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    cut = True
                    raise BodyTooLarge(seen)
            return message

        async def guarded_send(message):
            nonlocal started
            if cut:  # the app's answer to a body it never got in full (a 400 from the parser, say)
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await _drain(receive)
            await self._refuse(send, f"request passed {self.limit / 1e6:.1f} MB and was cut there")

    async def _refuse(self, send, what: str) -> None:
        body = json.dumps({"error": f"{what}; images are limited to "
                                    f"{self.upload_limit_bytes // (1024 * 1024)} MB"}).encode()
        # Connection: close, since the rest of the body is never read and the connection cannot be reused.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive) -> int:
    """Read and discard what is left of the request body, up to DRAIN_BYTES and DRAIN_S -> bytes read."""
    drained = 0
    with anyio.move_on_after(DRAIN_S):
        while drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
    return drained
