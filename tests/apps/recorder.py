"""Records the target of every HTTP request it is handed, to prove what a server never passed on.

``GET /__seen`` answers the recorded targets (path and query) as a JSON list and is not recorded
itself. Every other request has its body read in full (so that a broken body reaches the server's
parser) and is answered ``200`` with the number of body bytes, or ``413`` style information is left
to the server. ``/slow-read?delay=S`` sleeps S seconds before reading the body; ``/big?size=N``
answers N bytes in 64 KiB pieces and records whether ``send()`` raised.
"""

import asyncio
import json
from urllib.parse import parse_qs

SEEN: list[str] = []
EVENTS: list[str] = []


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, body: bytes, status: int = 200, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive) -> tuple[int, bool]:
    """Bytes received and whether the request ended with http.disconnect."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return total, True
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return total, False


async def big(send, q, target) -> None:
    size = int(q.get("size", "1048576"))
    piece = b"x" * 65536
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
    sent = 0
    try:
        while sent < size:
            n = min(len(piece), size - sent)
            await send({"type": "http.response.body", "body": piece[:n], "more_body": sent + n < size})
            sent += n
    except Exception as exc:
        EVENTS.append(f"{target} send raised {type(exc).__name__}")
        return
    EVENTS.append(f"{target} sent {sent}")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    query = scope["query_string"].decode("latin-1")
    target = scope["path"] + ("?" + query if query else "")
    if scope["path"] == "/__seen":
        return await respond(
            send, json.dumps({"seen": SEEN, "events": EVENTS}).encode(), content_type=b"application/json"
        )
    SEEN.append(target)
    q = {k: v[0] for k, v in parse_qs(query).items()}
    if scope["path"] == "/big":
        return await big(send, q, target)
    if scope["path"] == "/slow-read":
        await asyncio.sleep(float(q.get("delay", "1")))
    total, disconnected = await read_body(receive)
    if disconnected:
        EVENTS.append(f"{target} disconnect after {total}")
        return
    EVENTS.append(f"{target} body {total}")
    await respond(send, f"ok {total}".encode())
