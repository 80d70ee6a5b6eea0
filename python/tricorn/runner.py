"""`run()`: the programmatic entry point (same keyword arguments as `uvicorn.run`)."""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable
from configparser import RawConfigParser
from typing import IO, Any

from tricorn._types import ASGIApplication
from tricorn.config import (
    LOGGING_CONFIG,
    SSL_PROTOCOL_VERSION,
    STARTUP_FAILURE,
    Config,
    Http3Congestion,
    HTTPProtocolType,
    InterfaceType,
    LifespanType,
    LoopFactoryType,
    ProxyHeadersStyle,
    WSProtocolType,
)
from tricorn.server import Server
from tricorn.sockets import SupervisorSockets


def run(
    app: ASGIApplication | Callable[..., Any] | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: str | None = None,
    fd: int | None = None,
    loop: LoopFactoryType | str = "auto",
    http: type[Any] | HTTPProtocolType | str = "auto",
    ws: type[Any] | WSProtocolType | str = "auto",
    ws_max_size: int = 16777216,
    ws_max_queue: int = 32,
    ws_ping_interval: float | None = 20.0,
    ws_ping_timeout: float | None = 20.0,
    ws_per_message_deflate: bool = True,
    lifespan: LifespanType = "auto",
    interface: InterfaceType = "auto",
    reload: bool = False,
    reload_dirs: list[str] | str | None = None,
    reload_includes: list[str] | str | None = None,
    reload_excludes: list[str] | str | None = None,
    reload_delay: float = 0.25,
    workers: int | None = None,
    workers_max_rss: int | None = None,
    workers_lifetime: int | None = None,
    env_file: str | os.PathLike[str] | None = None,
    log_config: dict[str, Any] | str | os.PathLike[str] | RawConfigParser | IO[Any] | None = LOGGING_CONFIG,
    log_level: str | int | None = None,
    access_log: bool = True,
    access_log_format: str | None = None,
    proxy_headers: bool = True,
    server_header: bool = True,
    date_header: bool = True,
    forwarded_allow_ips: list[str] | str | None = None,
    root_path: str = "",
    limit_concurrency: int | None = None,
    limit_connections: int | None = None,
    limit_request_body: int | None = None,
    backlog: int = 2048,
    limit_max_requests: int | None = None,
    limit_max_requests_jitter: int = 0,
    timeout_keep_alive: int = 5,
    timeout_header_read: float = 10.0,
    timeout_body_read: float = 60.0,
    timeout_tls_handshake: float = 10.0,
    timeout_send: float = 60.0,
    timeout_graceful_shutdown: int | None = None,
    timeout_worker_healthcheck: int = 5,
    ssl_keyfile: str | os.PathLike[str] | None = None,
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile_password: str | None = None,
    ssl_version: int = SSL_PROTOCOL_VERSION,
    ssl_cert_reqs: int = ssl.CERT_NONE,
    ssl_ca_certs: str | os.PathLike[str] | None = None,
    ssl_ciphers: str | None = None,
    ssl_context_factory: Callable[[Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None,
    headers: list[tuple[str, str]] | None = None,
    use_colors: bool | None = None,
    app_dir: str | None = None,
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
    proxy_headers_style: ProxyHeadersStyle = "x-forwarded",
    forwarded_host: bool = False,
    forwarded_port: bool = False,
    forwarded_prefix: bool = False,
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
) -> None:
    """Serve `app` (an ASGI callable or a `module:attr` import string) until interrupted.

    Exits with status 3 (STARTUP_FAILURE) when the server could not start.
    """
    if app_dir is not None:
        sys.path.insert(0, app_dir)

    config = Config(
        app,
        host=host,
        port=port,
        uds=uds,
        fd=fd,
        loop=loop,
        http=http,
        ws=ws,
        ws_max_size=ws_max_size,
        ws_max_queue=ws_max_queue,
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_timeout,
        ws_per_message_deflate=ws_per_message_deflate,
        lifespan=lifespan,
        interface=interface,
        reload=reload,
        reload_dirs=reload_dirs,
        reload_includes=reload_includes,
        reload_excludes=reload_excludes,
        reload_delay=reload_delay,
        workers=workers,
        workers_max_rss=workers_max_rss,
        workers_lifetime=workers_lifetime,
        env_file=env_file,
        log_config=log_config,
        log_level=log_level,
        access_log=access_log,
        access_log_format=access_log_format,
        proxy_headers=proxy_headers,
        server_header=server_header,
        date_header=date_header,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
        limit_concurrency=limit_concurrency,
        limit_connections=limit_connections,
        limit_request_body=limit_request_body,
        backlog=backlog,
        limit_max_requests=limit_max_requests,
        limit_max_requests_jitter=limit_max_requests_jitter,
        timeout_keep_alive=timeout_keep_alive,
        timeout_header_read=timeout_header_read,
        timeout_body_read=timeout_body_read,
        timeout_tls_handshake=timeout_tls_handshake,
        timeout_send=timeout_send,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        timeout_worker_healthcheck=timeout_worker_healthcheck,
        ssl_keyfile=ssl_keyfile,
        ssl_certfile=ssl_certfile,
        ssl_keyfile_password=ssl_keyfile_password,
        ssl_version=ssl_version,
        ssl_cert_reqs=ssl_cert_reqs,
        ssl_ca_certs=ssl_ca_certs,
        ssl_ciphers=ssl_ciphers,
        ssl_context_factory=ssl_context_factory,
        headers=headers,
        use_colors=use_colors,
        factory=factory,
        h11_max_incomplete_event_size=h11_max_incomplete_event_size,
        reset_contextvars=reset_contextvars,
        http2=http2,
        http3=http3,
        http2_max_concurrent_streams=http2_max_concurrent_streams,
        http2_initial_stream_window_size=http2_initial_stream_window_size,
        http2_initial_connection_window_size=http2_initial_connection_window_size,
        http2_adaptive_window=http2_adaptive_window,
        http2_max_frame_size=http2_max_frame_size,
        http2_max_header_list_size=http2_max_header_list_size,
        http2_max_send_buffer_size=http2_max_send_buffer_size,
        http2_max_pending_reset_streams=http2_max_pending_reset_streams,
        http2_max_local_error_reset_streams=http2_max_local_error_reset_streams,
        http2_keep_alive_interval=http2_keep_alive_interval,
        http2_keep_alive_timeout=http2_keep_alive_timeout,
        proxy_headers_style=proxy_headers_style,
        forwarded_host=forwarded_host,
        forwarded_port=forwarded_port,
        forwarded_prefix=forwarded_prefix,
        http3_alt_svc=http3_alt_svc,
        no_http3_alt_svc=no_http3_alt_svc,
        http3_idle_timeout=http3_idle_timeout,
        http3_keep_alive_interval=http3_keep_alive_interval,
        http3_max_concurrent_streams=http3_max_concurrent_streams,
        http3_stream_receive_window=http3_stream_receive_window,
        http3_receive_window=http3_receive_window,
        http3_send_window=http3_send_window,
        http3_max_udp_payload=http3_max_udp_payload,
        http3_congestion=http3_congestion,
        http3_0rtt=http3_0rtt,
    )
    if config.use_subprocess:
        if not isinstance(app, str):
            logger = logging.getLogger("tricorn.error")
            logger.warning("You must pass the application as an import string to enable 'reload' or 'workers'.")
            sys.exit(STARTUP_FAILURE)
        status = _supervise(config)
        if status:
            sys.exit(status)
        return

    config.load_app()
    server = Server(config=config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)

    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _supervise(config: Config) -> int:
    """Run the reloader or the worker processes on sockets bound here; return the exit status."""
    sockets = SupervisorSockets.bind(config)
    try:
        if config.should_reload:
            from tricorn.supervisors.reload import WatchFilesReload

            WatchFilesReload(config, sockets).run()
            return 0
        from tricorn.supervisors.multiprocess import Multiprocess

        return Multiprocess(config, sockets).run()
    finally:
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)
