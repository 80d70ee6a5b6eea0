"""The basic app, plus `/pid` (which process serves: for worker tests), `/block` (blocks the event loop) and
`/loop` (the event loop's class); `asgi2_app` is an ASGI 2 application."""

import asyncio
import os
import time
from urllib.parse import parse_qs

from tests.apps import basic


async def app(scope, receive, send):
    path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
    if scope["type"] == "http" and path == "/pid":
        return await basic.respond(send, str(os.getpid()))
    if scope["type"] == "http" and path == "/block":
        seconds = float(parse_qs(scope["query_string"].decode())["seconds"][0])
        time.sleep(seconds)  # on purpose: the worker stops answering its arbiter
        return await basic.respond(send, b"unblocked")
    if scope["type"] == "http" and path == "/loop":
        loop = asyncio.get_running_loop()
        return await basic.respond(send, f"{type(loop).__module__}.{type(loop).__name__}")
    return await basic.app(scope, receive, send)


def asgi2_app(scope):
    """ASGI 2: called with the scope, returns the coroutine function that serves it."""

    async def instance(receive, send):
        if scope["type"] == "http":
            await basic.respond_json(send, {"asgi": scope["asgi"]})

    return instance
