"""HTTP/3 over QUIC (RFC 9114, RFC 9000): ``--http3`` on the UDP port of the TLS listener, same certificate.

Clients: niquests (HTTP/3 through qh3) forced to HTTP/3 and discovering it through Alt-Svc (RFC 7838); httpx for
the Alt-Svc header of HTTP/1.1 and HTTP/2 responses; ``tests/h3client.py`` (aioquic) for everything that needs
control over streams; raw UDP sockets for garbage and handshakes that never complete.

The options come from ``tests.helpers`` (HTTP3, HTTP3_ALT_SVC, NO_HTTP3_ALT_SVC). With
``TRICORN_TEST_SERVER=hypercorn`` the file runs against ``hypercorn --quic-bind`` (the reference); tests of what
only tricorn offers, and of what hypercorn gets wrong, say so in their skip reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import ssl
import time
import uuid
from pathlib import Path

import httpx
import niquests
import pytest
from aioquic.h3.connection import ErrorCode

from tests.h3client import (
    QUIC_STREAM_LIMIT_ERROR,
    H3Client,
    H3Stream,
    h3_connect,
    h3_connect_many,
    initial_datagram,
    run,
    udp_exchange,
    udp_socket,
)
from tests.helpers import (
    HOST,
    HTTP3,
    HTTP3_ALT_SVC,
    IS_HYPERCORN,
    NO_HTTP3_ALT_SVC,
    ServerProcess,
    free_port,
    graceful_exit_codes,
    run_cli,
)
from tests.test_websocket_h2 import BINARY, CLOSE, TEXT, close_payload, parse_ws_frame, ws_frame

pytestmark = pytest.mark.timeout(30)

APP = "tests.apps.basic:app"
tricorn_only = pytest.mark.skipif(IS_HYPERCORN, reason="tricorn option (hypercorn has no equivalent)")


# ---------------------------------------------------------------------------------------------
# Servers and clients
# ---------------------------------------------------------------------------------------------
def h3_args(certs: Path, *extra: str) -> list[str]:
    return ["--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"), HTTP3, *extra]


def default_alt_svc(port: int) -> str:
    """The Alt-Svc value a server with HTTP/3 on ``port`` adds by default (hypercorn advertises one hour)."""
    return f'h3=":{port}"; ma={3600 if IS_HYPERCORN else 86400}'


def wait_h3(srv: ServerProcess, certs: Path, timeout: float = 10.0) -> ServerProcess:
    """Wait until the server answers an HTTP/3 GET (its TCP listener is up already).

    The probe completes its handshake and closes: a half-open one could hold up the server's shutdown.
    """

    async def probe() -> bool:
        try:  # a short idle timeout ends a handshake nobody answers, within aioquic's own connect()
            async with h3_connect(srv.port, certs / "ca.pem", timeout=3.0, idle_timeout=0.5) as client:
                return (await client.get("/", timeout=2.0)).status == 200
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            return False

    deadline = time.monotonic() + timeout
    while not run(probe(), timeout=5.0):
        if srv.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no HTTP/3 on UDP port {srv.port}\ncmd: {srv.cmd}\n{srv.output}")
        time.sleep(0.05)
    return srv


def start_h3(start_server, certs: Path, *extra: str, app: str = APP) -> ServerProcess:
    return wait_h3(start_server(app, *h3_args(certs, *extra)), certs)


@pytest.fixture(scope="module")
def h3_server(tls_certs):
    """One server with HTTP/3 for the basic app, shared by the module."""
    with ServerProcess(APP, *h3_args(tls_certs)) as srv:
        srv.wait_ready()
        yield wait_h3(srv, tls_certs)


@pytest.fixture
def ca(tls_certs) -> Path:
    return tls_certs / "ca.pem"


def url(srv: ServerProcess, path: str = "/") -> str:
    return f"https://{HOST}:{srv.port}{path}"


def niquests_h3(**kwargs) -> niquests.Session:
    """A niquests session that may only speak HTTP/3."""
    return niquests.Session(disable_http1=True, disable_http2=True, **kwargs)


def key() -> str:
    return uuid.uuid4().hex


async def result(client: H3Client, name: str):
    """RESULTS[name] of the basic app, read over HTTP/3 on ``client``."""
    return json.loads((await client.get(f"/results?key={name}")).body)["value"]


async def wait_result(client: H3Client, name: str, expected, timeout: float = 5.0) -> float:
    """Poll RESULTS[name] until it equals ``expected``; returns how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    value = None
    while loop.time() - start < timeout:
        value = await result(client, name)
        if value == expected:
            return loop.time() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"RESULTS[{name}] is {value!r}, not {expected!r}, after {timeout}s")


