"""`Server`: startup, main loop and graceful shutdown of one worker around the native HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import TYPE_CHECKING

from tricorn._ansi import style
from tricorn._compat import asyncio_run
from tricorn.config import Config
from tricorn.lifespan import LifespanOff, LifespanOn
from tricorn.native import build_settings
from tricorn.sockets import create_socket, create_udp_socket, log_started_message

if TYPE_CHECKING:
    from tricorn._tricorn import NativeServer

HANDLED_SIGNALS = (
    signal.SIGINT,  # Unix signal 2. Sent by Ctrl+C.
    signal.SIGTERM,  # Unix signal 15. Sent by `kill <pid>`.
)

# Seconds a worker sharing its sockets keeps its connections open after it stopped accepting (see `shutdown`).
SHARED_SOCKET_GRACE = 0.5

logger = logging.getLogger("tricorn.error")


class Listener:
    """A listening socket, shaped like the `asyncio.Server` objects in uvicorn's `Server.servers`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sockets = [sock]

    def close(self) -> None:
        """Close the Python side of the socket (the native server holds its own duplicate)."""
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        """Return at once: closing is synchronous."""


class Server:
    """Serve `config.loaded_app` in this process until `should_exit` is set or a signal arrives."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = False
        self.should_exit = False
        self.force_exit = False
        self.last_notified = 0.0
        self.servers: list[Listener] = []
        self.native: NativeServer | None = None
        self.lifespan: LifespanOn | LifespanOff
        self._unix_path: str | None = None
        self._captured_signals: list[int] = []

    @functools.cached_property
    def limit_max_requests(self) -> int | None:
        """`limit_max_requests` plus a random jitter in [0, limit_max_requests_jitter], drawn once."""
        if self.config.limit_max_requests is None:
            return None
        return self.config.limit_max_requests + random.randint(0, self.config.limit_max_requests_jitter)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Run `serve()` on a new event loop made by the configured loop factory."""
        loop_factory = self.config.get_loop_factory()
        return asyncio_run(self.serve(sockets=sockets), loop_factory=loop_factory)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until exit; signals are captured (main thread only) and re-raised afterwards."""
        with self.capture_signals():
            await self._serve(sockets)

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        process_id = os.getpid()
        config = self.config
        if not config.loaded:
            config.load()

        self.lifespan = config.lifespan_class(config)

        message = "Started server process [%d]"
        color_message = "Started server process [" + style("%d", fg="cyan") + "]"
        logger.info(message, process_id, extra={"color_message": color_message})

        try:
            await self.startup(sockets=sockets)
            if self.started and not self.should_exit:
                await self.main_loop()
            if self.started:
                await self.shutdown(sockets=sockets)
                message = "Finished server process [%d]"
                color_message = "Finished server process [" + style("%d", fg="cyan") + "]"
                logger.info(message, process_id, extra={"color_message": color_message})
        finally:
            self._release()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Build the native server, run lifespan startup, bind and listen. On failure `started` stays False.

        The native server is built first so that a TLS file that cannot be used is reported before the
        application's startup runs; the lifespan `state` dict it copies into scopes is filled afterwards.
        """
        try:
            from tricorn._tricorn import ConfigError, NativeServer
        except ImportError as exc:
            logger.error("Cannot load the native module tricorn._tricorn: %s", exc)
            return
        loop = asyncio.get_running_loop()
        try:
            native = NativeServer(self.config.loaded_app, loop, build_settings(self.config, self.lifespan.state))
        except ConfigError as exc:
            logger.error("%s", exc)
            return

        await self.lifespan.startup()
        if self.lifespan.should_exit:
            return

        config = self.config
        try:
            listeners = sockets if sockets is not None else [create_socket(config)]
            if sockets is None and config.uds is not None:
                self._unix_path = config.uds
            self.servers = [Listener(sock) for sock in listeners]
            streams = [sock for sock in listeners if sock.type == socket.SOCK_STREAM]
            for sock in streams:
                sock.listen(config.backlog)
                native.listen(sock.fileno())
            if config.http3:
                # A supervisor hands each worker its own UDP socket among `sockets`.
                datagrams = [sock for sock in listeners if sock.type == socket.SOCK_DGRAM]
                self._listen_quic(native, datagrams or self._bind_quic(streams))
        except (OSError, ValueError) as exc:
            logger.error("%s", exc)
            await self.lifespan.shutdown()
            return
        loop.add_reader(native.fileno(), native.drive)

        self.native = native
        if sockets is None:
            log_started_message(config, listeners[0])
        self.started = True

    def _bind_quic(self, streams: list[socket.socket]) -> list[socket.socket]:
        """Bind a UDP socket where each TCP listener is, for HTTP/3."""
        datagrams = [create_udp_socket(tcp) for tcp in streams]
        self.servers.extend(Listener(sock) for sock in datagrams)
        return datagrams

    def _listen_quic(self, native: NativeServer, datagrams: list[socket.socket]) -> None:
        """Serve HTTP/3 on the UDP sockets."""
        for sock in datagrams:
            native.listen_quic(sock.fileno())
            logger.info("Serving HTTP/3 (QUIC) on UDP port %d", sock.getsockname()[1])

    async def main_loop(self) -> None:
        """Tick every 0.1 s until `on_tick` says to exit."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.1)
            should_exit = await self.on_tick(counter)

    async def on_tick(self, counter: int) -> bool:
        """Call `callback_notify` when due; return True when the server should exit."""
        if counter % 10 == 0 and self.config.callback_notify is not None:
            current_time = time.time()
            if current_time - self.last_notified > self.config.timeout_notify:
                self.last_notified = current_time
                await self.config.callback_notify()

        if self.should_exit:
            return True

        max_requests = self.limit_max_requests
        if max_requests is not None and self.native is not None and self.native.total_requests >= max_requests:
            logger.info("Maximum request limit of %d exceeded. Terminating process.", max_requests)
            return True

        return False

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, let running requests finish (up to `timeout_graceful_shutdown`), then lifespan shutdown."""
        logger.info("Shutting down")
        assert self.native is not None
        native = self.native

        native.stop_accepting()
        if sockets is not None and not self.config.should_reload and native.connections:
            # Other processes accept on these sockets (the other workers, a replacement). A connection accepted
            # here just before may not have sent its request yet: give it time to, rather than close it as idle.
            await asyncio.sleep(SHARED_SOCKET_GRACE)
        native.shutdown()
        for server in self.servers:
            server.close()

        try:
            await asyncio.wait_for(self._wait_tasks_to_complete(native), timeout=self.config.timeout_graceful_shutdown)
        except asyncio.TimeoutError:
            logger.error("Cancel %s running task(s), timeout graceful shutdown exceeded", native.tasks)
            native.abort()
        if self.force_exit:
            native.abort()
        else:
            await self.lifespan.shutdown()

    async def _wait_tasks_to_complete(self, native: NativeServer) -> None:
        if native.connections and not self.force_exit:
            logger.info("Waiting for connections to close. (CTRL+C to force quit)")
            while native.connections and not self.force_exit:
                await asyncio.sleep(0.1)

        if native.tasks and not self.force_exit:
            logger.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
            while native.tasks and not self.force_exit:
                await asyncio.sleep(0.1)

    def _release(self) -> None:
        """Unregister the native server from the loop, close the sockets and remove our UNIX socket file."""
        if self.native is not None:
            asyncio.get_running_loop().remove_reader(self.native.fileno())
            # Dropped on the loop's thread: the native server cannot be dropped on another (`Server.run()`
            # in a thread, with the `Server` kept by the main thread).
            self.native = None
        for server in self.servers:
            server.close()
        if self._unix_path is not None and os.path.exists(self._unix_path):
            os.remove(self._unix_path)
            self._unix_path = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle SIGINT/SIGTERM during serving, then restore the old handlers and re-raise what was caught."""
        # Signals can only be listened to from the main thread.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # signal.signal (not loop.add_signal_handler) so the previous handlers can be restored.
        original_handlers = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original_handlers.items():
                signal.signal(sig, handler)
        # Re-raise the captured signals, last first, so the previous handlers see them.
        for captured_signal in reversed(self._captured_signals):
            signal.raise_signal(captured_signal)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: graceful exit. A second SIGINT: force exit."""
        self._captured_signals.append(sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
