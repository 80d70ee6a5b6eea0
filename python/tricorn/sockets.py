"""Create the listening sockets handed to the native server, and announce them."""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
from typing import TYPE_CHECKING

from tricorn._ansi import style

if TYPE_CHECKING:
    from tricorn.config import Config

logger = logging.getLogger("tricorn.error")

UDS_PERMISSIONS = 0o666


def create_socket(config: Config) -> socket.socket:
    """Return a bound, listening, inheritable socket for `--uds`, `--fd` or `--host`/`--port`.

    Raises OSError when binding fails.
    """
    if config.uds is not None:
        sock = _bind_unix(config.uds)
    elif config.fd is not None:
        sock = _adopt_fd(config.fd)
    else:
        sock = _bind_tcp(config.host, config.port)
    try:
        sock.listen(config.backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _bind_unix(path: str) -> socket.socket:
    """Bind an AF_UNIX socket at `path`, replacing a stale socket file and keeping its permissions."""
    mode = UDS_PERMISSIONS
    if os.path.exists(path):
        status = os.stat(path)
        if stat.S_ISSOCK(status.st_mode):
            mode = stat.S_IMODE(status.st_mode)
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError:
        sock.close()
        raise
    return sock


def _adopt_fd(fd: int) -> socket.socket:
    """Wrap a duplicate of an inherited socket; the family and type are read from the socket itself."""
    return socket.socket(fileno=os.dup(fd))


def _bind_tcp(host: str, port: int) -> socket.socket:
    """Bind a TCP socket with SO_REUSEADDR; IPv6 when `host` contains a colon."""
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def create_udp_socket(tcp: socket.socket) -> socket.socket:
    """Return a UDP socket bound to the address of the TCP listener `tcp`, for HTTP/3.

    Raises OSError when binding fails, ValueError when `tcp` is not a TCP socket (HTTP/3 cannot
    share a unix socket).
    """
    if tcp.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("--http3 needs a TCP listener (--host and --port): QUIC runs over UDP")
    sock = socket.socket(tcp.family, socket.SOCK_DGRAM)
    try:
        if tcp.family == socket.AF_INET6:
            sock.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, tcp.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            )
        sock.bind(tcp.getsockname()[:2])
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _udp_socket_like(tcp: socket.socket) -> socket.socket:
    """An unbound UDP socket of the family (and IPv6-only setting) of the TCP listener `tcp`."""
    if tcp.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("--http3 needs a TCP listener (--host and --port): QUIC runs over UDP")
    sock = socket.socket(tcp.family, socket.SOCK_DGRAM)
    if tcp.family == socket.AF_INET6:
        v6only = tcp.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    return sock


class QuicSocketGroup:
    """One UDP socket per worker, in worker order, bound where a TCP listener listens, for HTTP/3.

    They form one SO_REUSEPORT group whose datagrams are steered by connection ID, so that every packet of a
    QUIC connection reaches the worker that accepted it (see docs/http3.md). The supervisor keeps them all
    open for the life of the server, so that a restarted worker takes over its predecessor's place in the group.
    """

    # Connection IDs carry the worker's index in one byte.
    MAX_WORKERS = 256

    def __init__(self, tcp: socket.socket, workers: int) -> None:
        if workers > self.MAX_WORKERS:
            raise ValueError(f"--http3 serves at most {self.MAX_WORKERS} workers")
        self.tcp = tcp
        self.sockets: list[socket.socket] = []
        try:
            while len(self.sockets) < workers:
                self._add()
            self.steer(workers)
        except OSError:
            self.close()
            raise

    def _add(self) -> None:
        sock = _udp_socket_like(self.tcp)
        self.sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(self.tcp.getsockname()[:2])
        sock.set_inheritable(True)

    def steer(self, workers: int) -> None:
        """Spread new connections over the first `workers` sockets (after a worker was added or removed)."""
        from tricorn._tricorn import steer_quic_by_connection_id

        steer_quic_by_connection_id(self.sockets[0].fileno(), workers)

    def for_worker(self, index: int) -> socket.socket:
        """The socket of worker `index`; a new worker (SIGTTIN) gets one added to the group."""
        while len(self.sockets) <= index:
            self._add()
        return self.sockets[index]

    def close(self) -> None:
        """Close the supervisor's copies."""
        for sock in self.sockets:
            sock.close()


def log_started_message(config: Config, sock: socket.socket) -> None:
    """Log `Tricorn running on ...` for the socket the server listens on."""
    if config.uds is not None:
        address_format, args = "unix socket %s", [config.uds]
        color_message = "Tricorn running on unix socket " + style("%s", bold=True) + " (Press CTRL+C to quit)"
    elif config.fd is not None:
        address_format, args = "socket %s", [sock.getsockname()]
        color_message = "Tricorn running on socket " + style("%s", bold=True) + " (Press CTRL+C to quit)"
    else:
        address_format = "%s://[%s]:%d" if ":" in config.host else "%s://%s:%d"
        args = ["https" if config.is_ssl else "http", config.host, sock.getsockname()[1]]
        color_message = "Tricorn running on " + style(address_format, bold=True) + " (Press CTRL+C to quit)"
    message = f"Tricorn running on {address_format} (Press CTRL+C to quit)"
    logger.info(message, *args, extra={"color_message": color_message})


class SupervisorSockets:
    """The sockets a supervisor binds once, before its first worker starts, and hands to every worker.

    Workers come and go (restarts, SIGHUP, recycling) while these stay open in the supervisor, so connections
    that arrive while no worker accepts wait in the backlog instead of being refused.
    """

    def __init__(self, listeners: list[socket.socket], quic: QuicSocketGroup | None = None) -> None:
        self.listeners = listeners
        self.quic = quic

    @classmethod
    def bind(cls, config: Config) -> SupervisorSockets:
        """Bind and announce every socket of `config`; exits with status 3 when binding fails."""
        listeners = [config.bind_socket()]
        if not config.http3:
            return cls(listeners)
        from tricorn.config import STARTUP_FAILURE

        try:
            quic = QuicSocketGroup(listeners[0], 1 if config.should_reload else config.workers)
        except (OSError, ValueError) as exc:
            logger.error("%s", exc)
            sys.exit(STARTUP_FAILURE)
        return cls(listeners, quic)

    def for_worker(self, index: int) -> list[socket.socket]:
        """The sockets worker `index` (0..N-1, inherited by its replacements) serves on: the shared listeners,
        and with HTTP/3 the worker's own UDP socket."""
        if self.quic is None:
            return self.listeners
        return [*self.listeners, self.quic.for_worker(index)]

    def workers_changed(self, workers: int) -> None:
        """The number of workers changed (SIGTTIN, SIGTTOU): spread new QUIC connections over that many."""
        if self.quic is not None:
            self.quic.steer(workers)

    def close(self) -> None:
        """Close the supervisor's copies (workers hold their own)."""
        for sock in self.listeners:
            sock.close()
        if self.quic is not None:
            self.quic.close()