# ---------------------------------------------------------------------------------------------
# niquests (qh3): forced HTTP/3, and HTTP/3 found through Alt-Svc
# ---------------------------------------------------------------------------------------------
def test_niquests_forced_http3_get_scope(h3_server, ca):
    with niquests_h3() as session:
        resp = session.get(url(h3_server, "/some/path?a=1"), verify=str(ca), timeout=5)
    assert resp.status_code == 200
    assert resp.http_version == 30
    scope = resp.json()
    assert scope["type"] == "http"
    assert scope["http_version"] == "3"
    assert scope["scheme"] == "https"
    assert scope["method"] == "GET"
    assert scope["path"] == "/some/path"
    assert scope["query_string"] == "a=1"
    assert scope["server"] == [HOST, h3_server.port]
    assert scope["client"][0] == HOST
    assert isinstance(scope["client"][1], int) and scope["client"][1] > 0
    # ASGI: pseudo-headers are removed, :authority becomes the host header.
    names = [name for name, _ in scope["headers"]]
    assert not any(name.startswith(":") for name in names), names
    assert ["host", f"{HOST}:{h3_server.port}"] in scope["headers"]


def test_niquests_forced_http3_post(h3_server, ca):
    body = random.Random(1).randbytes(100_000)
    with niquests_h3() as session:
        resp = session.post(url(h3_server, "/echo"), data=body, verify=str(ca), timeout=5)
        assert resp.status_code == 200
        assert resp.http_version == 30
        assert resp.content == body
        # A second request reuses the QUIC connection.
        again = session.get(url(h3_server, "/"), verify=str(ca), timeout=5)
        assert again.http_version == 30 and again.json()["http_version"] == "3"


def test_niquests_discovers_http3_through_alt_svc(h3_server, ca):
    """A default niquests session starts on TCP (HTTP/2 by ALPN), reads Alt-Svc, and moves to HTTP/3."""
    with niquests.Session() as session:
        first = session.get(url(h3_server), verify=str(ca), timeout=5)
        assert first.http_version == 20
        assert first.json()["http_version"] == "2"
        assert first.headers["alt-svc"] == default_alt_svc(h3_server.port)
        # niquests keeps what it learnt from Alt-Svc per origin: (host, port) -> (alt host, alt port).
        assert session.quic_cache_layer[(HOST, h3_server.port)] == ("", h3_server.port)
        second = session.get(url(h3_server), verify=str(ca), timeout=5)
        assert second.http_version == 30
        assert second.json()["http_version"] == "3"


# ---------------------------------------------------------------------------------------------
# Alt-Svc on HTTP/1.1 and HTTP/2 responses (RFC 7838)
# ---------------------------------------------------------------------------------------------
def tcp_get(srv: ServerProcess, certs: Path, http2: bool) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with httpx.Client(verify=ctx, http1=not http2, http2=http2, timeout=5) as client:
        resp = client.get(url(srv))
    assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    return resp


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_alt_svc_default(h3_server, tls_certs, http2):
    resp = tcp_get(h3_server, tls_certs, http2)
    assert resp.headers.get_list("alt-svc") == [default_alt_svc(h3_server.port)]


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_no_alt_svc_without_http3(start_server, tls_certs, http2):
    srv = start_server(APP, *h3_args(tls_certs)[:-1])
    assert "alt-svc" not in tcp_get(srv, tls_certs, http2).headers


def test_alt_svc_custom_value(start_server, tls_certs):
    value = 'h3=":4433"; ma=60'
    srv = start_h3(start_server, tls_certs, HTTP3_ALT_SVC, value)
    for http2 in (False, True):
        assert tcp_get(srv, tls_certs, http2).headers.get_list("alt-svc") == [value]


@tricorn_only
def test_alt_svc_turned_off(start_server, tls_certs):
    srv = start_h3(start_server, tls_certs, NO_HTTP3_ALT_SVC)
    for http2 in (False, True):
        assert "alt-svc" not in tcp_get(srv, tls_certs, http2).headers
    with niquests_h3() as session:  # HTTP/3 itself is still served
        assert session.get(url(srv), verify=str(tls_certs / "ca.pem"), timeout=5).http_version == 30


