"""An HTTP/3 test client on aioquic's public API: ``aioquic.asyncio.connect`` with a ``QuicConnectionProtocol``
subclass driving an ``H3Connection`` (RFC 9114), trusting the development CA of the ``tls_certs`` fixture.

It records everything the server sends per stream (headers, body, trailers, RESET_STREAM, STOP_SENDING) and
lets a test send exactly what it needs: a body in chunks with pauses, N requests at once on one connection, a
stream reset mid-request, an extended CONNECT (RFC 9220), more streams than the server allows. Plus raw UDP
helpers for clients that never complete a handshake or send garbage.

Everything is asyncio; sync tests wrap a coroutine in ``run(coro, timeout)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, Setting
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)
from aioquic.tls import SessionTicket, SessionTicketHandler

from tests.helpers import HOST

T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]

# The name the development certificate is issued for (it also holds IP:127.0.0.1).
SERVER_NAME = "localhost"
# RFC 9114 §8.1: "the request is cancelled", the code a client resets an abandoned request with.
H3_REQUEST_CANCELLED = ErrorCode.H3_REQUEST_CANCELLED
# RFC 9000 §20.1.
QUIC_STREAM_LIMIT_ERROR = 0x4


def run(coro: Awaitable[T], timeout: float = 10.0) -> T:
    """Run ``coro`` on a fresh event loop, failing after ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@dataclass
class H3Stream:
    """What the server sent on one request stream."""

    stream_id: int
    headers: Headers | None = None
    trailers: Headers | None = None
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    interim: list[Headers] = field(default_factory=list)  # 1xx responses before the final one
    reset_code: int | None = None  # RESET_STREAM from the server
    stop_sending_code: int | None = None  # STOP_SENDING from the server

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    @property
    def status(self) -> int | None:
        value = self.header(":status")
        return int(value) if value is not None else None

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers or [] if k == key]

    def trailer(self, name: str) -> str | None:
        key = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.trailers or [] if k == key), None)


class ConnectionClosed(Exception):
    """The QUIC connection ended while a test was waiting on it."""

    def __init__(self, event: ConnectionTerminated):
        super().__init__(f"connection closed: error {event.error_code:#x} {event.reason_phrase!r}")
        self.event = event


