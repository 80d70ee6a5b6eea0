"""Adapter that presents an ASGI 2 (double-callable) application as ASGI 3."""

from __future__ import annotations

from tricorn._types import ASGI2Application, ASGIReceiveCallable, ASGISendCallable, Scope


class ASGI2Middleware:
    """Wrap an ASGI 2 application `app(scope)(receive, send)` as `app(scope, receive, send)`."""

    def __init__(self, app: ASGI2Application) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # The native server builds ASGI 3 scopes; an ASGI 2 app is told its version, as uvicorn does.
        scope["asgi"] = {**scope["asgi"], "version": "2.0"}
        instance = self.app(scope)
        await instance(receive, send)