# ---------------------------------------------------------------------------------------------
# aioquic: bodies, streams, resets
# ---------------------------------------------------------------------------------------------
def test_streamed_post_in_chunks_with_pauses(h3_server, ca):
    chunks = [bytes([65 + i]) * (10_000 + i) for i in range(8)]

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            resp = await client.request("POST", "/echo", chunks=chunks, pause=0.05)
            assert resp.status == 200
            assert bytes(resp.body) == b"".join(chunks)
            # The app saw the body as it came, in several messages.
            assert int(resp.header("x-messages")) > 1

    run(main())


def test_request_and_response_stream_both_ways(h3_server, ca):
    """Each chunk comes back before the next is sent: neither side buffers the whole body."""

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            stream_id = client.send_request("POST", "/echo-stream", body=None)
            expected = b""
            for i in range(5):
                piece = f"chunk-{i};".encode() * 100
                client.send_data(stream_id, piece)
                expected += piece
                stream = await client.body_at_least(stream_id, len(expected), timeout=5)
                assert bytes(stream.body) == expected, f"chunk {i}"
            client.send_data(stream_id, b"", end_stream=True)
            resp = await client.response(stream_id)
            assert resp.status == 200 and bytes(resp.body) == expected

    run(main())


def test_ten_mib_response_intact(h3_server, ca):
    size = 10 * 1024 * 1024
    expected = hashlib.sha256(random.Random(7).randbytes(size)).hexdigest()

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            resp = await client.get(f"/random?size={size}&seed=7", timeout=20)
            assert resp.status == 200
            assert resp.header("content-length") == str(size)
            assert len(resp.body) == size
            assert hashlib.sha256(resp.body).hexdigest() == expected

    run(main(), timeout=25)


def test_large_request_body_intact(h3_server, ca):
    body = random.Random(3).randbytes(4 * 1024 * 1024)

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            resp = await client.request("POST", "/echo", body=body, timeout=20)
            assert resp.status == 200
            assert hashlib.sha256(resp.body).digest() == hashlib.sha256(body).digest()

    run(main(), timeout=25)


def test_hundred_concurrent_streams_on_one_connection(h3_server, ca):
    name = key()

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            assert client.peer_max_bidi_streams() >= 100
            start = asyncio.get_running_loop().time()
            responses = await client.concurrent([f"/hold?key={name}&seconds=1"] * 100)
            elapsed = asyncio.get_running_loop().time() - start
            assert [r.status for r in responses] == [200] * 100
            assert all(bytes(r.body) == b"held" for r in responses)
            assert len({r.stream_id for r in responses}) == 100
            # All 100 were inside the app at once (one after another would take 100 s).
            assert await result(client, name + ":max") == 100
            assert elapsed < 6, elapsed

    run(main(), timeout=20)


def test_head_and_bodiless_statuses(h3_server, ca):
    # niquests for HEAD: aioquic's H3Connection checks content-length against the DATA it receives and closes
    # the connection on a HEAD response (which has a content-length and no body, RFC 9110 §9.3.2).
    with niquests_h3() as session:
        head = session.head(url(h3_server, "/head"), verify=str(ca), timeout=5)
        assert head.http_version == 30
        assert head.status_code == 200 and head.headers["content-length"] == "5" and head.content == b""

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            for code in (204, 304):
                resp = await client.get(f"/status?code={code}")
                assert resp.status == code and resp.body == b""

    run(main())


@pytest.mark.skipif(
    IS_HYPERCORN,
    reason="hypercorn's HTTP/3 500 response carries `connection: close`, a connection-specific field that makes "
    "it malformed (RFC 9114 §4.2); aioquic closes the connection with H3_MESSAGE_ERROR",
)
def test_app_exception_is_500_and_connection_survives(h3_server, ca):
    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            assert (await client.get("/raise-before")).status == 500
            assert (await client.get("/")).status == 200

    run(main())


@pytest.mark.skipif(
    IS_HYPERCORN,
    reason="hypercorn sends each http.response.trailers message (more_trailers) as its own HEADERS frame; "
    "HTTP/3 allows one trailer section (RFC 9114 §4.1), aioquic refuses the second and the stream never ends",
)
def test_response_trailers(start_server, tls_certs):
    """A trailer section after the body (RFC 9114 §4.1), asked for as gRPC does (``te: trailers``)."""
    srv = start_h3(start_server, tls_certs, app="tests.apps.trailers:app")

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem") as client:
            resp = await client.request("GET", "/", headers=[("te", "trailers")])
            assert resp.status == 200
            assert bytes(resp.body) == b"part one, part two"
            assert resp.trailer("grpc-status") == "0"
            assert resp.trailer("grpc-message") == "ok"

    run(main())


