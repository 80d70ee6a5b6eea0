"""`await tricorn.serve(app, config)`: serve in a running event loop until a trigger fires (as hypercorn does)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Generator

from tricorn._types import ASGIApplication
from tricorn.config import Config
from tricorn.server import Server

__all__ = ["serve"]

ShutdownTrigger = Callable[[], Awaitable[object]] | Awaitable[object]


class _EmbeddedServer(Server):
    """A `Server` that leaves the process's signal handlers alone: `serve()` decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing."""
        yield


async def serve(
    app: ASGIApplication | Callable[..., object] | str,
    config: Config | None = None,
    *,
    shutdown_trigger: ShutdownTrigger | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve `app` on the running event loop until `shutdown_trigger` completes, then shut down gracefully.

    `config` gives the options (its own app is replaced by `app`); by default `Config(app)`.
    `shutdown_trigger` is an awaitable, or a function returning one (hypercorn's form, such as
    `event.wait`). Without it, the server runs until SIGINT or SIGTERM (a second SIGINT stops at
    once, without waiting for running requests); the signals are not raised again afterwards.
    `sockets` are listening sockets to serve instead of binding `config`'s address.

    Returns once the lifespan shutdown has run. Raises `RuntimeError` if the server could not start
    (the reason is logged), and the trigger's exception if the trigger fails. If the server stops by
    itself first (`limit_max_requests`), the trigger is cancelled.
    """
    if config is None:
        config = Config(app)
    elif config.loaded:
        if config.app is not app:
            raise ValueError("config was loaded for another application: pass a new Config")
    else:
        config.app = app
    server = _EmbeddedServer(config)
    loop = asyncio.get_running_loop()
    serving = loop.create_task(server.serve(sockets=sockets))
    with _stop_on_signals(server, enabled=shutdown_trigger is None):
        trigger = loop.create_task(_wait_for(shutdown_trigger or asyncio.Event().wait))
        trigger_error: BaseException | None = None
        try:
            await asyncio.wait({serving, trigger}, return_when=asyncio.FIRST_COMPLETED)
            if trigger.done() and not trigger.cancelled():
                trigger_error = trigger.exception()
        finally:
            # Cancelled, triggered or stopped: in every case the server shuts down gracefully.
            server.should_exit = True
            trigger.cancel()
            await serving
    if trigger_error is not None:
        raise trigger_error
    if not server.started:
        raise RuntimeError("the server could not start (see the log)")


async def _wait_for(trigger: ShutdownTrigger) -> object:
    awaitable = trigger if inspect.isawaitable(trigger) else trigger()
    return await awaitable


@contextlib.contextmanager
def _stop_on_signals(server: Server, enabled: bool) -> Generator[None, None, None]:
    """While serving: SIGINT/SIGTERM stop `server` gracefully, a second SIGINT at once (main thread only)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
