"""WebSocket test apps: a plain ASGI app routed by path, plus Starlette and FastAPI echo routes.

``app`` handles:

* ``lifespan``: startup puts ``greeting`` in the state (visible in the websocket scope's ``state``);
* ``http``: ``/results?key=K`` reads back RESULTS[K] (JSON, ``null`` if unset); any other path answers
  ``{"type": "http", ...}`` so a test can see an upgrade request handled as plain HTTP (``--ws none``);
* ``websocket``: behaviour selected by path (see ``WS_ROUTES``); ``/starlette/...`` and ``/fastapi/...`` are
  delegated to the framework apps below.

Results of server-side behaviour (disconnect codes, send outcomes, progress counters) are kept in RESULTS.
"""

import asyncio
import json
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.apps.basic import jsonable

RESULTS: dict = {}


def query(scope) -> dict:
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {k: v[-1] for k, v in qs.items()}


async def accept(send, **extra):
    await send({"type": "websocket.accept", **extra})


# -- websocket routes -----------------------------------------------------------------------------
async def ws_echo(scope, receive, send):
    """Echo text and bytes until the client goes; the disconnect message is kept under ?key=."""
    assert (await receive())["type"] == "websocket.connect"
    await accept(send)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            if "key" in query(scope):
                RESULTS[query(scope)["key"]] = jsonable(message)
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def ws_scope(scope, receive, send):
    """Accept and send the scope (and the first message) as JSON; then wait for the client to close."""
    first = await receive()
    await accept(send)
    data = {k: jsonable(v) for k, v in scope.items() if k not in ("state", "extensions")}
    data["state"] = jsonable(dict(scope.get("state") or {})) if "state" in scope else "<missing>"
    data["state_type"] = type(scope.get("state")).__name__
    data["extensions"] = jsonable(scope.get("extensions"))
    data["first_message"] = jsonable(first)
    data["types"] = {k: type(v).__name__ for k, v in scope.items()}
    data["header_types"] = sorted({type(x).__name__ for h in scope["headers"] for x in h})
    await send({"type": "websocket.send", "text": json.dumps(data)})
    await receive()  # until the client closes


async def ws_subprotocol(scope, receive, send):
    """Accept with the client's last offered subprotocol and extra response headers."""
    await receive()
    offered = scope.get("subprotocols") or []
    extra = {"headers": [(b"x-ws-extra", b"yes"), (b"set-cookie", b"ws=1")]}
    if offered:
        extra["subprotocol"] = offered[-1]
    await accept(send, **extra)
    await send({"type": "websocket.send", "text": json.dumps(offered)})
    await receive()  # until the client closes


async def ws_close(scope, receive, send):
    """Accept, then close with ?code= and ?reason=."""
    await receive()
    await accept(send)
    q = query(scope)
    await send({"type": "websocket.close", "code": int(q.get("code", 1000)), "reason": q.get("reason", "")})


async def ws_deny(scope, receive, send):
    """Close before accepting: the client gets HTTP 403."""
    await receive()
    await send({"type": "websocket.close"})


async def ws_http_deny(scope, receive, send):
    """The websocket.http.response extension: reject with a custom HTTP response."""
    await receive()
    body = b"teapot says no"
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 418,
            "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes"), (b"content-length", b"14")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body[:6], "more_body": True})
    await send({"type": "websocket.http.response.body", "body": body[6:]})


async def ws_noaccept(scope, receive, send):
    """Return without accepting: HTTP 500."""
    await receive()


async def ws_raise_before_accept(scope, receive, send):
    await receive()
    raise RuntimeError("boom before accept")


async def ws_raise_after_accept(scope, receive, send):
    """Accept, then raise: the connection is closed with 1011."""
    await receive()
    await accept(send)
    await send({"type": "websocket.send", "text": "accepted"})
    raise RuntimeError("boom after accept")


async def ws_send_after_close(scope, receive, send):
    """Wait for the client to go, then send: record what send() did (returned or which exception)."""
    key = query(scope)["key"]
    await receive()
    await accept(send)
    await send({"type": "websocket.send", "text": "ready"})
    message = await receive()
    RESULTS[key + ":disconnect"] = jsonable(message)
    await asyncio.sleep(0.1)
    outcomes = []
    for _ in range(3):
        try:
            await send({"type": "websocket.send", "text": "too late"})
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - recording which exception, whatever it is
            outcomes.append(f"{type(exc).__name__}:{isinstance(exc, OSError)}")
    RESULTS[key] = outcomes