@pytest.mark.skipif(
    IS_HYPERCORN,
    reason="hypercorn's HTTP/3 ignores RESET_STREAM (protocol/h3.py handles only HEADERS and DATA): the app waits "
    "in receive() until the connection ends",
)
def test_reset_while_app_reads_body_gives_prompt_disconnect(h3_server, ca):
    """RESET_STREAM + STOP_SENDING mid-body: the app's receive() gives http.disconnect at once, and the
    connection's other requests (one in flight, one after) are unaffected."""
    name = key()

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            other = client.send_request("GET", f"/hold?key={key()}&seconds=1")
            stream_id = client.send_request("POST", f"/wait-disconnect?key={name}", body=None)
            client.send_data(stream_id, b"first part of the body")
            await wait_result(client, name, "waiting:http.request")
            client.reset(stream_id)
            assert await wait_result(client, name, "got:http.disconnect", timeout=5) < 1.0
            assert (await client.response(other)).status == 200
            assert (await client.get("/")).status == 200

    run(main())


def test_reset_while_app_sends_frees_the_app(h3_server, ca):
    """STOP_SENDING during a large response: the app's send() stops blocking (it fails or returns) instead of
    waiting forever for flow-control credit, and the connection stays usable."""
    name = key()
    total = 200 * 1024 * 1024

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            stream_id = client.send_request("GET", f"/bp-send?key={name}&total={total}")
            stream = client.streams[stream_id]
            await client.wait_for(lambda: len(stream.body) > 100_000, 5.0, "the start of the body")
            client.reset(stream_id)
            loop = asyncio.get_running_loop()
            start = loop.time()
            while await result(client, name + ":done") is None:
                assert loop.time() - start < 5, "the app is still sending 5 s after the reset"
                await asyncio.sleep(0.05)
            assert (await client.get("/")).status == 200

    run(main(), timeout=15)


@pytest.mark.skipif(
    IS_HYPERCORN,
    reason="hypercorn: the app's response to a stream the client has reset raises in aioquic ('Cannot send data "
    "on a finished stream') and the exception ends hypercorn's UDPServer task, so HTTP/3 stops answering on "
    "every connection (TCP goes on) until a restart",
)
def test_requests_cancelled_before_the_response_leave_the_server_healthy(h3_server, ca):
    """Clients (and load tools on timeout) cancel requests the app is still working on; when the app responds
    later, the responses are dropped and nothing else is affected."""

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            cancelled = [client.send_request("GET", "/sleep?seconds=0.3") for _ in range(5)]
            await asyncio.sleep(0.05)
            for stream_id in cancelled:
                client.reset(stream_id)
            await asyncio.sleep(0.5)  # the app has answered them all by now
            assert (await client.get("/", timeout=3)).status == 200
        async with h3_connect(h3_server.port, ca) as fresh:
            assert (await fresh.get("/", timeout=3)).status == 200

    run(main())


# ---------------------------------------------------------------------------------------------
# Connections: many, migrating
# ---------------------------------------------------------------------------------------------
def test_many_connections(h3_server, ca):
    async def main():
        async with h3_connect_many(h3_server.port, ca, 50) as clients:
            responses = await asyncio.gather(*(c.get("/") for c in clients))
            assert [r.status for r in responses] == [200] * 50
            ports = {json.loads(r.body)["client"][1] for r in responses}
            assert len(ports) == 50

    run(main(), timeout=20)


def test_connection_survives_client_port_change(h3_server, ca):
    """NAT rebinding (RFC 9000 §9.3): the client's address changes mid-connection; the server validates the
    new path and goes on serving the same connection."""

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            assert (await client.get("/")).status == 200
            port = client.local_port
            await client.rebind()
            assert client.local_port != port
            for _ in range(3):
                assert (await client.get("/", timeout=5)).status == 200

    run(main())


