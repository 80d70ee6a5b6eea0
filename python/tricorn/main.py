"""The `tricorn` command line and `run()`: build a `Config` and a `Server`, then serve."""

from __future__ import annotations

import platform
import ssl
from typing import Any, get_args

import click

import tricorn
from tricorn.config import (
    INTERFACES,
    LIFESPAN,
    LOG_LEVELS,
    LOGGING_CONFIG,
    SSL_PROTOCOL_VERSION,
    HTTPProtocolType,
    LoopFactoryType,
    WSProtocolType,
)
from tricorn.loops import LOOP_FACTORIES
from tricorn.runner import run

__all__ = ["main", "run"]

LEVEL_CHOICES = click.Choice(list(LOG_LEVELS.keys()), case_sensitive=False)
LIFESPAN_CHOICES = click.Choice(list(LIFESPAN.keys()))
INTERFACE_CHOICES = click.Choice(INTERFACES)


def _metavar_from_type(_type: Any) -> str:
    return f"[{'|'.join(key for key in get_args(_type) if key != 'none')}]"


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Print `Running tricorn X with CPython Y on Z` and exit."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(
        f"Running tricorn {tricorn.__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}"
    )
    ctx.exit()


def validate_loop(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Accept a loop name from the registry or a `module:factory` import string."""
    if value in LOOP_FACTORIES or ":" in value:
        return value
    choices = ", ".join(repr(name) for name in LOOP_FACTORIES)
    raise click.BadParameter(f"{value!r} is not one of {choices} or a '<module>:<factory>' import string.")


def parse_headers(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[tuple[str, str]]:
    """Turn each `Name:Value` into a `(name, value)` pair."""
    headers = []
    for header in value:
        name, sep, header_value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{header!r} is not in the form 'Name:Value'.")
        headers.append((name.strip(), header_value.strip()))
    return headers


@click.command(context_settings={"auto_envvar_prefix": "TRICORN"})
@click.argument("app", envvar="TRICORN_APP")
@click.option("--host", type=str, default="127.0.0.1", help="Bind socket to this host.", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    help="Bind socket to this port. If 0, an available port will be picked.",
    show_default=True,
)
@click.option("--uds", type=str, default=None, help="Bind to a UNIX domain socket.")
@click.option("--fd", type=click.IntRange(min=0), default=None, help="Bind to socket from this file descriptor.")
@click.option("--reload", is_flag=True, default=False, help="Enable auto-reload.")
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    help="Set reload directories explicitly, instead of using the current working directory.",
    type=click.Path(exists=True),
)
@click.option(
    "--reload-include",
    "reload_includes",
    multiple=True,
    help="Set glob patterns to include while watching for files. Includes '*.py' "
    "by default; these defaults can be overridden with `--reload-exclude`.",
)
@click.option(
    "--reload-exclude",
    "reload_excludes",
    multiple=True,
    help="Set glob patterns to exclude while watching for files. Includes "
    "'.*, .py[cod], .sw.*, ~*' by default; these defaults can be overridden "
    "with `--reload-include`.",
)
@click.option(
    "--reload-delay",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    help="Delay between previous and next check if application needs to be. Defaults to 0.25s.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Number of worker processes. Defaults to the $WEB_CONCURRENCY environment"
    " variable if available, or 1. Not valid with --reload.",
)
@click.option(
    "--workers-max-rss",
    type=click.IntRange(min=1),
    default=None,
    help="Replace a worker process whose resident memory exceeds this many MiB (checked twice a second;"
    " Linux). Runs the worker processes under a supervisor even with one worker.",
)
@click.option(
    "--workers-lifetime",
    type=click.IntRange(min=1),
    default=None,
    help="Replace a worker process after it has served this many seconds; the first workers are spread over"
    " the second half of one lifetime so they are not replaced together. Runs the worker processes under a"
    " supervisor even with one worker.",
)
@click.option(
    "--loop",
    type=str,
    metavar=_metavar_from_type(LoopFactoryType),
    default="auto",
    callback=validate_loop,
    help="Event loop factory implementation.",
    show_default=True,
)
@click.option(
    "--http",
    type=str,
    metavar=_metavar_from_type(HTTPProtocolType),
    default="auto",
    help="HTTP versions: auto (HTTP/1.1 and HTTP/2), h1, h2; uvicorn's h11 and httptools mean HTTP/1.1 only.",
    show_default=True,
)
@click.option(
    "--ws",
    type=str,
    metavar=_metavar_from_type(WSProtocolType),
    default="auto",
    help="WebSocket protocol implementation.",
    show_default=True,
)
@click.option(
    "--ws-max-size",
    type=click.IntRange(min=1),
    default=16777216,
    help="WebSocket max size message in bytes",
    show_default=True,
)
@click.option(
    "--ws-max-queue",
    type=click.IntRange(min=1),
    default=32,
    help="The maximum length of the WebSocket message queue.",
    show_default=True,
)
@click.option(
    "--ws-ping-interval",
    type=float,
    default=20.0,
    help="WebSocket ping interval in seconds.",
    show_default=True,
)
@click.option(
    "--ws-ping-timeout",
    type=float,
    default=20.0,
    help="WebSocket ping timeout in seconds.",
    show_default=True,
)
@click.option(
    "--ws-per-message-deflate",
    type=bool,
    default=True,
    help="WebSocket per-message-deflate compression",
    show_default=True,
)
@click.option("--lifespan", type=LIFESPAN_CHOICES, default="auto", help="Lifespan implementation.", show_default=True)
@click.option(
    "--interface",
    type=INTERFACE_CHOICES,
    default="auto",
    help="Select ASGI3, ASGI2, or WSGI as the application interface.",
    show_default=True,
)
@click.option(
    "--env-file",
    type=click.Path(exists=True),
    default=None,
    help="Environment configuration file.",
    show_default=True,
)
@click.option(
    "--log-config",
    type=click.Path(exists=True),
    default=None,
    help="Logging configuration file. Supported formats: .ini, .json, .yaml.",
    show_default=True,
)
@click.option("--log-level", type=LEVEL_CHOICES, default=None, help="Log level. [default: info]", show_default=True)
@click.option("--access-log/--no-access-log", is_flag=True, default=True, help="Enable/Disable access log.")
@click.option(
    "--access-log-format",
    type=str,
    default=None,
    help="Write access lines when the response is over, in this format: gunicorn's atoms, e.g. "
    "'%(h)s \"%(r)s\" %(s)s %(b)s %(D)s' (%(D)s: microseconds; %({name}i)s, %({name}o)s: headers). "
    "[default: uvicorn's line, when the response starts]",
)
@click.option("--use-colors/--no-use-colors", is_flag=True, default=None, help="Enable/Disable colorized logging.")
@click.option(
    "--proxy-headers/--no-proxy-headers",
    is_flag=True,
    default=True,
    help="Enable/Disable X-Forwarded-Proto, X-Forwarded-For to populate url scheme and remote address info.",
)
@click.option(
    "--server-header/--no-server-header",
    is_flag=True,
    default=True,
    help="Enable/Disable default Server header.",
)
@click.option(
    "--date-header/--no-date-header",
    is_flag=True,
    default=True,
    help="Enable/Disable default Date header.",
)
@click.option(
    "--forwarded-allow-ips",
    type=str,
    default=None,
    help="Comma separated list of IP Addresses, IP Networks, or literals "
    "(e.g. UNIX Socket path) to trust with proxy headers. Defaults to the "
    "$FORWARDED_ALLOW_IPS environment variable if available, or '127.0.0.1'. "
    "The literal '*' means trust everything; 'unix:' trusts any unix-socket peer (e.g. nginx on --uds).",
)
@click.option(
    "--root-path",
    type=str,
    default="",
    help="Set the ASGI 'root_path' for applications submounted below a given URL path.",
)
@click.option(
    "--limit-concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum number of concurrent connections or tasks to allow, before issuing HTTP 503 responses.",
)
@click.option(
    "--limit-connections",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum number of open connections (WebSockets included). Beyond it, new connections wait in the "
    "listen backlog until one closes.",
)
@click.option(
    "--limit-request-body",
    type=click.IntRange(min=0),
    default=None,
    help="Largest request body in bytes. A larger Content-Length is answered 413 at once; a streamed body "
    "that grows past it ends the request (413 if no response started). Default: no limit.",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    default=2048,
    help="Maximum number of connections to hold in backlog",
)
@click.option(
    "--limit-max-requests",
    type=click.IntRange(min=0),
    default=None,
    help="Maximum number of requests to service before terminating the process.",
)
@click.option(
    "--limit-max-requests-jitter",
    type=click.IntRange(min=0),
    default=0,
    help="Maximum jitter to add to limit_max_requests."
    " Staggers worker restarts to avoid all workers restarting simultaneously.",
    show_default=True,
)
@click.option(
    "--timeout-keep-alive",
    type=click.IntRange(min=0),
    default=5,
    help="Close Keep-Alive connections if no new data is received within this timeout (in seconds).",
    show_default=True,
)
@click.option(
    "--timeout-header-read",
    type=click.FloatRange(min=0),
    default=10.0,
    help="Close a connection whose request head (request line and headers) is not complete this many seconds "
    "after it began (slowloris). 0 disables.",
    show_default=True,
)
@click.option(
    "--timeout-body-read",
    type=click.FloatRange(min=0),
    default=60.0,
    help="End a request whose body stalls this many seconds while the app waits for it: the app gets "
    "http.disconnect and the connection closes (408 if no response started). 0 disables.",
    show_default=True,
)
@click.option(
    "--timeout-send",
    type=click.FloatRange(min=0),
    default=60.0,
    help="Drop a connection whose client reads nothing of a pending response for this many seconds. 0 disables.",
    show_default=True,
)
@click.option(
    "--timeout-tls-handshake",
    type=click.FloatRange(min=0),
    default=10.0,
    help="Drop a connection whose TLS handshake is not complete this many seconds after it was accepted. 0 disables.",
    show_default=True,
)
@click.option(
    "--timeout-graceful-shutdown",
    type=click.IntRange(min=0),
    default=None,
    help="Maximum number of seconds to wait for graceful shutdown.",
)
@click.option(
    "--timeout-worker-healthcheck",
    type=click.IntRange(min=0),
    default=5,
    help="Maximum number of seconds to wait for a worker to respond to a healthcheck.",
    show_default=True,
)
@click.option("--ssl-keyfile", type=str, default=None, help="SSL key file", show_default=True)
@click.option("--ssl-certfile", type=str, default=None, help="SSL certificate file", show_default=True)
@click.option("--ssl-keyfile-password", type=str, default=None, help="SSL keyfile password", show_default=True)
@click.option(
    "--ssl-version",
    type=int,
    default=int(SSL_PROTOCOL_VERSION),
    help="SSL version to use (see stdlib ssl module's)",
    show_default=True,
)
@click.option(
    "--ssl-cert-reqs",
    type=click.IntRange(0, 2),
    default=int(ssl.CERT_NONE),
    help="Whether client certificate is required (see stdlib ssl module's)",
    show_default=True,
)
@click.option("--ssl-ca-certs", type=str, default=None, help="CA certificates file", show_default=True)
@click.option(
    "--ssl-ciphers",
    type=str,
    default=None,
    help="Ciphers to use (see stdlib ssl module's). Defaults to OpenSSL's safe defaults.",
    show_default=True,
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=parse_headers,
    help="Specify custom default HTTP response headers as a Name:Value pair",
)
@click.option(
    "--version",
    is_flag=True,
    callback=print_version,
    expose_value=False,
    is_eager=True,
    help="Display the tricorn version and exit.",
)
@click.option(
    "--app-dir",
    default="",
    show_default=True,
    help="Look for APP in the specified directory, by adding this to the PYTHONPATH."
    " Defaults to the current working directory.",
)
@click.option(
    "--h11-max-incomplete-event-size",
    "h11_max_incomplete_event_size",
    type=click.IntRange(min=0),
    default=None,
    help="Largest HTTP/1.1 request head (request line and headers) in bytes, checked between reads; a larger "
    "one is answered 431. Values below 8192 count as 8192. Default: hyper's buffer limit, about 400 KiB.",
)
@click.option(
    "--reset-contextvars",
    is_flag=True,
    default=False,
    help="Run each ASGI request in a fresh contextvars.Context. Hides context set in the lifespan.",
    show_default=True,
)
@click.option(
    "--factory",
    is_flag=True,
    default=False,
    help="Treat APP as an application factory, i.e. a () -> <ASGI app> callable.",
    show_default=True,
)
@click.option("--http2", is_flag=True, default=False, help="Enable HTTP/2 support.", show_default=True)
@click.option(
    "--http3",
    is_flag=True,
    default=False,
    help="Enable HTTP/3 (QUIC) support on the same UDP port.",
    show_default=True,
)
@click.option(
    "--proxy-headers-style",
    type=click.Choice(["x-forwarded", "forwarded"]),
    default="x-forwarded",
    help="Which proxy headers name the client and scheme: X-Forwarded-For/-Proto (as uvicorn) or RFC 7239 Forwarded.",
    show_default=True,
)
@click.option(
    "--forwarded-host/--no-forwarded-host",
    default=False,
    help="Let a trusted proxy set the host header (X-Forwarded-Host, or host= of Forwarded).",
    show_default=True,
)
@click.option(
    "--forwarded-port/--no-forwarded-port",
    default=False,
    help="Let a trusted proxy set the port of scope['server'] (X-Forwarded-Port).",
    show_default=True,
)
@click.option(
    "--forwarded-prefix/--no-forwarded-prefix",
    default=False,
    help="Let a trusted proxy set a root_path prefix (X-Forwarded-Prefix), prefixed to path as --root-path is.",
    show_default=True,
)
@click.option(
    "--http2-max-concurrent-streams",
    type=click.IntRange(min=1),
    default=200,
    help="HTTP/2: most streams a client may have open on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).",
    show_default=True,
)
@click.option(
    "--http2-initial-stream-window-size",
    type=click.IntRange(min=65535, max=2**31 - 1),
    default=1024 * 1024,
    help="HTTP/2: bytes a client may send on one stream before the app reads them.",
    show_default=True,
)
@click.option(
    "--http2-initial-connection-window-size",
    type=click.IntRange(min=65535, max=2**31 - 1),
    default=1024 * 1024,
    help="HTTP/2: bytes a client may send on a connection before the app reads them.",
    show_default=True,
)
@click.option(
    "--http2-adaptive-window/--no-http2-adaptive-window",
    default=False,
    help="HTTP/2: size the receive windows from the measured bandwidth-delay product.",
    show_default=True,
)
@click.option(
    "--http2-max-frame-size",
    type=click.IntRange(min=16384, max=16777215),
    default=16384,
    help="HTTP/2: largest frame payload the server accepts (SETTINGS_MAX_FRAME_SIZE).",
    show_default=True,
)
@click.option(
    "--http2-max-header-list-size",
    type=click.IntRange(min=1),
    default=65536,
    help="HTTP/2: largest request header block in bytes (SETTINGS_MAX_HEADER_LIST_SIZE); bigger ones are refused.",
    show_default=True,
)
@click.option(
    "--http2-max-send-buffer-size",
    type=click.IntRange(min=1),
    default=400 * 1024,
    help="HTTP/2: response bytes buffered per stream before the app's send() waits.",
    show_default=True,
)
@click.option(
    "--http2-max-pending-reset-streams",
    type=click.IntRange(min=0),
    default=20,
    help="HTTP/2: streams a client may open and reset before the app sees them (rapid reset protection).",
    show_default=True,
)
@click.option(
    "--http2-max-local-error-reset-streams",
    type=click.IntRange(min=0),
    default=1024,
    help="HTTP/2: streams the server may reset for a client's protocol errors before closing the connection.",
    show_default=True,
)
@click.option(
    "--http2-keep-alive-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="HTTP/2: send a PING after this many idle seconds (off by default).",
)
@click.option(
    "--http2-keep-alive-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    help="HTTP/2: close the connection if a PING is not answered within this many seconds.",
    show_default=True,
)
@click.option(
    "--http3-alt-svc",
    type=str,
    default=None,
    help='With --http3: the alt-svc header of HTTP/1.1 and HTTP/2 responses.  [default: h3=":PORT"; ma=86400]',
)
@click.option(
    "--no-http3-alt-svc",
    is_flag=True,
    default=False,
    help="With --http3: send no alt-svc header (clients then find HTTP/3 only through DNS or configuration).",
)
@click.option(
    "--http3-idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    help="HTTP/3: close a QUIC connection without any packet for this many seconds.",
    show_default=True,
)
@click.option(
    "--http3-keep-alive-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="HTTP/3: send a PING after this many idle seconds, to keep connections and NAT bindings open (default: off).",
)
@click.option(
    "--http3-max-concurrent-streams",
    type=click.IntRange(min=1, max=2**31 - 1),
    default=200,
    help="HTTP/3: most requests a client may have open on one connection.",
    show_default=True,
)
@click.option(
    "--http3-stream-receive-window",
    type=click.IntRange(min=1024, max=2**32 - 1),
    default=1024 * 1024,
    help="HTTP/3: bytes a client may send on one request before the app reads them.",
    show_default=True,
)
@click.option(
    "--http3-receive-window",
    type=click.IntRange(min=1024, max=2**32 - 1),
    default=4 * 1024 * 1024,
    help="HTTP/3: bytes a client may send on a connection before the app reads them.",
    show_default=True,
)
@click.option(
    "--http3-send-window",
    type=click.IntRange(min=1024, max=2**32 - 1),
    default=4 * 1024 * 1024,
    help="HTTP/3: response bytes buffered per connection before the app's send() waits.",
    show_default=True,
)
@click.option(
    "--http3-max-udp-payload",
    type=click.IntRange(min=1200, max=65527),
    default=1472,
    help="HTTP/3: largest UDP payload accepted (QUIC max_udp_payload_size).",
    show_default=True,
)
@click.option(
    "--http3-congestion",
    type=click.Choice(["cubic", "newreno", "bbr"]),
    default="cubic",
    help="HTTP/3: congestion controller.",
    show_default=True,
)
@click.option(
    "--http3-0rtt/--no-http3-0rtt",
    default=False,
    help="HTTP/3: accept requests in 0-RTT data, which an attacker can replay (RFC 9001 section 9.2).",
    show_default=True,
)
def main(app: str, **kwargs: Any) -> None:
    """Serve the ASGI application APP, given as `module:attribute`."""
    log_config = kwargs.pop("log_config")
    run(
        app,
        log_config=LOGGING_CONFIG if log_config is None else log_config,
        reload_dirs=list(kwargs.pop("reload_dirs")) or None,
        reload_includes=list(kwargs.pop("reload_includes")) or None,
        reload_excludes=list(kwargs.pop("reload_excludes")) or None,
        **kwargs,
    )