async def ws_flood(scope, receive, send):
    """Send ?count= messages of ?size= bytes to a client that never reads; progress under ?key=."""
    q = query(scope)
    key, size, count = q["key"], int(q["size"]), int(q["count"])
    await receive()
    await accept(send)
    payload = b"x" * size  # one object, sent again and again: the app itself does not grow
    RESULTS[key] = 0
    try:
        for i in range(count):
            await send({"type": "websocket.send", "bytes": payload})
            RESULTS[key] = i + 1
    except Exception as exc:  # noqa: BLE001
        RESULTS[key + ":error"] = type(exc).__name__
    RESULTS[key + ":done"] = True


async def ws_slow_receiver(scope, receive, send):
    """Accept, wait ?delay= seconds before reading, then report every message received (up to ?n=)."""
    q = query(scope)
    await receive()
    await accept(send)
    await asyncio.sleep(float(q.get("delay", "1")))
    got = []
    for _ in range(int(q["n"])):
        message = await receive()
        if message["type"] != "websocket.receive":
            break
        got.append(message.get("text") if message.get("text") is not None else len(message["bytes"]))
    await send({"type": "websocket.send", "text": json.dumps(got)})
    await receive()


async def ws_wait(scope, receive, send):
    """Accept and wait for the disconnect; record it under ?key= (shutdown, abrupt loss, ping timeout)."""
    key = query(scope).get("key")
    await receive()
    await accept(send)
    await send({"type": "websocket.send", "text": "ready"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            if key:
                RESULTS[key] = jsonable(message)
            return
        await send({"type": "websocket.send", "text": message.get("text") or "bytes"})


async def ws_own_extension(scope, receive, send):
    """Accept with the app's own Sec-WebSocket-Extensions header, then send one message."""
    await receive()
    await accept(send, headers=[(b"sec-websocket-extensions", b"x-app-extension")])
    await send({"type": "websocket.send", "text": "app " * 100})
    await receive()  # until the client closes


WS_ROUTES = {
    "/echo": ws_echo,
    "/scope": ws_scope,
    "/subprotocol": ws_subprotocol,
    "/own-extension": ws_own_extension,
    "/close": ws_close,
    "/deny": ws_deny,
    "/http-deny": ws_http_deny,
    "/noaccept": ws_noaccept,
    "/raise-before-accept": ws_raise_before_accept,
    "/raise-after-accept": ws_raise_after_accept,
    "/send-after-close": ws_send_after_close,
    "/flood": ws_flood,
    "/slow-receiver": ws_slow_receiver,
    "/wait": ws_wait,
}


# -- frameworks -----------------------------------------------------------------------------------
async def starlette_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"starlette:{text}")
    except WebSocketDisconnect as exc:
        RESULTS["starlette:disconnect"] = exc.code


starlette_app = Starlette(routes=[WebSocketRoute("/starlette/echo", starlette_echo)])

fastapi_app = FastAPI()


@fastapi_app.websocket("/fastapi/echo/{name}")
async def fastapi_echo(websocket: FastAPIWebSocket, name: str):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"name": name, "echo": data, "framework": "fastapi"})
    except WebSocketDisconnect as exc:
        RESULTS["fastapi:disconnect"] = exc.code


# -- the plain ASGI app ---------------------------------------------------------------------------
async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["greeting"] = "hello"
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def http(scope, receive, send):
    if scope["path"] == "/results":
        body = json.dumps(RESULTS.get(query(scope).get("key"))).encode()
    else:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = json.dumps({"type": scope["type"], "path": scope["path"], "upgrade": headers.get("upgrade")}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "http":
        return await http(scope, receive, send)
    assert scope["type"] == "websocket", scope["type"]
    path, root_path = scope["path"], scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if path.startswith("/starlette/"):
        return await starlette_app(scope, receive, send)
    if path.startswith("/fastapi/"):
        return await fastapi_app(scope, receive, send)
    if path.startswith("/scope"):
        return await ws_scope(scope, receive, send)
    handler = WS_ROUTES.get(path)
    if handler is None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        return
    return await handler(scope, receive, send)