# ---------------------------------------------------------------------------------------------
# Misbehaving peers
# ---------------------------------------------------------------------------------------------
def test_garbage_datagrams(h3_server, ca):
    rng = random.Random(5)
    port = h3_server.port
    # A long header with a version reserved to force version negotiation (0x?a?a?a?a, RFC 9000 §15), padded to
    # 1200 bytes: the server answers with Version Negotiation (version 0) listing its versions (RFC 9000 §6).
    unknown_version = bytes([0xC0]) + b"\x1a\x2a\x3a\x4a" + b"\x08" + b"D" * 8 + b"\x08" + b"S" * 8
    unknown_version += b"\x00" * (1200 - len(unknown_version))
    replies = udp_exchange(port, unknown_version, wait=1.0)
    assert replies, "no Version Negotiation for an unknown version"
    assert replies[0][0] & 0x80 and replies[0][1:5] == b"\x00\x00\x00\x00"
    assert b"\x00\x00\x00\x01" in replies[0][5:], "QUIC version 1 is not offered"
    # An Initial whose protected payload is corrupted, then plain noise of every size, fast.
    initial = bytearray(initial_datagram(ca, port))
    for i in range(len(initial) - 200, len(initial) - 100):
        initial[i] ^= 0x5A
    with udp_socket() as sock:
        sock.sendto(bytes(initial), (HOST, port))
        for size in [1, 2, 20, 100, 1199, 1200, 1500, 9000] * 50:
            sock.sendto(rng.randbytes(size), (HOST, port))
        for _ in range(200):  # short-header packets for connections that do not exist
            sock.sendto(bytes([0x40 | rng.randrange(64)]) + rng.randbytes(rng.randrange(20, 1300)), (HOST, port))
    assert h3_server.proc.poll() is None

    async def main():
        async with h3_connect(port, ca) as client:
            assert (await client.get("/")).status == 200

    run(main())


def test_handshakes_that_never_complete(h3_server, ca):
    """50 clients send a real Initial and then nothing; meanwhile other clients connect and are served."""
    port = h3_server.port
    silent = [udp_socket(timeout=2.0) for _ in range(50)]
    try:
        for sock in silent:
            sock.sendto(initial_datagram(ca, port), (HOST, port))
        # The server took them for real handshakes (it answers with its Initial/Handshake flight).
        assert silent[0].recv(65536)[0] & 0x80

        async def main():
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with h3_connect_many(port, ca, 10) as clients:
                responses = await asyncio.gather(*(c.get("/") for c in clients))
            assert [r.status for r in responses] == [200] * 10
            assert loop.time() - start < 3

        run(main())
    finally:
        for sock in silent:
            sock.close()


def test_more_requests_than_the_stream_limit_wait_for_credit(h3_server, ca):
    """Twice as many requests as the server allows streams: the client waits for MAX_STREAMS (RFC 9000 §4.6),
    never more than the limit are in the app at once, and all complete."""
    name = key()

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            limit = client.peer_max_bidi_streams()
            responses = await client.concurrent([f"/hold?key={name}&seconds=0.3"] * (2 * limit), timeout=15)
            assert [r.status for r in responses] == [200] * (2 * limit)
            assert 0 < await result(client, name + ":max") <= limit

    run(main(), timeout=25)


def test_client_exceeding_the_stream_limit_is_closed(h3_server, ca):
    """Stream IDs beyond the advertised limit are a STREAM_LIMIT_ERROR (RFC 9000 §4.6): that connection is
    closed, the server and its other connections go on."""

    async def main():
        async with h3_connect(h3_server.port, ca) as bystander, h3_connect(h3_server.port, ca) as rogue:
            limit = rogue.peer_max_bidi_streams()
            rogue.ignore_stream_limit()
            for _ in range(limit + 10):
                rogue.send_request("POST", f"/hold?key={key()}&seconds=2", body=None)
            closed = await rogue.closed(timeout=5)
            assert closed.error_code == QUIC_STREAM_LIMIT_ERROR, closed
            assert (await bystander.get("/")).status == 200
        async with h3_connect(h3_server.port, ca) as fresh:
            assert (await fresh.get("/")).status == 200

    run(main(), timeout=15)


# ---------------------------------------------------------------------------------------------
# Extended CONNECT: WebSocket over HTTP/3 (RFC 9220)
# ---------------------------------------------------------------------------------------------
async def websocket_echo_over_http3(client) -> None:
    """RFC 9220: a WebSocket on an extended CONNECT stream, text and binary echoed, then a clean close."""
    stream = await client.extended_connect("/echo", headers=[("sec-websocket-version", "13")])
    assert stream.status == 200, stream.headers
    frames = bytearray()

    async def next_frame():
        while (frame := parse_ws_frame(frames)) is None:
            await client.wait_for(lambda: stream.body or stream.done, 5.0, "a WebSocket frame")
            assert stream.body, "the stream ended"
            frames.extend(stream.body)
            stream.body.clear()
        return frame

    for opcode, payload in ((TEXT, "héllo".encode()), (BINARY, b"\x00\x01\x02")):
        client.send_data(stream.stream_id, ws_frame(opcode, payload))
        assert await next_frame() == (True, opcode, payload)
    client.send_data(stream.stream_id, ws_frame(CLOSE, close_payload(1000)))
    assert (await next_frame())[1] == CLOSE