class H3Client(QuicConnectionProtocol):
    """One HTTP/3 connection. Create it with ``h3_connect``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.streams: dict[int, H3Stream] = {}
        self.terminated: ConnectionTerminated | None = None
        self.handshake: HandshakeCompleted | None = None
        self.authority = f"{SERVER_NAME}:443"
        self._changed = asyncio.Event()

    # -- incoming -------------------------------------------------------------------------------
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, HandshakeCompleted):
            self.handshake = event
        elif isinstance(event, StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id].reset_code = event.error_code
        elif isinstance(event, StopSendingReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].stop_sending_code = event.error_code
        for h3_event in self.http.handle_event(event):
            stream = self.streams.get(getattr(h3_event, "stream_id", -1))
            if stream is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                # A second HEADERS frame after the final response is the trailer section (RFC 9114 §4.1);
                # interim (1xx) responses are kept aside when the final one arrives.
                if stream.headers is not None and not _is_interim(stream.headers):
                    stream.trailers = h3_event.headers
                else:
                    if stream.headers is not None:
                        stream.interim.append(stream.headers)
                    stream.headers = h3_event.headers
                stream.ended |= h3_event.stream_ended
            elif isinstance(h3_event, DataReceived):
                stream.body += h3_event.data
                stream.ended |= h3_event.stream_ended
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
        """Wait until ``predicate()`` is truthy; raises ConnectionClosed if the connection ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.terminated is not None:
                raise ConnectionClosed(self.terminated)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- outgoing -------------------------------------------------------------------------------
    def send_request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = b"",
        protocol: str | None = None,
    ) -> int:
        """Open a request stream and send its headers; ``body`` bytes end the stream, ``None`` leaves it open."""
        stream_id = self._quic.get_next_available_stream_id()
        fields: Headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
        ]
        if protocol is not None:
            fields.append((b":protocol", protocol.encode()))
        fields += [(k.lower().encode(), v.encode()) for k, v in headers]
        self.streams[stream_id] = H3Stream(stream_id)
        self.http.send_headers(stream_id, fields, end_stream=body == b"")
        if body:
            self.http.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.http.send_data(stream_id, data, end_stream)
        self.transmit()

    async def send_chunks(self, stream_id: int, chunks: Iterable[bytes], pause: float = 0.0) -> None:
        """Send each chunk in its own DATA frame, ``pause`` seconds apart, then end the stream."""
        for chunk in chunks:
            self.send_data(stream_id, chunk)
            if pause:
                await asyncio.sleep(pause)
        self.send_data(stream_id, b"", end_stream=True)

    def reset(self, stream_id: int, error_code: int = H3_REQUEST_CANCELLED) -> None:
        """Abandon a request: RESET_STREAM for our half and STOP_SENDING for the server's (RFC 9114 §4.1.1)."""
        self._quic.reset_stream(stream_id, error_code)
        self._quic.stop_stream(stream_id, error_code)
        self.transmit()

    # -- the path -------------------------------------------------------------------------------
    @property
    def local_port(self) -> int:
        return self._transport.get_extra_info("sockname")[1]

    async def rebind(self) -> None:
        """Go on from a new local UDP port, as after a NAT rebinding (RFC 9000 §9.3); the old socket is closed.

        Like ``aioquic.asyncio.connect``, the new socket is dual-stack IPv6, so the peer address keeps its form.
        """
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0, 0, 0))
        except OSError:
            sock.close()
            raise
        old = self._transport
        # The endpoint hands its transport to this protocol (connection_made): later datagrams use the new port.
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)
        old.close()

    # -- requests -------------------------------------------------------------------------------
    async def response(self, stream_id: int, timeout: float = 10.0) -> H3Stream:
        """Wait until the response on ``stream_id`` is complete (or reset by the server)."""
        stream = self.streams[stream_id]
        await self.wait_for(lambda: stream.done, timeout, f"the response on stream {stream_id}")
        return stream

    async def body_at_least(self, stream_id: int, size: int, timeout: float = 10.0) -> H3Stream:
        """Wait until ``size`` bytes of the response body have arrived on ``stream_id``."""
        stream = self.streams[stream_id]
        await self.wait_for(lambda: len(stream.body) >= size or stream.done, timeout, f"{size} bytes of body")
        return stream

    async def response_headers(self, stream_id: int, timeout: float = 10.0) -> H3Stream:
        stream = self.streams[stream_id]
        await self.wait_for(
            lambda: stream.done or (stream.headers is not None and not _is_interim(stream.headers)),
            timeout,
            f"response headers on stream {stream_id}",
        )
        return stream

    async def request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        chunks: Sequence[bytes] | None = None,
        pause: float = 0.0,
        timeout: float = 10.0,
    ) -> H3Stream:
        """One complete request; with ``chunks`` the body goes out one DATA frame per chunk, ``pause`` apart."""
        if chunks is None:
            stream_id = self.send_request(method, path, headers, body)
        else:
            stream_id = self.send_request(method, path, headers, body=None)
            await self.send_chunks(stream_id, chunks, pause)
        return await self.response(stream_id, timeout)

    async def get(self, path: str, timeout: float = 10.0) -> H3Stream:
        return await self.request("GET", path, timeout=timeout)

    async def concurrent(self, paths: Sequence[str], timeout: float = 10.0) -> list[H3Stream]:
        """GET every path at once, each on its own stream of this connection."""
        ids = [self.send_request("GET", path) for path in paths]
        return list(await asyncio.gather(*(self.response(i, timeout) for i in ids)))

    async def extended_connect(
        self, path: str, protocol: str = "websocket", headers: Iterable[tuple[str, str]] = (), timeout: float = 10.0
    ) -> H3Stream:
        """Open an RFC 9220 extended CONNECT stream (``:protocol``) and wait for the response headers.

        For WebSocket, RFC 9220 §3 points at RFC 8441 §4/§5: ``sec-websocket-version: 13`` and, after a 2xx
        response, RFC 6455 frames in the DATA frames of the stream.
        """
        stream_id = self.send_request("CONNECT", path, headers, body=None, protocol=protocol)
        return await self.response_headers(stream_id, timeout)

    # -- connection state -----------------------------------------------------------------------
    async def server_settings(self, timeout: float = 5.0) -> dict[int, int]:
        """The server's SETTINGS frame (RFC 9114 §7.2.4), once it has arrived."""
        return await self.wait_for(lambda: self.http.received_settings, timeout, "the server's SETTINGS")

    async def supports_extended_connect(self) -> bool:
        return (await self.server_settings()).get(Setting.ENABLE_CONNECT_PROTOCOL) == 1

    def peer_max_bidi_streams(self) -> int:
        """The server's current limit on bidirectional streams (RFC 9000 §4.6), from its transport
        parameters and MAX_STREAMS frames. aioquic keeps it on the connection without a public accessor."""
        return self._quic._remote_max_streams_bidi

    def ignore_stream_limit(self) -> None:
        """Misbehave: open new streams past the server's limit instead of waiting for MAX_STREAMS.

        aioquic has no public way to do this (it queues such streams until the server grants more), so this
        raises the limit it believes the server gave; the server then sees stream IDs it never allowed.
        """
        self._quic._remote_max_streams_bidi = 1 << 40

    async def handshake_completed(self, timeout: float = 5.0) -> HandshakeCompleted:
        """The handshake's outcome (ALPN, resumption, whether the server accepted 0-RTT data)."""
        return await self.wait_for(lambda: self.handshake, timeout, "the end of the handshake")

    async def closed(self, timeout: float = 5.0) -> ConnectionTerminated:
        """Wait for the server to close the connection; returns its CONNECTION_CLOSE (or idle timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.terminated is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"the connection is still open after {timeout}s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.terminated


def _is_interim(headers: Headers) -> bool:
    status = dict(headers).get(b":status", b"")
    return status.startswith(b"1")


def client_configuration(ca: Path, **options) -> QuicConfiguration:
    """A client configuration for HTTP/3 (ALPN ``h3``) that trusts ``ca`` (a PEM file) only."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=SERVER_NAME, **options)
    configuration.load_verify_locations(cafile=str(ca))
    return configuration


