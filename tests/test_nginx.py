"""The server behind a real nginx (tests/nginx.py): proxy headers, unix sockets, big transfers, upstream keep-alive.

nginx listens on 127.0.0.1 (plain and TLS, so ``$scheme`` can be ``https``) and proxies to the server over TCP
(``upstream { server 127.0.0.1:PORT; keepalive 16; }``) or a unix socket (``server unix:PATH;``). The test client
is 127.0.0.1 too, so to prove X-Forwarded-For is used it sends its own ``X-Forwarded-For`` that nginx extends.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import HOST, IS_UVICORN, ServerProcess
from tests.nginx import UPSTREAM_NAME, Nginx, nginx_available

pytestmark = pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")
# Options that uvicorn does not have (--forwarded-host/-port/-prefix, --proxy-headers-style, "unix:" peers).
tricorn_only = pytest.mark.skipif(IS_UVICORN, reason="tricorn extension")

SPOOFED = "203.0.113.7"  # what the test client claims in its own X-Forwarded-For / Forwarded
MIB = 1024 * 1024


@dataclass
class Proxied:
    server: ServerProcess
    nginx: Nginx
    ca: Path
    uds: str | None = None

    def client(self, tls: bool = False, **kwargs) -> httpx.Client:
        base = self.nginx.tls_url if tls else self.nginx.url
        verify = ssl.create_default_context(cafile=str(self.ca)) if tls else True
        return httpx.Client(base_url=base, verify=verify, timeout=30, **kwargs)

    def scope(self, path: str = "/scope", tls: bool = False, headers: dict | None = None) -> dict:
        with self.client(tls) as client:
            r = client.get(path, headers=headers)
        assert r.status_code == 200, (r.status_code, r.text, self.nginx.error_log[-2000:], self.server.output)
        return r.json()


def header_values(scope: dict, name: str) -> list:
    return [value for key, value in scope["headers"] if key == name]


@pytest.fixture
def short_dir():
    """A short directory for unix sockets (sun_path is limited to 108 bytes)."""
    path = tempfile.mkdtemp(prefix="tcng-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def proxied(start_server, tmp_path, tls_certs, short_dir):
    """Factory: proxied(*server_args, uds=False, upstream_keepalive_timeout=None) -> Proxied.

    "{uds}" in server_args is replaced by the unix socket path. nginx is stopped before the server.
    """
    started = []

    def _start(*args, uds=False, upstream_keepalive_timeout=None, app="tests.apps.basic:app"):
        n = len(started)
        path = f"{short_dir}/s{n}.sock" if uds else None
        args = [a.replace("{uds}", path) if path else a for a in args]
        if path:
            server = start_server(app, "--uds", path, *args, use_port=False, uds=path)
            upstream = f"unix:{path}"
        else:
            server = start_server(app, *args)
            upstream = f"{HOST}:{server.port}"
        nginx = Nginx(
            tmp_path / f"nginx{n}",
            upstream,
            tls_dir=tls_certs,
            upstream_keepalive_timeout=upstream_keepalive_timeout,
        )
        started.append(nginx)
        return Proxied(server, nginx, tls_certs / "ca.pem", path)

    yield _start
    for nginx in started:
        nginx.stop()


# --- X-Forwarded-For / X-Forwarded-Proto (uvicorn's proxy headers, on by default) -----------------------------
def test_x_forwarded_through_nginx(proxied):
    p = proxied()
    scope = p.scope()
    assert header_values(scope, "x-forwarded-for") == ["127.0.0.1"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"

    scope = p.scope(tls=True)
    assert scope["scheme"] == "https", "X-Forwarded-Proto from the trusted nginx is the scheme"
    assert scope["client"][0] == "127.0.0.1"

    # nginx appends its peer: "203.0.113.7, 127.0.0.1"; the right-most untrusted hop is the client.
    scope = p.scope(tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert header_values(scope, "x-forwarded-for") == [f"{SPOOFED}, 127.0.0.1"]
    assert scope["client"][0] == SPOOFED
    assert scope["scheme"] == "https"

    # Hops left of the first untrusted one are not believed.
    scope = p.scope(headers={"X-Forwarded-For": f"198.51.100.9, {SPOOFED}"})
    assert scope["client"][0] == SPOOFED


def test_x_forwarded_trusted_chain(proxied):
    p = proxied("--forwarded-allow-ips", f"127.0.0.1,{SPOOFED}")
    scope = p.scope(headers={"X-Forwarded-For": f"198.51.100.9, {SPOOFED}"})
    assert scope["client"][0] == "198.51.100.9"


def test_untrusted_proxy_cannot_spoof(proxied):
    """nginx at 127.0.0.1 is not in --forwarded-allow-ips: its headers are ignored, and so are a direct client's."""
    p = proxied("--forwarded-allow-ips", "10.1.2.3")
    scope = p.scope(tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0, "the real peer (nginx) and its port"

    direct = httpx.get(
        p.server.url + "/scope",
        headers={"X-Forwarded-For": SPOOFED, "X-Forwarded-Proto": "https"},
        timeout=10,
    ).json()
    assert direct["scheme"] == "http"
    assert direct["client"][0] == "127.0.0.1" and direct["client"][1] > 0


def test_no_proxy_headers(proxied):
    p = proxied("--no-proxy-headers")
    scope = p.scope(tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0


def test_default_style_ignores_rfc7239_forwarded(proxied):
    """nginx passes the client's own Forwarded header through "/": with the x-forwarded style it means nothing."""
    p = proxied()
    forwarded = "for=198.51.100.1;proto=https;host=evil.example"
    scope = p.scope(headers={"Forwarded": forwarded})
    assert header_values(scope, "forwarded") == [forwarded]
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1"
    assert header_values(scope, "host") == ["127.0.0.1"]


# --- unix socket peers ---------------------------------------------------------------------------------------
def test_uds_proxy_headers_ignored_by_default(proxied):
    """A unix-socket peer has no address: it is not 127.0.0.1, so by default nothing is trusted (as uvicorn)."""
    p = proxied(uds=True)
    scope = p.scope(tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert header_values(scope, "x-forwarded-proto") == ["https"]
    assert scope["scheme"] == "http"
    assert scope["client"] is None or scope["client"][0] in ("", p.uds)
    assert scope["server"] == [p.uds, None]


@tricorn_only
@pytest.mark.parametrize(
    ("allow", "client"),
    [("unix:", "127.0.0.1"), ("{uds}", "127.0.0.1"), ("unix:,127.0.0.1", SPOOFED)],
    ids=["unix:", "socket-path", "unix:+127.0.0.1"],
)
def test_uds_trusted_peer(proxied, allow, client):
    p = proxied("--forwarded-allow-ips", allow, uds=True)
    scope = p.scope(tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert scope["scheme"] == "https"
    # "203.0.113.7, 127.0.0.1": 127.0.0.1 is only trusted when listed, so it is the client unless it is.
    assert scope["client"][0] == client
    assert p.scope()["scheme"] == "http"


# --- opt-in X-Forwarded-Host / -Port / -Prefix -----------------------------------------------------------------
def _check_host(p: Proxied, replaced: bool) -> None:
    scope = p.scope("/upstream-host/scope", tls=True, headers={"Host": "public.example:8443"})
    assert header_values(scope, "x-forwarded-host") in ([], ["public.example"])
    assert header_values(scope, "host") == (["public.example"] if replaced else [UPSTREAM_NAME])


def _check_port(p: Proxied, replaced: bool) -> None:
    for tls, nginx_port in ((True, p.nginx.tls_port), (False, p.nginx.port)):
        scope = p.scope(tls=tls)
        assert scope["server"] == [HOST, nginx_port if replaced else p.server.port]


def _check_prefix(p: Proxied, replaced: bool) -> None:
    scope = p.scope("/prefix/some/path?q=1")
    assert scope["query_string"] == "q=1"
    path = "/prefix/some/path" if replaced else "/some/path"
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/prefix" if replaced else "", path, path)
    # Without X-Forwarded-Prefix ("/" location) nothing changes.
    scope = p.scope("/plain")
    assert (scope["root_path"], scope["path"]) == ("", "/plain")


def test_forwarded_host_port_prefix_off_by_default(proxied):
    p = proxied()
    _check_host(p, replaced=False)
    _check_port(p, replaced=False)
    _check_prefix(p, replaced=False)


@tricorn_only
def test_forwarded_host(proxied):
    p = proxied("--forwarded-host")
    _check_host(p, replaced=True)
    _check_port(p, replaced=False)
    _check_prefix(p, replaced=False)


@tricorn_only
def test_forwarded_port(proxied):
    p = proxied("--forwarded-port")
    _check_port(p, replaced=True)
    _check_host(p, replaced=False)
    _check_prefix(p, replaced=False)


@tricorn_only
def test_forwarded_prefix(proxied):
    p = proxied("--forwarded-prefix")
    _check_prefix(p, replaced=True)
    _check_host(p, replaced=False)
    _check_port(p, replaced=False)
    # The app routes relative to root_path: /prefix/echo reaches the echo route.
    with p.client() as client:
        r = client.post("/prefix/echo", content=b"through the prefix")
    assert r.status_code == 200 and r.content == b"through the prefix"


@tricorn_only
def test_forwarded_host_port_prefix_untrusted(proxied):
    p = proxied("--forwarded-allow-ips", "10.1.2.3", "--forwarded-host", "--forwarded-port", "--forwarded-prefix")
    _check_host(p, replaced=False)
    _check_port(p, replaced=False)
    _check_prefix(p, replaced=False)


@tricorn_only
def test_forwarded_host_prefix_over_trusted_uds(proxied):
    p = proxied("--forwarded-allow-ips", "unix:", "--forwarded-host", "--forwarded-prefix", uds=True)
    _check_host(p, replaced=True)
    _check_prefix(p, replaced=True)


@tricorn_only
@pytest.mark.parametrize("bad_port", ["abc", "70000", "-1", "80 80"])
def test_forwarded_port_malformed_ignored(start_server, bad_port):
    srv = start_server("tests.apps.basic:app", "--forwarded-port")
    scope = httpx.get(srv.url + "/scope", headers={"X-Forwarded-Port": bad_port}, timeout=10).json()
    assert scope["server"] == [HOST, srv.port]


# --- RFC 7239 Forwarded ---------------------------------------------------------------------------------------
@tricorn_only
def test_forwarded_style_through_nginx(proxied):
    p = proxied("--proxy-headers-style", "forwarded", "--forwarded-host")
    # /rfc/ sends "Forwarded: [client's Forwarded, ]for=127.0.0.1;proto=$scheme;host=$host" and no X-Forwarded-*.
    scope = p.scope("/rfc/scope", tls=True, headers={"Host": "public.example"})
    assert header_values(scope, "x-forwarded-for") == []
    assert scope["scheme"] == "https"
    assert scope["client"][0] == "127.0.0.1"
    assert header_values(scope, "host") == ["public.example"]

    scope = p.scope("/rfc/scope", tls=True, headers={"Forwarded": f"for={SPOOFED}"})
    assert header_values(scope, "forwarded") == [f"for={SPOOFED}, for=127.0.0.1;proto=https;host=127.0.0.1"]
    assert scope["client"][0] == SPOOFED, "the right-most untrusted for="

    # The X-Forwarded-* headers of "/" are ignored in this style: the peer is the client, the scheme is the real one.
    scope = p.scope(tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert header_values(scope, "x-forwarded-proto") == ["https"]
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert header_values(scope, "host") == ["127.0.0.1"]


@tricorn_only
def test_forwarded_style_over_uds(proxied):
    p = proxied("--proxy-headers-style", "forwarded", "--forwarded-allow-ips", "unix:", uds=True)
    scope = p.scope("/rfc/scope", tls=True)
    assert scope["scheme"] == "https"
    assert scope["client"][0] == "127.0.0.1"


@tricorn_only
def test_forwarded_style_untrusted(start_server):
    srv = start_server(
        "tests.apps.basic:app", "--proxy-headers-style", "forwarded", "--forwarded-allow-ips", "10.1.2.3"
    )
    scope = httpx.get(srv.url + "/scope", headers={"Forwarded": f"for={SPOOFED};proto=https"}, timeout=10).json()
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0


@tricorn_only
@pytest.mark.parametrize(
    ("forwarded", "scheme", "client"),
    [
        (f"for={SPOOFED};proto=https", "https", SPOOFED),
        (f'for="{SPOOFED}";proto="https"', "https", SPOOFED),
        (f"for={SPOOFED};proto=ftp", "http", None),
        ('proto="https', "http", None),
        (f"for={SPOOFED};proto=http;proto=https", "http", None),
        ("proto=ht tps", "http", None),
        ('for="[2001:db8::1]:4711";proto=https', "https", "2001:db8::1"),
    ],
    ids=["plain", "quoted", "bad-proto", "unterminated-quote", "duplicate-param", "space", "ipv6-port"],
)
def test_forwarded_style_values(start_server, forwarded, scheme, client):
    """Directly from 127.0.0.1 (trusted by default). A malformed value is ignored, never half-applied."""
    srv = start_server("tests.apps.basic:app", "--proxy-headers-style", "forwarded")
    r = httpx.get(srv.url + "/scope", headers={"Forwarded": forwarded, "X-Forwarded-Proto": "https"}, timeout=10)
    assert r.status_code == 200
    scope = r.json()
    assert scope["scheme"] == scheme
    if client is not None:
        assert scope["client"][0] == client
    else:
        assert scope["client"][0] in ("127.0.0.1", SPOOFED)


# --- big transfers -------------------------------------------------------------------------------------------
UPLOAD = hashlib.sha256(b"upload").digest() * (20 * MIB // 32)  # 20 MiB, not one repeated byte


@pytest.mark.parametrize("uds", [False, True], ids=["tcp", "uds"])
def test_large_upload(proxied, uds):
    p = proxied(uds=uds)
    digest = hashlib.sha256(UPLOAD).hexdigest()
    with p.client() as client:
        # Buffered by nginx (to its client_body_temp_path), forwarded with a Content-Length.
        r = client.post("/echo", content=UPLOAD)
        assert r.status_code == 200, p.nginx.error_log[-2000:]
        assert len(r.content) == len(UPLOAD) and hashlib.sha256(r.content).hexdigest() == digest

        # Streamed by nginx as it arrives: chunked from the client, chunked to the upstream.
        def pieces():
            view = memoryview(UPLOAD)
            for i in range(0, len(view), 256 * 1024):
                yield bytes(view[i : i + 256 * 1024])

        r = client.post("/unbuffered/echo", content=pieces())
        assert r.status_code == 200, p.nginx.error_log[-2000:]
        assert len(r.content) == len(UPLOAD) and hashlib.sha256(r.content).hexdigest() == digest
        assert int(r.headers["x-messages"]) >= 1


@pytest.mark.parametrize("uds", [False, True], ids=["tcp", "uds"])
def test_large_streamed_download(proxied, uds):
    p = proxied(uds=uds)
    n, size = 320, 64 * 1024  # 20 MiB in 64 KiB chunks "AAA..", "BBB..", ...
    expected = hashlib.sha256(b"".join(bytes([65 + i % 26]) * size for i in range(n))).hexdigest()
    with p.client() as client:
        for location in ("/", "/unbuffered/"):
            digest, total = hashlib.sha256(), 0
            with client.stream("GET", f"{location}stream?n={n}&size={size}") as r:
                assert r.status_code == 200, p.nginx.error_log[-2000:]
                for data in r.iter_bytes():
                    digest.update(data)
                    total += len(data)
            assert total == n * size, location
            assert digest.hexdigest() == expected, location


# --- upstream keep-alive ---------------------------------------------------------------------------------------
def test_upstream_keepalive_reuses_connections(proxied):
    """With --no-proxy-headers the client port is nginx's upstream connection: sequential requests share it."""
    p = proxied("--no-proxy-headers")
    ports = []
    with p.client() as client:
        for i in range(12):
            if i % 3 == 2:
                r = client.post("/echo", content=b"x" * 1000)
                assert r.status_code == 200 and r.content == b"x" * 1000
            ports.append(client.get("/scope").json()["client"][1])
    assert len(set(ports)) <= 2, f"nginx opened a connection per request: {ports}"


def test_idle_keepalive_race(proxied):
    """Server idle timeout (3 s) longer than nginx's upstream keepalive_timeout (2 s): no request ever hits a
    connection the server is closing, whatever the pauses between requests (nginx never retries: 502 if it did)."""
    p = proxied("--timeout-keep-alive", "3", "--no-proxy-headers", upstream_keepalive_timeout="2s")
    pauses = {
        3: 0.5,  # seconds of sleep before request i
        6: 1.9,
        10: 2.5,
        12: 1.0,
        15: 2.05,
        18: 1.95,
        22: 2.5,
        24: 0.2,
        27: 2.2,
        30: 1.5,
        34: 2.5,
        36: 2.0,
    }
    statuses, ports = [], []
    with p.client() as client:
        for i in range(40):
            time.sleep(pauses.get(i, 0))
            if i % 2:
                r = client.post("/echo", content=b"ping %d" % i)
                statuses.append(r.status_code)
                assert r.status_code != 200 or r.content == b"ping %d" % i
            else:
                r = client.get("/scope")
                statuses.append(r.status_code)
                if r.status_code == 200:
                    ports.append((i, r.json()["client"][1]))
    assert statuses == [200] * 40, (statuses, p.nginx.error_log[-3000:])
    assert "prematurely closed" not in p.nginx.error_log
    # nginx's own 2 s timer did close its idle connections (the setup is what it claims to be).
    port_at = dict(ports)
    for i in (10, 22, 34):  # 2.5 s pauses before a GET
        assert port_at[i] != port_at[i - 2], ports


# --- WebSockets through nginx (HTTP/1.1 Upgrade proxied with "Upgrade"/"Connection: upgrade") -------------------
WS_APP = "tests.apps.ws:app"


def ws_connect_via(p: Proxied, path: str, tls: bool = False, **kwargs):
    """A ``websockets`` client to nginx's ``/ws/`` location (ws:// on the plain port, wss:// on the TLS one)."""
    base = p.nginx.tls_url if tls else p.nginx.url
    url = base.replace("https://", "wss://").replace("http://", "ws://") + "/ws" + path
    if tls:
        kwargs["ssl"] = ssl.create_default_context(cafile=str(p.ca))
    return connect(url, open_timeout=10, close_timeout=5, proxy=None, **kwargs)


def nginx_ctx(p: Proxied) -> str:
    return p.nginx.error_log[-2000:] + "\n" + p.server.output[-2000:]


def ws_scope_via(p: Proxied, tls: bool = False, headers: dict | None = None) -> dict:
    with ws_connect_via(p, "/scope?q=1", tls=tls, additional_headers=headers) as ws:
        scope = json.loads(ws.recv(timeout=10))
    assert scope["type"] == "websocket"
    assert (scope["path"], scope["query_string"]) == ("/scope", "q=1"), "the /ws prefix is stripped by nginx"
    return scope


@pytest.mark.parametrize("uds", [False, True], ids=["tcp", "uds"])
def test_websocket_echo_through_nginx(proxied, uds):
    p = proxied(uds=uds, app=WS_APP)
    for tls in (False, True):
        with ws_connect_via(p, "/echo", tls=tls, max_size=None) as ws:
            for message in ["hello through nginx", "", "héllo ✓", b"\x00\x01\xff", b"", "x" * 70000, b"\xab" * 300_000]:
                ws.send(message)
                got = ws.recv(timeout=10)
                assert type(got) is type(message) and got == message, nginx_ctx(p)
    # Plain requests still work next to the upgraded connections (Connection "" for them, upstream keep-alive).
    with p.client() as client:
        assert client.get("/ws/plain").json()["type"] == "http"


def test_websocket_scope_through_nginx_tcp(proxied):
    p = proxied(app=WS_APP)
    scope = ws_scope_via(p)
    assert scope["scheme"] == "ws"
    assert scope["client"][0] == "127.0.0.1"
    assert header_values(scope, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(scope, "upgrade") == ["websocket"]
    assert header_values(scope, "host") == ["127.0.0.1"]

    scope = ws_scope_via(p, tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert header_values(scope, "x-forwarded-proto") == ["https"]
    assert scope["scheme"] == "wss", "X-Forwarded-Proto https from the trusted nginx makes the scheme wss"
    assert header_values(scope, "x-forwarded-for") == [f"{SPOOFED}, 127.0.0.1"]
    assert scope["client"][0] == SPOOFED

    scope = ws_scope_via(p, headers={"X-Forwarded-For": SPOOFED})
    assert scope["scheme"] == "ws"
    assert scope["client"][0] == SPOOFED


def test_websocket_scope_through_nginx_uds_untrusted(proxied):
    """Over the unix socket nginx is not trusted by default: the proxy headers are there but not applied."""
    p = proxied(uds=True, app=WS_APP)
    scope = ws_scope_via(p, tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert header_values(scope, "x-forwarded-proto") == ["https"]
    assert scope["scheme"] == "ws"
    assert scope["client"] is None or scope["client"][0] in ("", p.uds)
    assert scope["server"] == [p.uds, None]


@tricorn_only
def test_websocket_scope_through_nginx_uds_trusted(proxied):
    p = proxied("--forwarded-allow-ips", "unix:", uds=True, app=WS_APP)
    scope = ws_scope_via(p)
    assert scope["scheme"] == "ws"
    assert scope["client"][0] == "127.0.0.1"

    # "203.0.113.7, 127.0.0.1": only the unix peer is trusted, so 127.0.0.1 (the right-most hop) is the client.
    scope = ws_scope_via(p, tls=True, headers={"X-Forwarded-For": SPOOFED})
    assert scope["scheme"] == "wss"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == [p.uds, None]


@pytest.mark.parametrize("uds", [False, True], ids=["tcp", "uds"])
def test_websocket_close_code_through_nginx(proxied, uds):
    p = proxied(uds=uds, app=WS_APP)
    for tls in (False, True):
        with ws_connect_via(p, "/close?code=4001&reason=go+away", tls=tls) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        rcvd = info.value.rcvd
        assert rcvd is not None, ("no close frame reached the client", nginx_ctx(p))
        assert (rcvd.code, rcvd.reason) == (4001, "go away")

    # The client's close code reaches the app through nginx as well.
    key = f"nginx-close-{uuid.uuid4().hex[:8]}"
    with ws_connect_via(p, f"/echo?key={key}") as ws:
        ws.send("one")
        assert ws.recv(timeout=10) == "one"
        ws.close(code=4002, reason="client done")
    deadline = time.monotonic() + 10
    while True:
        with p.client() as client:
            value = json.loads(client.get("/ws/results", params={"key": key}).text)
        if value or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value is not None and value["type"] == "websocket.disconnect", value
    assert value["code"] == 4002