async def refused_websocket_over_http3(client) -> None:
    """An extended CONNECT to a server that does not advertise it is refused on its stream or connection."""
    stream_id = client.send_request(
        "CONNECT", "/echo", [("sec-websocket-version", "13")], body=None, protocol="websocket"
    )
    await client.wait_for(lambda: client.terminated is not None or client.streams[stream_id].done, 5.0, "the refusal")
    assert client.streams[stream_id].status != 200


def test_websocket_over_http3_and_the_endpoint_after_it(start_server, tls_certs):
    """Where the server advertises extended CONNECT (hypercorn), a WebSocket over HTTP/3 works; where it does
    not (tricorn: the h3 crate cannot carry `:protocol websocket` yet, hyperium/h3#236), the attempt is refused.
    Either way, HTTP/3 requests keep being served on the endpoint afterwards, on other connections and new ones
    (one WebSocket over HTTP/3 left hypercorn's QUIC listener dead)."""
    srv = start_h3(start_server, tls_certs, app="tests.apps.ws:app")

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem") as bystander:
            async with h3_connect(srv.port, tls_certs / "ca.pem") as client:
                advertised = await client.supports_extended_connect()
                assert advertised == IS_HYPERCORN
                if advertised:
                    await websocket_echo_over_http3(client)
                else:
                    await refused_websocket_over_http3(client)
            assert (await bystander.get("/http")).status == 200
        async with h3_connect(srv.port, tls_certs / "ca.pem") as fresh:
            assert (await fresh.get("/http")).status == 200

    run(main())


# ---------------------------------------------------------------------------------------------
# Shutdown, workers
# ---------------------------------------------------------------------------------------------
def test_graceful_shutdown_lets_requests_in_flight_finish(start_server, tls_certs):
    srv = start_h3(start_server, tls_certs, "--timeout-graceful-shutdown", "5")

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem") as client:
            stream_id = client.send_request("GET", "/sleep?seconds=1.5&key=h3")
            await asyncio.to_thread(srv.wait_output, "SLEEP-STARTED h3")
            srv.send_signal(signal.SIGTERM)
            resp = await client.response(stream_id, timeout=5)
            assert resp.status == 200 and bytes(resp.body) == b"slept"

    run(main())
    assert srv.wait_exit(10) in graceful_exit_codes()


@pytest.mark.skipif(
    IS_HYPERCORN,
    reason="hypercorn exits without closing its QUIC connections (no CONNECTION_CLOSE): clients find out only "
    "at their idle timeout",
)
def test_shutdown_closes_idle_connections(start_server, tls_certs):
    """SIGTERM with an idle HTTP/3 connection open: the server closes it with H3_NO_ERROR and exits at once."""
    srv = start_h3(start_server, tls_certs)

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem") as client:
            assert (await client.get("/")).status == 200
            srv.send_signal(signal.SIGTERM)
            closed = await client.closed(timeout=3)
            assert closed.error_code == ErrorCode.H3_NO_ERROR, closed

    run(main())
    assert srv.wait_exit(3) in graceful_exit_codes()


def test_shutdown_is_not_held_up_by_a_handshake_that_never_completes(start_server, tls_certs):
    """A client that sent an Initial and went silent has no request in flight: SIGTERM does not wait for it
    (hypercorn always waits its 3 s graceful timeout, hence the bound)."""
    srv = start_h3(start_server, tls_certs)
    with udp_socket() as sock:
        sock.sendto(initial_datagram(tls_certs / "ca.pem", srv.port), (HOST, srv.port))
        assert sock.recv(65536)  # the server's first flight: the handshake is under way
        start = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        code = srv.wait_exit(8)
    assert time.monotonic() - start < 5
    assert code in graceful_exit_codes()


