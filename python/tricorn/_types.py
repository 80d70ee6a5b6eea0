"""Type aliases for ASGI applications and messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
ASGIReceiveCallable: TypeAlias = Callable[[], Awaitable[Message]]
ASGISendCallable: TypeAlias = Callable[[Message], Awaitable[None]]
ASGI3Application: TypeAlias = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
ASGI2Instance: TypeAlias = Callable[[ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
ASGI2Application: TypeAlias = Callable[[Scope], ASGI2Instance]
ASGIApplication: TypeAlias = ASGI2Application | ASGI3Application
