"""Type stubs for the native module `tricorn._tricorn` (see docs/architecture.md)."""

import asyncio
from collections.abc import Callable, Generator
from typing import Any, final

__version__: str
# How the extension was compiled, e.g. "wheel profile, PGO" (bench/pgo.py).
BUILD: str

@final
class NativeServer:
    """HTTP server driven from the Python event loop thread through `fileno()` / `drive()`.

    `settings` keys: root_path (str), default_headers (list[tuple[bytes, bytes]]), date_header (bool),
    timeout_keep_alive, timeout_header_read, timeout_body_read, timeout_send, timeout_tls_handshake (float,
    s; 0 disables all but the first), limit_concurrency, limit_connections, limit_request_body,
    h1_max_head_size (int | None),
    access_log (bool), access_log_format (str | None), access_logger, error_logger (logging.Logger),
    access_log_handler (logging.Handler | None: the access handler whose stream default lines may be written
    to directly), http_phrases (dict[int, str]: reason phrases),
    proxy_headers (bool), forwarded_allow_ips (list[str]), state (dict), reset_contextvars (bool), http
    ("auto" | "h1" | "h2"), http2 (dict), tls (dict | None), ws (bool), ws_settings (dict), http3 (dict | None:
    the `--http3-*` knobs and worker_tag), alt_svc (str | None: None derives it from the UDP port, "" turns it
    off).
    """

    def __init__(
        self,
        app: Callable[..., Any],
        event_loop: asyncio.AbstractEventLoop,
        settings: dict[str, Any],
    ) -> None: ...
    def listen(self, fd: int) -> None:
        """Adopt a duplicate of a bound, listening TCP or unix socket and accept on it."""
    def listen_quic(self, fd: int) -> None:
        """Adopt a duplicate of a bound UDP socket and serve HTTP/3 on it (needs `http3` and `tls`)."""
    def fileno(self) -> int:
        """The epoll fd to watch with `loop.add_reader`."""
    def drive(self) -> None:
        """Run ready I/O, timers and tasks; never blocks."""
    def stop_accepting(self) -> None:
        """Stop accepting; the open connections go on as before."""
    def shutdown(self) -> None:
        """Stop accepting; close idle connections, the others after their response."""
    def abort(self) -> None:
        """Close every connection now and cancel the application tasks."""
    @property
    def connections(self) -> int: ...
    @property
    def tasks(self) -> int: ...
    @property
    def total_requests(self) -> int: ...

def steer_quic_by_connection_id(fd: int, workers: int) -> None:
    """Steer the datagrams of the SO_REUSEPORT group of UDP socket `fd` to workers by connection ID."""

def first_step_call_soon(event_loop: asyncio.AbstractEventLoop, /) -> Callable[..., Any]:
    """`event_loop`'s `call_soon`, bound to it: the server runs its request tasks' first steps."""

@final
class Receive:
    """The ASGI `receive` callable of one request."""

    def __call__(self) -> Ready | asyncio.Future[dict[str, Any]]: ...

@final
class Send:
    """The ASGI `send` callable of one request."""

    def __call__(self, message: dict[str, Any], /) -> Done | asyncio.Future[None]: ...

@final
class AppCall:
    """One call of the ASGI application, the coroutine of a request's task (made by the server only).

    Its outcome goes to the request's `send`; an attribute it lacks is the application's coroutine's.
    """

    def send(self, value: Any, /) -> Any: ...
    def throw(self, exc: BaseException, /) -> Any: ...
    def close(self) -> None: ...
    def __await__(self) -> Generator[Any, Any]: ...
    def __iter__(self) -> AppCall: ...
    def __next__(self) -> Any: ...
    def __getattr__(self, name: str) -> Any: ...

@final
class Done:
    """An awaitable that is already done with `None`."""

    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Done: ...
    def __next__(self) -> None: ...

@final
class Ready:
    """An awaitable that is already done with a message."""

    def __await__(self) -> Generator[Any, None, dict[str, Any]]: ...
    def __iter__(self) -> Ready: ...
    def __next__(self) -> None: ...

class ConfigError(ValueError):
    """A setting the server cannot work with (a TLS file, a key that does not fit): one line for the user."""