@pytest.mark.skipif(
    IS_HYPERCORN,
    reason="hypercorn's workers share one UDP socket, so datagrams of one connection reach other workers "
    "(pgjones/hypercorn#114)",
)
def test_two_workers_keep_each_connection_on_one_worker(start_server, tls_certs):
    """With --workers 2, many connections (some changing their client port mid-way) all work: every
    connection's datagrams reach the worker that owns it."""
    srv = start_h3(start_server, tls_certs, "--workers", "2")

    async def main():
        async with h3_connect_many(srv.port, tls_certs / "ca.pem", 30) as clients:
            pids = set()
            for round_ in range(3):
                responses = await asyncio.gather(*(c.get("/pid", timeout=5) for c in clients))
                assert [r.status for r in responses] == [200] * len(clients)
                pids |= {json.loads(r.body)["pid"] for r in responses}
                if round_ < 2:
                    await asyncio.gather(*(c.rebind() for c in clients))
            assert len(pids) == 2, f"HTTP/3 served by {len(pids)} worker(s)"

    run(main(), timeout=25)


@tricorn_only
def test_workers_killed_or_added_keep_http3_serving(start_server, tls_certs):
    """A worker killed with SIGKILL is replaced on its own UDP socket: connections to the other worker go on,
    new connections are served; SIGTTIN adds a worker that serves HTTP/3 too."""
    srv = start_h3(start_server, tls_certs, "--workers", "2")

    async def pids_serving(clients) -> dict[int, int]:
        responses = await asyncio.gather(*(c.get("/pid", timeout=5) for c in clients))
        assert [r.status for r in responses] == [200] * len(clients)
        pids: dict[int, int] = {}
        for client, response in zip(clients, responses, strict=True):
            pids[id(client)] = json.loads(response.body)["pid"]
        return pids

    async def main():
        async with h3_connect_many(srv.port, tls_certs / "ca.pem", 12) as clients:
            owners = await pids_serving(clients)
            victim = min(owners.values())
            survivors = [c for c in clients if owners[id(c)] != victim]
            assert survivors, "both workers own connections"
            os.kill(victim, signal.SIGKILL)
            assert set((await pids_serving(survivors)).values()) == {owners[id(survivors[0])]}
        # The replacement takes over the killed worker's socket: every new connection is served.
        deadline = time.monotonic() + 10
        while True:
            async with h3_connect_many(srv.port, tls_certs / "ca.pem", 12) as fresh:
                served = set((await pids_serving(fresh)).values())
            if len(served) == 2 and victim not in served:
                break
            assert time.monotonic() < deadline, f"new connections served by {served}"
            await asyncio.sleep(0.3)
        srv.send_signal(signal.SIGTTIN)
        deadline = time.monotonic() + 10
        while True:
            async with h3_connect_many(srv.port, tls_certs / "ca.pem", 24) as fresh:
                served = set((await pids_serving(fresh)).values())
            if len(served) == 3:
                break
            assert time.monotonic() < deadline, f"after SIGTTIN, HTTP/3 served by {served}"
            await asyncio.sleep(0.3)

    run(main(), timeout=40)


@tricorn_only
def test_early_hints(h3_server, ca, tls_certs):
    """http.response.early_hint is offered on HTTP/3 and sent as a 103 (RFC 8297) before the final response;
    not offered over HTTP/1.1 or HTTP/2, whose server (hyper) cannot send informational responses."""

    async def main():
        async with h3_connect(h3_server.port, ca) as client:
            stream = await client.response(client.send_request("GET", "/early-hint"), timeout=5)
            assert stream.status == 200 and json.loads(stream.body) == {"offered": True}
            assert len(stream.interim) == 1
            hint = stream.interim[0]
            assert (b":status", b"103") in hint
            assert [value for name, value in hint if name == b"link"] == [
                b"</style.css>; rel=preload; as=style",
                b"</app.js>; rel=preload; as=script",
            ]

    run(main())
    context = ssl.create_default_context(cafile=str(tls_certs / "ca.pem"))
    for http2 in (False, True):
        with httpx.Client(http2=http2, verify=context, timeout=10) as client:
            response = client.get(f"https://{HOST}:{h3_server.port}/early-hint")
        assert response.json() == {"offered": False}


# ---------------------------------------------------------------------------------------------
# Knobs (tricorn's --http3-* options) and 0-RTT
# ---------------------------------------------------------------------------------------------
@tricorn_only
def test_max_concurrent_streams(start_server, tls_certs):
    srv = start_h3(start_server, tls_certs, "--http3-max-concurrent-streams", "10")
    name = key()

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem") as client:
            assert client.peer_max_bidi_streams() == 10
            responses = await client.concurrent([f"/hold?key={name}&seconds=0.3"] * 30)
            assert [r.status for r in responses] == [200] * 30
            assert await result(client, name + ":max") == 10

    run(main())


