"""Server configuration: `Config` stores the options; `Config.load()` does the one-time work before serving."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from configparser import RawConfigParser
from pathlib import Path
from typing import IO, Any, Literal

from tricorn._compat import iscoroutinefunction
from tricorn._types import ASGIApplication
from tricorn.asgi2 import ASGI2Middleware
from tricorn.importer import ImportFromStringError, import_from_string
from tricorn.lifespan import LifespanOff, LifespanOn
from tricorn.logging import LOG_LEVELS, LOGGING_CONFIG, configure_logging
from tricorn.loops import LOOP_FACTORIES, LoopFactory
from tricorn.sockets import create_socket, log_started_message
from tricorn.supervisors.watched import resolve_watched_paths
from tricorn.wsgi import is_wsgi, wsgi_to_asgi

HTTPProtocolType = Literal["auto", "h1", "h2", "h11", "httptools", "zttp"]
ProxyHeadersStyle = Literal["x-forwarded", "forwarded"]
Http3Congestion = Literal["cubic", "newreno", "bbr"]
WSProtocolType = Literal["auto", "none", "websockets", "websockets-sansio", "wsproto"]
LifespanType = Literal["auto", "on", "off"]
LoopFactoryType = Literal["none", "auto", "asyncio", "uvloop", "zuvloop"]
InterfaceType = Literal["auto", "asgi3", "asgi2", "wsgi"]

LIFESPAN: dict[str, type[LifespanOn] | type[LifespanOff]] = {
    "auto": LifespanOn,
    "on": LifespanOn,
    "off": LifespanOff,
}
INTERFACES: list[InterfaceType] = ["auto", "asgi3", "asgi2", "wsgi"]
SSL_PROTOCOL_VERSION: int = ssl.PROTOCOL_TLS_SERVER
STARTUP_FAILURE = 3

__all__ = ["LOG_LEVELS", "LOGGING_CONFIG", "STARTUP_FAILURE", "Config"]

logger = logging.getLogger("tricorn.error")


def _normalize_dirs(dirs: list[str] | tuple[str, ...] | str | None) -> list[str]:
    if dirs is None:
        return []
    if isinstance(dirs, str):
        return [dirs]
    return list(dict.fromkeys(dirs))


class Config:
    """All server options, with uvicorn's names and defaults. Creating one configures logging."""

    def __init__(
        self,
        app: ASGIApplication | Callable[..., Any] | str,
        host: str = "127.0.0.1",
        port: int = 8000,
        uds: str | None = None,
        fd: int | None = None,
        loop: LoopFactoryType | str = "auto",
        http: type[Any] | HTTPProtocolType | str = "auto",
        ws: type[Any] | WSProtocolType | str = "auto",
        ws_max_size: int = 16 * 1024 * 1024,
        ws_max_queue: int = 32,
        ws_ping_interval: float | None = 20.0,
        ws_ping_timeout: float | None = 20.0,
        ws_per_message_deflate: bool = True,
        lifespan: LifespanType = "auto",
        env_file: str | os.PathLike[str] | None = None,
        log_config: dict[str, Any] | str | os.PathLike[str] | RawConfigParser | IO[Any] | None = LOGGING_CONFIG,
        log_level: str | int | None = None,
        access_log: bool = True,
        access_log_format: str | None = None,
        use_colors: bool | None = None,
        interface: InterfaceType = "auto",
        reload: bool = False,
        reload_dirs: list[str] | str | None = None,
        reload_delay: float = 0.25,
        reload_includes: list[str] | str | None = None,
        reload_excludes: list[str] | str | None = None,
        workers: int | None = None,
        workers_max_rss: int | None = None,
        workers_lifetime: int | None = None,
        proxy_headers: bool = True,
        server_header: bool = True,
        date_header: bool = True,
        forwarded_allow_ips: list[str] | str | None = None,
        root_path: str = "",
        limit_concurrency: int | None = None,
        limit_connections: int | None = None,
        limit_request_body: int | None = None,
        limit_max_requests: int | None = None,
        limit_max_requests_jitter: int = 0,
        backlog: int = 2048,
        timeout_keep_alive: int = 5,
        timeout_header_read: float = 10.0,
        timeout_body_read: float = 60.0,
        timeout_tls_handshake: float = 10.0,
        timeout_send: float = 60.0,
        timeout_notify: int = 30,
        timeout_graceful_shutdown: int | None = None,
        timeout_worker_healthcheck: int = 5,
        callback_notify: Callable[..., Awaitable[None]] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile_password: str | None = None,
        ssl_version: int = SSL_PROTOCOL_VERSION,
        ssl_cert_reqs: int = ssl.CERT_NONE,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        ssl_ciphers: str | None = None,
        ssl_context_factory: Callable[[Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None,
        headers: list[tuple[str, str]] | None = None,
        factory: bool = False,
        h11_max_incomplete_event_size: int | None = None,
        reset_contextvars: bool = False,
        http2: bool = False,
        http3: bool = False,
        http2_max_concurrent_streams: int = 200,
        http2_initial_stream_window_size: int = 1024 * 1024,
        http2_initial_connection_window_size: int = 1024 * 1024,
        http2_adaptive_window: bool = False,
        http2_max_frame_size: int = 16384,
        http2_max_header_list_size: int = 65536,
        http2_max_send_buffer_size: int = 400 * 1024,
        http2_max_pending_reset_streams: int = 20,
        http2_max_local_error_reset_streams: int = 1024,
        http2_keep_alive_interval: float | None = None,
        http2_keep_alive_timeout: float = 20.0,
        http3_alt_svc: str | None = None,
        no_http3_alt_svc: bool = False,
        http3_idle_timeout: float = 30.0,
        http3_keep_alive_interval: float | None = None,
        http3_max_concurrent_streams: int = 200,
        http3_stream_receive_window: int = 1024 * 1024,
        http3_receive_window: int = 4 * 1024 * 1024,
        http3_send_window: int = 4 * 1024 * 1024,
        http3_max_udp_payload: int = 1472,
        http3_congestion: Http3Congestion = "cubic",
        http3_0rtt: bool = False,
        proxy_headers_style: ProxyHeadersStyle = "x-forwarded",
        forwarded_host: bool = False,
        forwarded_port: bool = False,
        forwarded_prefix: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.uds = uds
        self.fd = fd
        self.loop = loop
        self.http = http
        self.ws = ws
        self.ws_max_size = ws_max_size
        self.ws_max_queue = ws_max_queue
        self.ws_ping_interval = ws_ping_interval
        self.ws_ping_timeout = ws_ping_timeout
        self.ws_per_message_deflate = ws_per_message_deflate
        self.lifespan = lifespan
        self.log_config = os.fspath(log_config) if isinstance(log_config, os.PathLike) else log_config
        self.log_level = log_level
        self.access_log = access_log
        self.access_log_format = access_log_format
        self.use_colors = use_colors
        self.interface = interface
        self.reload = reload
        self.reload_delay = reload_delay
        self.workers = workers or 1
        self.workers_max_rss = workers_max_rss
        self.workers_lifetime = workers_lifetime
        # Set in each worker process of `--workers`/`--reload` (0..N-1, inherited by a replacement); None otherwise.
        self.worker_index: int | None = None
        self.proxy_headers = proxy_headers
        self.server_header = server_header
        self.date_header = date_header
        self.root_path = root_path
        self.limit_concurrency = limit_concurrency
        self.limit_connections = limit_connections
        self.limit_request_body = limit_request_body
        self.limit_max_requests = limit_max_requests
        self.limit_max_requests_jitter = limit_max_requests_jitter
        self.backlog = backlog
        self.timeout_keep_alive = timeout_keep_alive
        self.timeout_header_read = timeout_header_read
        self.timeout_body_read = timeout_body_read
        self.timeout_tls_handshake = timeout_tls_handshake
        self.timeout_send = timeout_send
        self.timeout_notify = timeout_notify
        self.timeout_graceful_shutdown = timeout_graceful_shutdown
        self.timeout_worker_healthcheck = timeout_worker_healthcheck
        self.callback_notify = callback_notify
        self.ssl_keyfile = ssl_keyfile
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile_password = ssl_keyfile_password
        self.ssl_version = ssl_version
        self.ssl_cert_reqs = ssl_cert_reqs
        self.ssl_ca_certs = ssl_ca_certs
        self.ssl_ciphers = ssl_ciphers
        self.ssl_context_factory = ssl_context_factory
        self.headers: list[tuple[str, str]] = list(headers or [])
        self.encoded_headers: list[tuple[bytes, bytes]] = []
        self.factory = factory
        self.h11_max_incomplete_event_size = h11_max_incomplete_event_size
        self.reset_contextvars = reset_contextvars
        self.http2 = http2
        self.http3 = http3
        self.proxy_headers_style = proxy_headers_style
        self.forwarded_host = forwarded_host
        self.forwarded_port = forwarded_port
        self.forwarded_prefix = forwarded_prefix
        self.http2_settings: dict[str, Any] = {
            "max_concurrent_streams": http2_max_concurrent_streams,
            "initial_stream_window_size": http2_initial_stream_window_size,
            "initial_connection_window_size": http2_initial_connection_window_size,
            "adaptive_window": http2_adaptive_window,
            "max_frame_size": http2_max_frame_size,
            "max_header_list_size": http2_max_header_list_size,
            "max_send_buf_size": http2_max_send_buffer_size,
            "max_pending_accept_reset_streams": http2_max_pending_reset_streams,
            "max_local_error_reset_streams": http2_max_local_error_reset_streams,
            "keep_alive_interval": http2_keep_alive_interval,
            "keep_alive_timeout": http2_keep_alive_timeout,
        }
        # "" turns the header off; None derives it from the UDP port.
        self.http3_alt_svc: str | None = "" if no_http3_alt_svc else http3_alt_svc
        self.http3_options: dict[str, Any] = {
            "idle_timeout": http3_idle_timeout,
            "keep_alive_interval": http3_keep_alive_interval,
            "max_concurrent_streams": http3_max_concurrent_streams,
            "stream_receive_window": http3_stream_receive_window,
            "receive_window": http3_receive_window,
            "send_window": http3_send_window,
            "max_udp_payload": http3_max_udp_payload,
            "congestion": http3_congestion,
            "zero_rtt": http3_0rtt,
        }
        self.reload_dirs: list[Path] = []
        self.reload_dirs_excludes: list[Path] = []
        self.reload_includes: list[str] = []
        self.reload_excludes: list[str] = []

        self.loaded = False
        self.configure_logging()

        if (reload_dirs or reload_includes or reload_excludes) and not self.should_reload:
            logger.warning(
                "Current configuration will not reload as not all conditions are met, please refer to documentation."
            )

        if self.should_reload:
            watched = resolve_watched_paths(
                _normalize_dirs(reload_dirs), _normalize_dirs(reload_includes), _normalize_dirs(reload_excludes)
            )
            self.reload_dirs, self.reload_dirs_excludes = watched.dirs, watched.dirs_excludes
            self.reload_includes, self.reload_excludes = watched.includes, watched.excludes
            logger.info("Will watch for changes in these directories: %s", sorted(map(str, self.reload_dirs)))

        if env_file is not None:
            from dotenv import load_dotenv

            logger.info("Loading environment from '%s'", env_file)
            load_dotenv(dotenv_path=env_file)

        if workers is None and "WEB_CONCURRENCY" in os.environ:
            self.workers = int(os.environ["WEB_CONCURRENCY"])

        self.forwarded_allow_ips: list[str] | str
        if forwarded_allow_ips is None:
            self.forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
        else:
            self.forwarded_allow_ips = forwarded_allow_ips

        if self.reload and self.workers > 1:
            logger.warning('"workers" flag is ignored when reloading is enabled.')

    @property
    def asgi_version(self) -> Literal["2.0", "3.0"]:
        """The ASGI version put in scopes: "2.0" for asgi2 apps, else "3.0"."""
        return "2.0" if self.interface == "asgi2" else "3.0"

    @property
    def is_ssl(self) -> bool:
        """True when any TLS option is given."""
        return bool(self.ssl_keyfile or self.ssl_certfile or self.ssl_context_factory)

    @property
    def use_subprocess(self) -> bool:
        """True when a supervisor runs the server in child processes: reload, several workers, or recycling."""
        return bool(self.reload or self.workers > 1 or self.workers_max_rss or self.workers_lifetime)

    @property
    def should_reload(self) -> bool:
        """True when reloading is requested and the app is an import string."""
        return isinstance(self.app, str) and self.reload

    @property
    def trusted_hosts(self) -> list[str]:
        """`forwarded_allow_ips` as a list of stripped entries ("*", IPs, CIDRs, literals)."""
        if isinstance(self.forwarded_allow_ips, str):
            return [item.strip() for item in self.forwarded_allow_ips.split(",") if item.strip()]
        return [item.strip() for item in self.forwarded_allow_ips]

    def configure_logging(self) -> None:
        """Apply `log_config`, `log_level` and `access_log` to the `tricorn.*` loggers."""
        configure_logging(self.log_config, self.log_level, self.access_log, self.use_colors)

    def load_app(self) -> Any:
        """Import the app and return it. Exits with STARTUP_FAILURE on failure."""
        try:
            return import_from_string(self.app)
        except ImportFromStringError as exc:
            logger.error("Error loading ASGI app. %s", exc)
            sys.exit(STARTUP_FAILURE)

    def load(self) -> None:
        """Import and wrap the app, encode the default headers and pick the lifespan class. Runs once."""
        assert not self.loaded

        if self.ssl_context_factory is not None:
            logger.error(
                "ssl_context_factory is not supported: tricorn's TLS is rustls, not Python's ssl module. "
                "Give ssl_certfile and ssl_keyfile (and ssl_ca_certs, ssl_cert_reqs for client certificates)."
            )
            sys.exit(STARTUP_FAILURE)
        if self.ssl_keyfile and not self.ssl_certfile:
            logger.error("--ssl-keyfile needs --ssl-certfile.")
            sys.exit(STARTUP_FAILURE)
        self.ssl: ssl.SSLContext | None = None
        self.http_versions = self._http_versions()

        encoded_headers = [(key.lower().encode("latin1"), value.encode("latin1")) for key, value in self.headers]
        self.encoded_headers = (
            [(b"server", b"tricorn")] + encoded_headers
            if b"server" not in dict(encoded_headers) and self.server_header
            else encoded_headers
        )

        self.lifespan_class = LIFESPAN[self.lifespan]
        self.loaded_app = self.load_app()

        try:
            self.loaded_app = self.loaded_app()
        except TypeError as exc:
            if self.factory:
                logger.error("Error loading ASGI app factory: %s", exc)
                sys.exit(STARTUP_FAILURE)
        else:
            if not self.factory:
                logger.warning(
                    "ASGI app factory detected. Using it, but please consider setting the --factory flag explicitly."
                )

        if self.interface == "auto":
            # uvicorn takes every other app for ASGI 2; one called with (environ, start_response) is WSGI.
            self.interface = "asgi3" if _is_asgi3(self.loaded_app) else "wsgi" if is_wsgi(self.loaded_app) else "asgi2"

        if self.interface == "wsgi":
            self.loaded_app = wsgi_to_asgi(self.loaded_app)
            # As uvicorn: a WebSocket upgrade reaches a WSGI application as a plain HTTP request.
            self.ws = "none"
        if self.interface == "asgi2":
            self.loaded_app = ASGI2Middleware(self.loaded_app)

        self.loaded = True

    def _http_versions(self) -> str:
        """`http` as the native side takes it: "auto", "h1" or "h2"."""
        if self.http in ("auto", "h1", "h2"):
            return str(self.http)
        if self.http == "zttp":
            logger.info("--http zttp: tricorn serves HTTP/1.1 and HTTP/2 with its own implementation (hyper).")
            return "auto"
        if self.http in ("h11", "httptools"):
            logger.info("--http %s: tricorn serves HTTP/1.1 with its own parser (hyper); HTTP/2 is off.", self.http)
            return "h1"
        logger.warning("--http %r is not a protocol tricorn knows: serving HTTP/1.1 and HTTP/2 (auto).", self.http)
        return "auto"

    @property
    def tls_settings(self) -> dict[str, Any] | None:
        """The `--ssl-*` options for the native side, or None without a certificate."""
        if not self.ssl_certfile:
            return None
        return {
            "certfile": os.fspath(self.ssl_certfile),
            "keyfile": os.fspath(self.ssl_keyfile) if self.ssl_keyfile else None,
            "password": self.ssl_keyfile_password,
            "ca_certs": os.fspath(self.ssl_ca_certs) if self.ssl_ca_certs else None,
            "cert_reqs": int(self.ssl_cert_reqs),
            "version": int(self.ssl_version),
            "ciphers": self.ssl_ciphers,
        }

    @property
    def http3_settings(self) -> dict[str, Any] | None:
        """The `--http3-*` options for the native side, or None when HTTP/3 is off."""
        if not self.http3:
            return None
        return {**self.http3_options, "worker_tag": self.worker_index}

    def setup_event_loop(self) -> None:
        """Removed in uvicorn 0.36 in favour of `get_loop_factory`; kept to fail the same way."""
        raise AttributeError("The `setup_event_loop` method was replaced by `get_loop_factory` in uvicorn 0.36.0.")

    def get_loop_factory(self) -> LoopFactory | None:
        """Return the event loop factory for `loop` (a registry name or a `module:factory` import string)."""
        if self.loop not in LOOP_FACTORIES:
            try:
                loop_factory: LoopFactory = import_from_string(self.loop)
            except ImportFromStringError as exc:
                logger.error("Error loading custom loop setup function. %s", exc)
                sys.exit(STARTUP_FAILURE)
            return loop_factory
        factory_getter = LOOP_FACTORIES[self.loop]
        if factory_getter is None:
            return None
        try:
            return factory_getter(use_subprocess=self.use_subprocess)
        except ImportError as exc:
            logger.error("Error loading event loop %r: %s", self.loop, exc)
            sys.exit(STARTUP_FAILURE)

    def bind_socket(self) -> socket.socket:
        """Bind and return the listening socket (for supervisors), logging where it listens. Exits on error."""
        try:
            sock = create_socket(self)
        except OSError as exc:
            logger.error(exc)
            sys.exit(STARTUP_FAILURE)
        log_started_message(self, sock)
        return sock


def _is_asgi3(app: Any) -> bool:
    """Guess whether `app` is an ASGI 3 (single coroutine callable) application."""
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.isfunction(app):
        return iscoroutinefunction(app)
    return iscoroutinefunction(getattr(app, "__call__", None))  # noqa: B004
