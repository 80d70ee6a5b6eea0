"""gunicorn worker classes: `gunicorn -k tricorn.workers.TricornWorker module:app`.

The gunicorn arbiter binds the sockets, forks the workers, restarts dead or silent ones and handles
its own signals (HUP, TTIN, TTOU, ...). Each worker serves the application gunicorn loaded (ASGI 3,
ASGI 2 or WSGI) with tricorn's server on the listeners it inherited, configured from gunicorn's
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Generator
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from tricorn._compat import asyncio_run
from tricorn.config import Config
from tricorn.server import Server

__all__ = ["TricornH11Worker", "TricornWorker"]

# How often, at most, the worker tells the arbiter it is alive (gunicorn's `--timeout`).
HEARTBEAT_INTERVAL = 1.0


class _WorkerServer(Server):
    """A `Server` whose signals are the gunicorn worker's, installed on the loop by the worker."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing: `TricornWorker` handles the signals."""
        yield


class TricornWorker(Worker):  # type: ignore[misc]
    """A gunicorn worker that serves the application with tricorn.

    gunicorn's settings become tricorn's: the listeners, `--keep-alive`, `--graceful-timeout`,
    `--max-requests` (with `--max-requests-jitter`), `--forwarded-allow-ips`, `--backlog`, the TLS
    options, `--access-logformat`, and where gunicorn has them `--root-path`, `--asgi-lifespan`,
    `--asgi-loop`, `--http-protocols`, the `--http2-*` limits and `--websocket-max-message-size`.
    SIGTERM stops gracefully; SIGINT and SIGQUIT stop at once; SIGUSR1 reopens the log files.
    """

    CONFIG_KWARGS: dict[str, Any] = {}

    def init_signals(self) -> None:
        """Reset gunicorn's handlers; the loop installs the worker's own once it runs (see `_serve`).

        SIGABRT, which the arbiter sends to a worker that stopped reporting, is handled at once with
        `signal.signal`, so that it works even while the event loop is blocked.
        """
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGABRT, self._handle_abort)

    def run(self) -> None:
        """Serve `self.wsgi` (the application gunicorn loaded) until told to stop."""
        _use_gunicorn_handlers("tricorn.error", self.log.error_log)
        _use_gunicorn_handlers("tricorn.access", self.log.access_log)
        config = Config(**self.config_kwargs())
        asyncio_run(self._serve(config), loop_factory=config.get_loop_factory())

    def config_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of tricorn's `Config` for gunicorn's settings."""
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "app": self.wsgi,
            "log_config": None,
            # The arbiter runs the workers: each one serves alone (WEB_CONCURRENCY is the arbiter's too).
            "workers": 1,
            "backlog": cfg.backlog,
            "timeout_keep_alive": cfg.keepalive,
            # Leave a second of --graceful-timeout for the lifespan shutdown, before the arbiter's SIGKILL.
            "timeout_graceful_shutdown": max(cfg.graceful_timeout - 1, 0),
            # Worker.__init__ adds gunicorn's --max-requests-jitter; sys.maxsize stands for "no limit".
            "limit_max_requests": self.max_requests if cfg.max_requests > 0 else None,
            "forwarded_allow_ips": cfg.forwarded_allow_ips,
            "access_log_format": cfg.access_log_format,
        }
        if cfg.is_ssl:
            ssl = cfg.ssl_options
            kwargs.update(
                ssl_certfile=ssl.get("certfile"),
                ssl_keyfile=ssl.get("keyfile"),
                ssl_version=int(ssl.get("ssl_version")),
                ssl_cert_reqs=int(ssl.get("cert_reqs")),
                ssl_ca_certs=ssl.get("ca_certs"),
                ssl_ciphers=ssl.get("ciphers"),
            )
        # Settings of newer gunicorn releases, used where they exist.
        settings = cfg.settings
        if "root_path" in settings:
            kwargs["root_path"] = cfg.root_path
        if "asgi_lifespan" in settings:
            kwargs["lifespan"] = cfg.asgi_lifespan
        if "asgi_loop" in settings:
            kwargs["loop"] = cfg.asgi_loop
        if "websocket_max_message_size" in settings:
            kwargs["ws_max_size"] = cfg.websocket_max_message_size
        if "http_protocols" in settings:
            # HTTP/2 as gunicorn: when --http-protocols names h2, over TLS (ALPN) or, in cleartext, with
            # --http2-cleartext prior-knowledge or both (tricorn has no h2c upgrade).
            cleartext = cfg.http2_cleartext in ("prior-knowledge", "both")
            kwargs["http"] = "auto" if "h2" in cfg.http_protocols and (cfg.is_ssl or cleartext) else "h1"
            kwargs.update(
                http2_max_concurrent_streams=cfg.http2_max_concurrent_streams,
                http2_initial_stream_window_size=cfg.http2_initial_window_size,
                http2_max_frame_size=cfg.http2_max_frame_size,
                http2_max_header_list_size=cfg.http2_max_header_list_size,
            )
        kwargs.update(self.CONFIG_KWARGS)
        return kwargs

    async def _serve(self, config: Config) -> None:
        server = _WorkerServer(config)
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: lambda: self._stop(server, quick=False),
            signal.SIGINT: lambda: self._stop(server, quick=True),
            signal.SIGQUIT: lambda: self._stop(server, quick=True),
            signal.SIGUSR1: self.log.reopen_files,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        heartbeat = loop.create_task(self._heartbeat(server))
        try:
            await server.serve(sockets=[listener.sock for listener in self.sockets])
        finally:
            heartbeat.cancel()
            for sig in handlers:
                loop.remove_signal_handler(sig)
        if not server.started:
            # The arbiter stops instead of starting workers that cannot start either.
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def _stop(self, server: Server, quick: bool) -> None:
        """SIGTERM: let running requests finish; SIGINT, SIGQUIT: close everything now (gunicorn's meanings)."""
        self.alive = False
        server.should_exit = True
        if quick:
            self.cfg.worker_int(self)
            server.force_exit = True

    async def _heartbeat(self, server: Server) -> None:
        """Tell the arbiter the loop runs, for the worker's whole life (graceful shutdown included).

        Stops the server when gunicorn's reloader (`--reload`) clears `alive`, and when the arbiter
        is gone (killed, say): as gunicorn's own workers do, rather than live on as an orphan.
        """
        interval = min(HEARTBEAT_INTERVAL, self.timeout / 2) if self.timeout > 0 else HEARTBEAT_INTERVAL
        while True:
            self.notify()
            if self.alive and self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
            if not self.alive:
                server.should_exit = True
            await asyncio.sleep(interval)

    def _handle_abort(self, sig: int, frame: FrameType | None) -> None:
        """The arbiter gave up on this worker (no heartbeat within `--timeout`): run the hook, exit now."""
        self.alive = False
        self.cfg.worker_abort(self)
        sys.stderr.flush()
        os._exit(1)


class TricornH11Worker(TricornWorker):
    """`TricornWorker` on the asyncio loop with HTTP/1.1 only, where uvicorn's `UvicornH11Worker` was used."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "asyncio", "http": "h1"}


def _use_gunicorn_handlers(name: str, gunicorn_logger: logging.Logger) -> None:
    """Send tricorn's logger `name` to the handlers, at the level, of one of gunicorn's loggers."""
    logger = logging.getLogger(name)
    logger.handlers = list(gunicorn_logger.handlers)
    logger.setLevel(gunicorn_logger.level)
    logger.propagate = False
