"""ASGI apps used by the benchmark harness (bench/run.py).

Every server (tricorn, uvicorn, granian) loads the very same module, e.g.
``bench.apps:hello``.  All apps are plain ASGI except ``fastapi_app`` and ``files``
(Starlette, built on first access so that the others import nothing but the standard
library); ``ws_echo`` is a WebSocket echo (bench/ws_load.py).
"""

import json as _json
import os as _os

# --------------------------------------------------------------------------
# hello world: GET / -> "Hello, world!" (text/plain)
# --------------------------------------------------------------------------

_HELLO_BODY = b"Hello, world!"
_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(_HELLO_BODY)).encode()),
    ],
}


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    await send(_HELLO_START)
    await send({"type": "http.response.body", "body": _HELLO_BODY})


# --------------------------------------------------------------------------
# small JSON: {"message": "Hello, world!"}, serialised per request
# --------------------------------------------------------------------------


async def json(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    body = _json.dumps({"message": "Hello, world!"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------
# POST echo: reads the whole request body and sends it back
# --------------------------------------------------------------------------


async def echo(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------
# streamed 1 MiB: 16 chunks of 64 KiB via more_body (no content-length,
# so HTTP/1.1 servers use chunked transfer encoding)
# --------------------------------------------------------------------------

_CHUNK = b"x" * (64 * 1024)
_N_CHUNKS = 16


async def stream(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    for i in range(_N_CHUNKS):
        await send(
            {
                "type": "http.response.body",
                "body": _CHUNK,
                "more_body": i < _N_CHUNKS - 1,
            }
        )


# --------------------------------------------------------------------------
# FastAPI and Starlette apps, built on first access (PEP 562 module __getattr__;
# every server resolves `bench.apps:NAME` with getattr): importing FastAPI costs
# ~0.6 s and ~20 MiB, which the plain ASGI apps must not pay (the `startup` row
# measures time to first response and idle RSS with `hello`).  Without the
# package installed the app is None (reported by the harness at startup).
# --------------------------------------------------------------------------


def _make_fastapi_app():
    """FastAPI: GET /items/{item_id}?q=... -> JSON."""
    try:
        from fastapi import FastAPI
    except ImportError:  # pragma: no cover - reported by the harness at startup
        return None
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    return app


def _make_files_app():
    """Starlette FileResponse for every file in $BENCH_FILES_DIR (bench/run.py writes 50k and
    10m there), GET /<name>.  FileResponse sends http.response.pathsend when the server offers
    it in scope["extensions"] (tricorn, granian), else it streams the file from a worker thread
    (uvicorn)."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import FileResponse
        from starlette.routing import Route
    except ImportError:  # pragma: no cover - reported by the harness at startup
        return None
    files_dir = _os.environ.get("BENCH_FILES_DIR", "")

    def file_route(name: str) -> Route:
        path = _os.path.join(files_dir, name)

        async def endpoint(request):
            return FileResponse(path, media_type="application/octet-stream")

        return Route(f"/{name}", endpoint)

    return Starlette(routes=[file_route(n) for n in sorted(_os.listdir(files_dir))] if files_dir else [])


_LAZY_APPS = {"fastapi_app": _make_fastapi_app, "files": _make_files_app}


def __getattr__(name: str):
    """`fastapi_app` and `files`: built on first access, then kept as module attributes."""
    try:
        make = _LAZY_APPS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    app = globals()[name] = make()
    return app


# --------------------------------------------------------------------------
# WebSocket echo: accept, then send every text / bytes message straight back
# until the client disconnects (bench/ws_load.py drives it)
# --------------------------------------------------------------------------


async def ws_echo(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] != "websocket":  # plain HTTP: 404
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        elif message["type"] == "websocket.disconnect":
            return


# --------------------------------------------------------------------------
# soak (bench/soak.py): GET / hello, POST /echo echo, GET /stream 8 chunks of
# 1 KiB, and a WebSocket echo on any path
# --------------------------------------------------------------------------

_SOAK_CHUNK = b"s" * 1024


async def _small_stream(send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(8):
        await send({"type": "http.response.body", "body": _SOAK_CHUNK, "more_body": i < 7})


async def soak(scope, receive, send):
    if scope["type"] != "http":
        return await ws_echo(scope, receive, send)
    if scope["path"] == "/echo":
        return await echo(scope, receive, send)
    if scope["path"] == "/stream":
        return await _small_stream(send)
    return await hello(scope, receive, send)