@contextlib.asynccontextmanager
async def h3_connect(
    port: int,
    ca: Path,
    host: str = HOST,
    timeout: float = 5.0,
    idle_timeout: float = 10.0,
    session_ticket: SessionTicket | None = None,
    session_ticket_handler: SessionTicketHandler | None = None,
    early_data: bool = False,
) -> AsyncIterator[H3Client]:
    """An HTTP/3 connection to ``host:port``, closed on exit.

    By default it is established (handshake bounded by ``timeout``). With a ``session_ticket`` from an earlier
    connection (collected by ``session_ticket_handler``) and ``early_data``, the client resumes the session and
    yields at once, so the first requests go out as 0-RTT data (RFC 9001 §4.6).
    """
    configuration = client_configuration(ca, idle_timeout=idle_timeout, session_ticket=session_ticket)
    async with contextlib.AsyncExitStack() as stack:
        opening = stack.enter_async_context(
            connect(
                host,
                port,
                configuration=configuration,
                create_protocol=H3Client,
                session_ticket_handler=session_ticket_handler,
                wait_connected=not early_data,
            )
        )
        client = await asyncio.wait_for(opening, timeout)
        assert isinstance(client, H3Client)
        client.authority = f"{SERVER_NAME}:{port}"
        yield client


@contextlib.asynccontextmanager
async def h3_connect_many(port: int, ca: Path, count: int, **kwargs) -> AsyncIterator[list[H3Client]]:
    """``count`` HTTP/3 connections opened at once; all closed at once on exit."""
    async with contextlib.AsyncExitStack() as stack:
        clients = await asyncio.gather(
            *(stack.enter_async_context(h3_connect(port, ca, **kwargs)) for _ in range(count))
        )
        try:
            yield list(clients)
        finally:
            # Start every CONNECTION_CLOSE now, so the draining periods (RFC 9000 §10.2) run side by side
            # while the exit stack waits for each connection in turn.
            for client in clients:
                client.close()


# ---------------------------------------------------------------------------------------------
# Raw UDP: handshakes that never complete, garbage
# ---------------------------------------------------------------------------------------------
def initial_datagram(ca: Path, port: int, host: str = HOST) -> bytes:
    """The first datagram of a genuine client handshake (a padded Initial with a ClientHello, RFC 9000 §14.1),
    made by a fresh aioquic connection that is then abandoned."""
    quic = QuicConnection(configuration=client_configuration(ca))
    quic.connect((host, port), now=0.0)
    datagrams = quic.datagrams_to_send(now=0.0)
    assert datagrams, "aioquic produced no Initial datagram"
    return datagrams[0][0]


def udp_socket(timeout: float = 1.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(timeout)
    return sock


def udp_exchange(port: int, datagram: bytes, wait: float = 1.0, host: str = HOST) -> list[bytes]:
    """Send one datagram from a fresh socket and collect whatever comes back within ``wait`` seconds."""
    replies = []
    with udp_socket(timeout=wait) as sock:
        sock.sendto(datagram, (host, port))
        with contextlib.suppress(TimeoutError):
            while True:
                replies.append(sock.recv(65536))
    return replies
