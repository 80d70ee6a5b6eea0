"""WSGI applications (PEP 3333), served through a pool of threads by a2wsgi's `WSGIMiddleware`, as uvicorn does."""

from __future__ import annotations

import inspect
from typing import Any

from tricorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Message, Scope

__all__ = ["WSGI_THREADS", "is_wsgi", "wsgi_to_asgi"]

# Threads that run the WSGI application, per worker (a2wsgi's and uvicorn's default).
WSGI_THREADS = 10


def is_wsgi(app: Any) -> bool:
    """Whether `app` is called with two arguments, `(environ, start_response)`, and not with one.

    Told apart this way from an ASGI 2 application, which is called with the scope alone
    (ASGI 3 applications, coroutine functions, are recognised before this is asked).
    """
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return False
    return _accepts(signature, 2) and not _accepts(signature, 1)


def _accepts(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def wsgi_to_asgi(app: Any) -> ASGI3Application:
    """Wrap the WSGI application `app` as an ASGI 3 application that runs it on `WSGI_THREADS` threads."""
    from a2wsgi import WSGIMiddleware

    middleware = WSGIMiddleware(app, workers=WSGI_THREADS)

    async def wsgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # a2wsgi calls `receive()` in a pool thread and runs the coroutine on the loop; the native
        # `receive` may only be called on the loop's thread, so the thread gets this coroutine function.
        async def receive_on_loop() -> Message:
            return await receive()

        await middleware(scope, receive_on_loop, send)  # type: ignore[arg-type]

    return wsgi_app
