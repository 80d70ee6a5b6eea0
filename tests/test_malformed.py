"""Malformed and request-smuggling HTTP/1.1 requests (RFC 9112, RFC 9110): the catalogue.

Each row sends one malformed request with a valid request pipelined behind it on the same connection, then
reads until the server closes. The app (tests/apps/recorder.py) records every request it is handed, so a row
proves three things: the status of the answer, that the connection was closed, and that neither the bad
request (unless the row says so) nor the one sent behind it ever reached the application.

``expect`` is what tricorn does (and must keep doing); ``uvicorn`` records, as data, where uvicorn 0.54 with
httptools (its default parser) differs, measured with TRICORN_TEST_SERVER=uvicorn. Shapes that RFC 9112 lets a
server accept (a bare LF as line end, identical repeated Content-Length) are in ``TOLERATED`` with the reason.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

import pytest

from tests.helpers import HOST, IS_UVICORN, RawClient, ServerProcess

# The largest request body the "limited" server accepts (--limit-request-body).
BODY_LIMIT = 64
# How long a server that keeps the connection open is given before the row records "not closed".
IDLE_WAIT = 1.5


@dataclass(frozen=True)
class Outcome:
    """What a server did with a malformed request and the one pipelined behind it."""

    status: int | None  # the first response's status; None if the server answered nothing
    closed: bool = True  # the server closed the connection after it
    served: bool = False  # the request pipelined behind reached the application
    app_saw: bool = False  # the malformed request itself reached the application


@dataclass(frozen=True)
class Case:
    id: str
    rfc: str  # where the rule is
    request: bytes  # "@V" is replaced by the row's victim path, "@S" by its smuggled path
    expect: Outcome  # tricorn
    uvicorn: Outcome | None = None  # uvicorn (httptools), where it differs
    server: str = "default"  # "limited": started with --limit-request-body BODY_LIMIT
    note: str = ""

    def __str__(self) -> str:
        return self.id


def r400(**kw) -> Outcome:
    return Outcome(400, **kw)


# uvicorn outcomes seen again and again.
UV_SERVES = Outcome(200, closed=False, served=True, app_saw=True)  # accepted as if valid
UV_CLOSES_SILENTLY = Outcome(None, closed=True)  # connection dropped without an answer

H = b"Host: t\r\n"
GET = b"GET @V HTTP/1.1\r\n" + H
POST = b"POST @V HTTP/1.1\r\n" + H
TE = b"Transfer-Encoding: chunked\r\n"
BODY5 = b"5\r\nhello\r\n0\r\n\r\n"

CATALOGUE: list[Case] = [
    # ---- message body length: Content-Length (RFC 9112 §6.3, RFC 9110 §8.6) ----
    Case(
        "cl-differing-duplicates",
        "9112 §6.3",
        POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        r400(),
    ),
    Case("cl-differing-list", "9112 §6.3", POST + b"Content-Length: 5, 6\r\n\r\nhello!", r400()),
    Case("cl-non-numeric", "9110 §8.6", POST + b"Content-Length: abc\r\n\r\n", r400()),
    Case("cl-negative", "9110 §8.6", POST + b"Content-Length: -1\r\n\r\n", r400()),
    Case("cl-plus-sign", "9110 §8.6", POST + b"Content-Length: +5\r\n\r\nhello", r400()),
    Case("cl-hex", "9110 §8.6", POST + b"Content-Length: 0x5\r\n\r\nhello", r400()),
    Case("cl-empty", "9110 §8.6", POST + b"Content-Length: \r\n\r\n", r400()),
    Case("cl-inner-space", "9110 §8.6", POST + b"Content-Length: 1 0\r\n\r\nhellohello", r400()),
    Case("cl-overflow", "9110 §8.6", POST + b"Content-Length: 99999999999999999999999\r\n\r\n", r400()),
    # ---- Transfer-Encoding (RFC 9112 §6.1, §6.3, §7) ----
    # RFC 9112 §6.1 lets a server either reject these or frame the body by Transfer-Encoding alone, and
    # requires closing the connection either way; tricorn rejects them (hyper, which would frame by
    # Transfer-Encoding alone, drops Content-Length: src/length_field_watch.rs notices the field line).
    Case(
        "te-and-cl",
        "9112 §6.1",
        POST + b"Content-Length: 5\r\n" + TE + b"\r\n0\r\n\r\nGET @S HTTP/1.1\r\n" + H + b"\r\n",
        r400(),
    ),
    Case(
        "cl-and-te",
        "9112 §6.1",
        POST + TE + b"Content-Length: 40\r\n\r\n0\r\n\r\nGET @S HTTP/1.1\r\n" + H + b"\r\n",
        r400(),
    ),
    Case(
        "cl-lowercase-and-te",
        "9112 §6.1",
        POST + TE + b"content-length: 40\r\n\r\n0\r\n\r\nGET @S HTTP/1.1\r\n" + H + b"\r\n",
        r400(),
    ),
    Case(
        "te-gzip-only",
        "9112 §6.3",
        POST + b"Transfer-Encoding: gzip\r\n\r\n" + BODY5,
        r400(),
        uvicorn=Outcome(400, app_saw=True),
    ),
    Case("te-chunked-then-gzip", "9112 §6.3", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n" + BODY5, r400()),
    Case(
        "te-identity",
        "9112 §6.3",
        POST + b"Transfer-Encoding: identity\r\n\r\n" + BODY5,
        r400(),
        uvicorn=Outcome(400, app_saw=True),
    ),
    Case(
        "te-unknown-coding",
        "9112 §6.3",
        POST + b"Transfer-Encoding: xchunked\r\n\r\n" + BODY5,
        r400(),
        uvicorn=Outcome(400, app_saw=True),
    ),
    Case(
        "te-chunked-twice-list",
        "9112 §6.1",
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + BODY5,
        r400(),
    ),
    Case("te-chunked-twice-lines", "9112 §6.1", POST + TE + TE + b"\r\n" + BODY5, r400()),
    Case(
        "te-gzip-then-chunked",
        "9112 §6.1",
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + BODY5,
        Outcome(501),
        note="a coding tricorn does not decode: 501 Not Implemented",
        uvicorn=UV_SERVES,
    ),
    Case(
        "te-gzip-line-then-chunked-line",
        "9112 §6.1",
        POST + b"Transfer-Encoding: gzip\r\n" + TE + b"\r\n" + BODY5,
        Outcome(501),
        uvicorn=UV_SERVES,
    ),
    Case("te-chunked-vtab", "9110 §5.5", POST + b"Transfer-Encoding: chunked\x0b\r\n\r\n" + BODY5, r400()),
    Case(
        "te-chunked-quoted",
        "9112 §6.3",
        POST + b'Transfer-Encoding: "chunked"\r\n\r\n' + BODY5,
        r400(),
        uvicorn=Outcome(400, app_saw=True),
    ),
    Case(
        "te-chunked-param",
        "9112 §7",
        POST + b"Transfer-Encoding: chunked;q=1\r\n\r\n" + BODY5,
        r400(),
        uvicorn=Outcome(400, app_saw=True),
    ),
    Case(
        "te-in-http10",
        "9112 §6.1",
        b"POST @V HTTP/1.0\r\n" + H + TE + b"\r\n" + BODY5,
        r400(),
        note="HTTP/1.0 with Transfer-Encoding: the framing is faulty",
        uvicorn=Outcome(200, app_saw=True),
    ),
    Case("te-space-before-colon", "9112 §5.1", POST + b"Transfer-Encoding : chunked\r\n\r\n" + BODY5, r400()),
    Case("te-obs-fold", "9112 §5.2", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + BODY5, r400()),
    # ---- field syntax (RFC 9112 §2.2, §5; RFC 9110 §5.5) ----
    Case("obs-fold", "9112 §5.2", GET + b"X-A: one\r\n two\r\n\r\n", r400()),
    Case("obs-fold-tab", "9112 §5.2", GET + b"X-A: one\r\n\ttwo\r\n\r\n", r400()),
    Case("space-before-colon", "9112 §5.1", b"GET @V HTTP/1.1\r\nHost : t\r\n\r\n", r400()),
    Case("whitespace-before-first-field", "9112 §2.2", b"GET @V HTTP/1.1\r\n X-A: 1\r\n" + H + b"\r\n", r400()),
    Case("bare-cr-in-value", "9112 §2.2", GET + b"X-A: a\rb\r\n\r\n", r400()),
    Case("bare-cr-line-end", "9112 §2.2", GET + b"X-A: a\rX-B: b\r\n\r\n", r400()),
    Case("bare-cr-in-request-line", "9112 §2.2", b"GET /v\rx HTTP/1.1\r\n" + H + b"\r\n", r400()),
    Case("nul-in-value", "9110 §5.5", GET + b"X-A: a\x00b\r\n\r\n", r400()),
    Case("nul-in-name", "9110 §5.1", GET + b"X-\x00A: a\r\n\r\n", r400()),
    Case("ctl-in-value", "9110 §5.5", GET + b"X-A: a\x01b\r\n\r\n", r400()),
    Case("del-in-value", "9110 §5.5", GET + b"X-A: a\x7fb\r\n\r\n", r400()),
    Case("non-token-name", "9110 §5.1", GET + b"X(A): a\r\n\r\n", r400()),
    Case("space-in-name", "9110 §5.1", GET + b"X A: a\r\n\r\n", r400()),
    Case("empty-name", "9110 §5.1", GET + b": a\r\n\r\n", r400()),
    Case("no-colon", "9112 §5", GET + b"X-A\r\n\r\n", r400()),
    Case(
        "bare-lf-splits-value",
        "9112 §2.2",
        GET + b"X-A: a\nb\r\n\r\n",
        r400(),
        note="a bare LF ends the line (allowed), leaving a line with no colon",
    ),
    # ---- Host (RFC 9112 §3.2, §3.2.2; RFC 9110 §7.2) ----
    Case("host-missing", "9112 §3.2", b"GET @V HTTP/1.1\r\n\r\n", r400(), uvicorn=UV_SERVES),
    Case("host-duplicate", "9112 §3.2", GET + b"Host: u\r\n\r\n", r400(), uvicorn=UV_SERVES),
    Case(
        "host-duplicate-http10",
        "9112 §3.2",
        b"GET @V HTTP/1.0\r\n" + H + H + b"\r\n",
        r400(),
        uvicorn=Outcome(200, app_saw=True),
    ),
    Case("host-invalid", "9112 §3.2", b"GET @V HTTP/1.1\r\nHost: a b\r\n\r\n", r400(), uvicorn=UV_SERVES),
    Case("host-userinfo", "9110 §7.2", b"GET @V HTTP/1.1\r\nHost: user@t\r\n\r\n", r400(), uvicorn=UV_SERVES),
    Case("host-path", "9110 §7.2", b"GET @V HTTP/1.1\r\nHost: t/x\r\n\r\n", r400(), uvicorn=UV_SERVES),
    Case(
        "absolute-form-host-differs",
        "9110 §7.2",
        b"GET http://a.example@V HTTP/1.1\r\nHost: b.example\r\n\r\n",
        r400(),
        note="RFC 9110 §7.2: a client MUST send the target's authority as Host; a mismatch is rejected",
        uvicorn=UV_SERVES,
    ),
    Case("absolute-form-no-host", "9112 §3.2", b"GET http://t@V HTTP/1.1\r\n\r\n", r400(), uvicorn=UV_SERVES),
    # ---- request line (RFC 9112 §3) ----
    Case(
        "version-http2-on-h1",
        "9112 §2.3",
        b"GET @V HTTP/2.0\r\n" + H + b"\r\n",
        r400(),
        uvicorn=Outcome(200, app_saw=True),
    ),
    Case(
        "version-http12",
        "9110 §6.2",
        b"GET @V HTTP/1.2\r\n" + H + b"\r\n",
        r400(),
        note="httparse knows 1.0 and 1.1 only; no client sends 1.2",
    ),
    Case("version-lowercase", "9112 §2.3", b"GET @V http/1.1\r\n" + H + b"\r\n", r400()),
    Case("version-missing", "9112 §3", b"GET @V\r\n" + H + b"\r\n", r400(), uvicorn=Outcome(200, app_saw=True)),
    Case("method-non-token", "9112 §3.1", b"GE(T @V HTTP/1.1\r\n" + H + b"\r\n", r400()),
    Case("target-space", "9112 §3.2", b"GET /v x HTTP/1.1\r\n" + H + b"\r\n", r400()),
    Case("target-ctl", "9112 §3.2", b"GET /v\x01x HTTP/1.1\r\n" + H + b"\r\n", r400()),
    Case("target-empty", "9112 §3.2", b"GET  HTTP/1.1\r\n" + H + b"\r\n", r400()),
    Case(
        "asterisk-form-not-options",
        "9112 §3.2.4",
        b"GET * HTTP/1.1\r\n" + H + b"\r\n",
        r400(),
        uvicorn=Outcome(200, closed=False, served=True),
    ),
    Case("authority-form-not-connect", "9112 §3.2.3", b"GET t:80 HTTP/1.1\r\n" + H + b"\r\n", r400()),
    # ---- chunked transfer coding (RFC 9112 §7.1) ----
    Case(
        "chunk-size-overflow",
        "9112 §7.1",
        POST + TE + b"\r\n" + b"f" * 20 + b"\r\nhello\r\n0\r\n\r\n",
        r400(app_saw=True),
    ),
    Case("chunk-size-negative", "9112 §7.1", POST + TE + b"\r\n-5\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-size-0x", "9112 §7.1", POST + TE + b"\r\n0x5\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-size-leading-space", "9112 §7.1", POST + TE + b"\r\n 5\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-size-inner-space", "9112 §7.1", POST + TE + b"\r\n5 5\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-size-empty", "9112 §7.1", POST + TE + b"\r\n\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-size-not-hex", "9112 §7.1", POST + TE + b"\r\nzz\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case(
        "chunk-data-missing-crlf",
        "9112 §7.1",
        POST + TE + b"\r\n5\r\nhelloXX0\r\n\r\n",
        r400(app_saw=True),
    ),
    Case("chunk-size-bare-lf", "9112 §7.1", POST + TE + b"\r\n5\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-data-bare-lf", "9112 §7.1", POST + TE + b"\r\n5\r\nhello\n0\r\n\r\n", r400(app_saw=True)),
    Case("chunk-ext-bare-lf", "9112 §7.1.1", POST + TE + b"\r\n5;a\nb\r\nhello\r\n0\r\n\r\n", r400(app_saw=True)),
    Case(
        "chunk-ext-oversized",
        "9112 §7.1.1",
        POST + TE + b"\r\n5;" + b"a" * 70000 + b"\r\nhello\r\n0\r\n\r\n",
        r400(app_saw=True),
        note="chunk extensions are ignored, but not without bound",
        uvicorn=UV_SERVES,
    ),
    Case(
        "last-chunk-missing-crlf",
        "9112 §7.1",
        POST + TE + b"\r\n5\r\nhello\r\n0\r\nGET @S HTTP/1.1\r\n" + H + b"\r\n",
        r400(app_saw=True),
        note="a trailer line without a colon",
    ),
    # ---- limits (RFC 9110 §15.5.14, §15.5.15; RFC 6585 §5) ----
    Case(
        "uri-too-long",
        "9110 §15.5.15",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + H + b"\r\n",
        Outcome(414),
        uvicorn=Outcome(400),
    ),
    Case(
        "header-too-large", "6585 §5", GET + b"X-A: " + b"a" * 2_000_000 + b"\r\n\r\n", Outcome(431), uvicorn=UV_SERVES
    ),
    Case(
        "too-many-headers",
        "6585 §5",
        GET + b"".join(b"X-%d: a\r\n" % i for i in range(120)) + b"\r\n",
        Outcome(431),
        uvicorn=UV_SERVES,
    ),
    Case(
        "content-length-over-limit",
        "9110 §15.5.14",
        POST + b"Content-Length: %d\r\n\r\n" % (BODY_LIMIT + 1) + b"a" * (BODY_LIMIT + 1),
        Outcome(413),
        server="limited",
        uvicorn=UV_SERVES,
    ),
    Case(
        "chunked-over-limit",
        "9110 §15.5.14",
        POST + TE + b"\r\n" + b"%x\r\n" % (BODY_LIMIT + 1) + b"a" * (BODY_LIMIT + 1) + b"\r\n0\r\n\r\n",
        Outcome(413, app_saw=True),
        server="limited",
        note="the limit is checked while the chunked body streams: the app sees http.disconnect",
        uvicorn=UV_SERVES,
    ),
]

# Shapes RFC 9112 allows a server to accept; tricorn (hyper) does, and serves what follows them.
TOLERATED: list[Case] = [
    Case(
        "bare-lf-line-ends",
        "9112 §2.2",
        b"GET @V HTTP/1.1\nHost: t\n\n",
        Outcome(200, closed=False, served=True, app_saw=True),
        note="a recipient MAY recognize a single LF as a line terminator (start-line and fields only)",
        uvicorn=Outcome(400),
    ),
    Case(
        "cl-identical-duplicates",
        "9110 §8.6",
        POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        Outcome(200, closed=False, served=True, app_saw=True),
        note="identical values MAY be taken as one",
        uvicorn=Outcome(400),
    ),
    Case(
        "te-chunked-casing",
        "9112 §7",
        POST + b"Transfer-Encoding: ChUnKeD\r\n\r\n" + BODY5,
        Outcome(200, closed=False, served=True, app_saw=True),
        note="transfer-coding names are case-insensitive",
    ),
    Case(
        "chunk-size-trailing-space",
        "9112 §7.1.1",
        POST + TE + b"\r\n5 \r\nhello\r\n0\r\n\r\n",
        Outcome(200, closed=False, served=True, app_saw=True),
        note="BWS after the size; the chunk still ends at its CRLF, so no framing ambiguity",
        uvicorn=Outcome(400, app_saw=True),
    ),
    Case(
        "chunk-ext-ignored",
        "9112 §7.1.1",
        POST + TE + b"\r\n5;name=value;x\r\nhello\r\n0\r\n\r\n",
        Outcome(200, closed=False, served=True, app_saw=True),
        note="a recipient MUST ignore unrecognized chunk extensions",
    ),
    Case(
        "host-empty",
        "9112 §3.2",
        b"GET @V HTTP/1.1\r\nHost:\r\n\r\n",
        Outcome(200, closed=False, served=True, app_saw=True),
        note="an empty Host is what a client sends when the target has no authority",
    ),
]


# ---------------------------------------------------------------------------------------------
# Running a row
# ---------------------------------------------------------------------------------------------
def paths(case: Case) -> tuple[str, str]:
    return f"/v/{case.id}", f"/s/{case.id}"


def wire(case: Case) -> bytes:
    victim, smuggled = paths(case)
    first = case.request.replace(b"@V", victim.encode()).replace(b"@S", smuggled.encode())
    return first + f"GET {smuggled} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def read_all(sock: socket.socket, idle: float) -> tuple[bytes, bool]:
    """Everything the server sends, and whether it closed (else it stayed silent for ``idle`` seconds)."""
    data = b""
    sock.settimeout(idle)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


def first_status(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def seen(port: int) -> dict:
    with RawClient(port=port) as client:
        resp = client.request("GET", "/__seen")
    return json.loads(resp.body)


def run_case(port: int, case: Case) -> Outcome:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        try:
            sock.sendall(wire(case))
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server may close before reading everything; what it answered is still readable
        data, closed = read_all(sock, IDLE_WAIT)
    victim, smuggled = paths(case)
    recorded = seen(port)["seen"]
    return Outcome(first_status(data), closed, smuggled in recorded, victim in recorded)


def expected(case: Case) -> Outcome:
    return case.uvicorn if IS_UVICORN and case.uvicorn is not None else case.expect


@pytest.fixture(scope="module")
def servers():
    limited_args = () if IS_UVICORN else ("--limit-request-body", str(BODY_LIMIT))
    with (
        ServerProcess("tests.apps.recorder:app") as default,
        ServerProcess("tests.apps.recorder:app", *limited_args) as limited,
    ):
        default.wait_ready()
        limited.wait_ready()
        yield {"default": default, "limited": limited}


def test_catalogue_has_at_least_40_distinct_rows():
    ids = [case.id for case in CATALOGUE + TOLERATED]
    assert len(ids) == len(set(ids))
    assert len(CATALOGUE) >= 40
    assert all(case.rfc for case in CATALOGUE + TOLERATED)


@pytest.mark.parametrize("case", CATALOGUE, ids=str)
def test_malformed_request(servers, case):
    outcome = run_case(servers[case.server].port, case)
    assert outcome == expected(case), f"{case.id} ({case.rfc}) {case.note}"


@pytest.mark.parametrize("case", TOLERATED, ids=str)
def test_tolerated_request(servers, case):
    outcome = run_case(servers[case.server].port, case)
    assert outcome == expected(case), f"{case.id} ({case.rfc}) {case.note}"


def test_content_length_and_transfer_encoding_split_across_packets(servers):
    """The Content-Length line of a request with Transfer-Encoding is noticed across TCP segments."""
    with socket.create_connection((HOST, servers["default"].port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (b"POST /split HTTP/1.1\r\nHost: t\r\n" + TE + b"Cont", b"ent-Length: 3\r\n\r\n0\r\n\r\n"):
            sock.sendall(part)
            time.sleep(0.05)
        data, closed = read_all(sock, IDLE_WAIT)
    assert (first_status(data), closed) == (400, True)
    assert "/split" not in seen(servers["default"].port)["seen"]


def test_chunked_request_after_one_with_content_length_is_served(servers):
    """A chunked request is not mistaken for a smuggling shape because an earlier one had Content-Length."""
    with RawClient(port=servers["default"].port) as client:
        client.send(b"POST /with-length HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert client.read_response().status == 200
        client.send(b"POST /chunked HTTP/1.1\r\nHost: t\r\n" + TE + b"\r\n" + BODY5)
        assert client.read_response().status == 200
        client.send(
            b"POST /both HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            + POST.replace(b"@V", b"/next")
            + TE
            + b"\r\n"
            + BODY5
        )
        assert client.read_response().status == 200
        assert client.read_response().status == 200
    recorded = seen(servers["default"].port)["seen"]
    assert {"/with-length", "/chunked", "/both", "/next"} <= set(recorded)


def test_server_still_serves_after_the_catalogue(servers):
    with RawClient(port=servers["default"].port) as client:
        assert client.request("GET", "/after").status == 200
