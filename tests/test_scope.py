"""The ASGI HTTP scope, as uvicorn builds it."""

import json

import httpx
import pytest

from tests.helpers import RawClient


@pytest.fixture(scope="module")
def srv(basic_server):
    return basic_server


def get_scope(srv, target="/scope", headers=None, method="GET", body=b"", version="HTTP/1.1"):
    with RawClient(port=srv.port) as c:
        local_port = c.sock.getsockname()[1]
        r = c.request(method, target, headers, body, version)
    assert r.status == 200, r
    scope = json.loads(r.body)
    scope["_local_port"] = local_port
    return scope


def test_scope_keys_and_types(srv):
    scope = get_scope(srv, "/scope?a=1&b=two", {"X-Test-Header": "Value"})
    expected = {
        "type",
        "asgi",
        "http_version",
        "server",
        "client",
        "scheme",
        "method",
        "root_path",
        "path",
        "raw_path",
        "query_string",
        "headers",
        "state",
    }
    assert expected <= set(scope) - {"_types", "_local_port"}
    t = scope["_types"]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"} or (
        scope["asgi"]["version"] == "3.0" and scope["asgi"]["spec_version"] in ("2.3", "2.4", "2.5")
    )
    assert t["asgi{}"] == {"version": "str", "spec_version": "str"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "http"
    assert scope["method"] == "GET"
    assert scope["root_path"] == ""
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=two"
    assert t["type"] == t["http_version"] == t["scheme"] == t["method"] == t["root_path"] == t["path"] == "str"
    assert t["raw_path"] == "bytes"
    assert t["query_string"] == "bytes"
    assert t["headers"] == "list"
    assert t["headers[]"] == ["tuple"]
    assert t["headers[][]"] == ["bytes"]
    assert t["state"] == "dict"
    assert t["client"] == "tuple" and t["client[]"] == ["str", "int"]
    assert t["server"] == "tuple" and t["server[]"] == ["str", "int"]
    assert scope["client"] == ["127.0.0.1", scope["_local_port"]]
    assert scope["server"] == ["127.0.0.1", srv.port]


def test_headers_lowercased_in_order_with_duplicates(srv):
    with RawClient(port=srv.port) as c:
        c.send(
            b"GET /scope HTTP/1.1\r\nHost: example.org\r\nX-Dup: one\r\nX-MiXeD-Case: Keep Value\r\nX-Dup: two\r\n\r\n"
        )
        r = c.read_response()
    headers = json.loads(r.body)["headers"]
    assert ["host", "example.org"] in headers
    assert ["x-mixed-case", "Keep Value"] in headers
    dups = [v for k, v in headers if k == "x-dup"]
    assert dups == ["one", "two"]
    names = [k for k, _ in headers]
    assert names.index("host") < names.index("x-mixed-case")


def test_common_header_names_read_the_same_on_every_request(srv):
    # The scope shares one bytes object per common header name; each request must still see
    # its own names, lowercased, in order, next to names that are not shared.
    sent = [
        ("User-Agent", "probe/1"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip"),
        ("X-Rare-Name", "kept"),
        ("Cookie", "a=1"),
        ("Referer", "http://example.org/"),
        ("Cache-Control", "no-cache"),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in sent)
    with RawClient(port=srv.port) as c:
        for n in range(2):
            c.send(f"GET /scope HTTP/1.1\r\nHost: h{n}\r\n{head}\r\n".encode())
            headers = json.loads(c.read_response().body)["headers"]
            assert headers == [["host", f"h{n}"]] + [[name.lower(), value] for name, value in sent]


def test_header_pairs_of_a_connection_follow_each_request(srv):
    # The pairs of a connection's previous request are reused where a field line comes again the
    # same at the same place: every request must still see exactly its own lines.
    requests = [
        [("User-Agent", "probe/1"), ("Accept", "*/*"), ("X-Id", "1")],
        [("User-Agent", "probe/1"), ("Accept", "text/html"), ("X-Id", "1"), ("Cookie", "a=1")],
        [("User-Agent", "probe/1")],
        [("X-Id", "1"), ("User-Agent", "probe/1")],
        [("User-Agent", "probe/1"), ("Accept", "*/*"), ("X-Id", "1")],
    ]
    with RawClient(port=srv.port) as c:
        for sent in requests:
            head = "".join(f"{name}: {value}\r\n" for name, value in sent)
            c.send(f"GET /scope HTTP/1.1\r\nHost: h\r\n{head}\r\n".encode())
            headers = json.loads(c.read_response().body)["headers"]
            assert headers == [["host", "h"]] + [[name.lower(), value] for name, value in sent]


def test_client_and_server_on_every_request_of_a_connection(srv):
    # From a connection's second request on the scope starts from a copy holding the
    # connection's `client` and `server`; a forwarded client must still replace it, request by
    # request, and a request without one must get the peer back.
    with RawClient(port=srv.port) as c:
        peer = ["127.0.0.1", c.sock.getsockname()[1]]
        server = ["127.0.0.1", srv.port]
        for n, forwarded in enumerate([False, False, True, False, True, False]):
            extra = f"X-Forwarded-For: 203.0.113.{n}\r\n" if forwarded else ""
            c.send(f"GET /scope HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode())
            scope = json.loads(c.read_response().body)
            assert scope["client"] == (["203.0.113." + str(n), 0] if forwarded else peer), n
            assert scope["server"] == server, n
            assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}


def test_method_and_http10(srv):
    scope = get_scope(srv, "/scope", method="POST", body=b"abc")
    assert scope["method"] == "POST"
    scope = get_scope(srv, "/scope", method="DELETE")
    assert scope["method"] == "DELETE"
    scope = get_scope(srv, "/scope", version="HTTP/1.0")
    assert scope["http_version"] == "1.0"


def test_percent_decoding_path(srv):
    scope = get_scope(srv, "/caf%C3%A9/a%20b?x=%C3%A9")
    # path is decoded UTF-8 (a str); raw_path keeps the bytes as sent
    assert scope["path"] == "/café/a b"
    assert scope["_types"]["path"] == "str"
    assert scope["raw_path"] == "/caf%C3%A9/a%20b"
    assert scope["query_string"] == "x=%C3%A9"


def test_path_decoding_exact_unicode(srv):
    r = httpx.get(srv.url + "/caf%C3%A9", timeout=10)
    # The JSON echo turns str into JSON strings, so the real Unicode str must round-trip.
    assert r.json()["path"] == "/café"


def test_encoded_slash_stays_in_raw_path(srv):
    scope = get_scope(srv, "/a%2Fb")
    assert scope["path"] == "/a/b"
    assert scope["raw_path"] == "/a%2Fb"


def test_query_string_bytes_not_decoded(srv):
    scope = get_scope(srv, "/scope?q=a+b&r=%2F&empty=&flag")
    assert scope["query_string"] == "q=a+b&r=%2F&empty=&flag"
    scope = get_scope(srv, "/scope")
    assert scope["query_string"] == ""


def test_state_is_dict_without_lifespan_state(srv):
    scope = get_scope(srv)
    assert scope["state"] == {}


def test_root_path_option(start_server):
    s = start_server("tests.apps.basic:app", "--root-path", "/api")
    scope = httpx.get(s.url + "/scope/x%20y?z=1", timeout=10).json()
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope/x y"
    assert scope["raw_path"] == "/api/scope/x%20y"
    assert scope["query_string"] == "z=1"


def test_proxy_headers_default_trusts_localhost(start_server):
    s = start_server("tests.apps.basic:app")
    scope = httpx.get(
        s.url + "/scope",
        headers={"X-Forwarded-For": "203.0.113.7, 127.0.0.1", "X-Forwarded-Proto": "https"},
        timeout=10,
    ).json()
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"


def test_no_proxy_headers(start_server):
    s = start_server("tests.apps.basic:app", "--no-proxy-headers")
    scope = httpx.get(
        s.url + "/scope", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, timeout=10
    ).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_forwarded_allow_ips_untrusted_peer(start_server):
    s = start_server("tests.apps.basic:app", "--forwarded-allow-ips", "10.1.2.3")
    scope = httpx.get(
        s.url + "/scope", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, timeout=10
    ).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_forwarded_allow_ips_star(start_server):
    s = start_server("tests.apps.basic:app", "--forwarded-allow-ips", "*")
    scope = httpx.get(
        s.url + "/scope",
        headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"},
        timeout=10,
    ).json()
    # All hops trusted -> leftmost.
    assert scope["client"][0] == "198.51.100.1"
    assert scope["scheme"] == "https"
