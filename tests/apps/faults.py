"""ASGI app for the fault tests (tests/test_faults.py), selected by path.

- ``/leak?key=K``: starts a background task that never ends (and is never awaited), answers at
  once.
- ``/endless?key=K``: a chunked response that never ends on its own; it stops when the client
  disconnects (``send()`` raises, or ``receive()`` gives ``http.disconnect``), or after 20 s.
- ``/upload?key=K``: reads the request body, counting the bytes, until it ends or the client
  disconnects.
- ``/results?key=K``: what the routes above recorded under K, as JSON.
- anything else: ``ok``.
"""

import asyncio
import json
from urllib.parse import parse_qs

RESULTS: dict = {}
LEAKED: set = set()


async def respond(send, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


async def forever() -> None:
    await asyncio.Event().wait()


async def leak(receive, send, key):
    task = asyncio.get_running_loop().create_task(forever())
    LEAKED.add(task)
    RESULTS[key] = len(LEAKED)
    await respond(send, b"leaked")


async def endless(receive, send, key):
    RESULTS[key] = "started"
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.get_running_loop().create_task(watch())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    chunk = b"x" * 16384
    deadline = asyncio.get_running_loop().time() + 20
    try:
        while not disconnected.is_set():
            if asyncio.get_running_loop().time() > deadline:
                RESULTS[key] = "timeout"
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            RESULTS[key] = "sending"
            await asyncio.sleep(0)
        RESULTS[key] = "disconnected"
    except OSError:
        # ASGI: send() on a closed connection may raise an OSError subclass (uvicorn's ClientDisconnected).
        RESULTS[key] = "disconnected"
    finally:
        watcher.cancel()


async def upload(receive, send, key):
    received = 0
    RESULTS[key] = "reading"
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            RESULTS[key] = f"disconnected after {received}"
            return
        received += len(message.get("body", b""))
        RESULTS[key + ":bytes"] = received
        if not message.get("more_body", False):
            break
    RESULTS[key] = f"complete {received}"
    await respond(send, str(received).encode())


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    key = query.get("key", "")
    if scope["path"] == "/leak":
        return await leak(receive, send, key)
    if scope["path"] == "/endless":
        return await endless(receive, send, key)
    if scope["path"] == "/upload":
        return await upload(receive, send, key)
    if scope["path"] == "/results":
        return await respond(send, json.dumps(RESULTS.get(key)).encode())
    await respond(send, b"ok")