@tricorn_only
def test_idle_timeout(start_server, tls_certs):
    """QUIC's idle timeout is the smaller of both ends' (RFC 9000 §10.1): 1 s here, the client offering 10 s."""
    srv = start_h3(start_server, tls_certs, "--http3-idle-timeout", "1")

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem", idle_timeout=10) as client:
            assert (await client.get("/")).status == 200
            start = asyncio.get_running_loop().time()
            await client.closed(timeout=4)
            assert 0.8 < asyncio.get_running_loop().time() - start < 4

    run(main())


@tricorn_only
def test_keep_alive_interval_keeps_an_idle_connection(start_server, tls_certs):
    srv = start_h3(start_server, tls_certs, "--http3-idle-timeout", "1", "--http3-keep-alive-interval", "0.3")

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem", idle_timeout=10) as client:
            assert (await client.get("/")).status == 200
            await asyncio.sleep(2.5)  # well past the idle timeout: only the server's PINGs keep it open
            assert client.terminated is None
            assert (await client.get("/")).status == 200

    run(main())


@tricorn_only
@pytest.mark.parametrize("controller", ["cubic", "newreno", "bbr"])
def test_congestion_controllers(start_server, tls_certs, controller):
    srv = start_h3(start_server, tls_certs, "--http3-congestion", controller)
    size = 2 * 1024 * 1024

    async def main():
        async with h3_connect(srv.port, tls_certs / "ca.pem") as client:
            resp = await client.get(f"/random?size={size}&seed=2")
            assert resp.status == 200 and bytes(resp.body) == random.Random(2).randbytes(size)

    run(main())


async def session_ticket(port: int, ca: Path) -> list:
    """Session tickets the server issues on a first connection (RFC 8446 §4.6.1)."""
    tickets: list = []
    async with h3_connect(port, ca, session_ticket_handler=tickets.append) as client:
        assert (await client.get("/")).status == 200
        with contextlib.suppress(TimeoutError):
            await client.wait_for(lambda: tickets, 1.0, "a session ticket")
    return tickets


async def zero_rtt_get(port: int, ca: Path, tickets: list) -> tuple[H3Stream, bool]:
    """GET / sent as 0-RTT data if a ticket allows it; returns the response and whether the server took it."""
    async with h3_connect(port, ca, session_ticket=tickets[-1] if tickets else None, early_data=True) as client:
        stream_id = client.send_request("GET", "/")
        resp = await client.response(stream_id)
        return resp, (await client.handshake_completed()).early_data_accepted


def test_zero_rtt_is_refused_by_default(h3_server, ca):
    """0-RTT requests can be replayed (RFC 9001 §9.2): by default the server refuses early data, and the client
    sends its request again after the handshake."""

    async def main():
        tickets = await session_ticket(h3_server.port, ca)
        resp, accepted = await zero_rtt_get(h3_server.port, ca, tickets)
        assert resp.status == 200
        assert not accepted

    run(main())


@tricorn_only
def test_zero_rtt_opt_in(start_server, tls_certs):
    srv = start_h3(start_server, tls_certs, "--http3-0rtt")

    async def main():
        tickets = await session_ticket(srv.port, tls_certs / "ca.pem")
        assert tickets, "no session ticket"
        resp, accepted = await zero_rtt_get(srv.port, tls_certs / "ca.pem", tickets)
        assert resp.status == 200 and json.loads(resp.body)["http_version"] == "3"
        assert accepted

    run(main())


# ---------------------------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------------------------
@tricorn_only
def test_http3_without_certificate_is_refused():
    result = run_cli(APP, "--port", str(free_port()), HTTP3, timeout=15)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert len([line for line in output.splitlines() if "cert" in line.lower()]) == 1, output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 5, output


def test_http3_serves_while_tcp_still_works(h3_server, tls_certs):
    """HTTP/1.1 and HTTP/2 on TCP and HTTP/3 on UDP share the port and the certificate."""
    assert tcp_get(h3_server, tls_certs, http2=False).json()["http_version"] == "1.1"
    assert tcp_get(h3_server, tls_certs, http2=True).json()["http_version"] == "2"
    with niquests_h3() as session:
        resp = session.get(url(h3_server), verify=str(tls_certs / "ca.pem"), timeout=5)
        assert resp.json()["http_version"] == "3"
