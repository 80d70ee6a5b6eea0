"""The basic app, plus `/pid` (which process serves: for worker tests) and `/block` (blocks the event loop)."""

import os
import time
from urllib.parse import parse_qs

from tests.apps import basic


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/pid":
        return await basic.respond(send, str(os.getpid()))
    if scope["type"] == "http" and scope["path"] == "/block":
        seconds = float(parse_qs(scope["query_string"].decode())["seconds"][0])
        time.sleep(seconds)  # on purpose: the worker stops answering its arbiter
        return await basic.respond(send, b"unblocked")
    return await basic.app(scope, receive, send)
