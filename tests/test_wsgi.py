"""WSGI applications (`--interface wsgi`, or detected by `auto`), served through a thread pool."""

import threading
import time

import httpx
import pytest

from tests.helpers import IS_UVICORN, RawClient

WSGI_APP = "tests.apps.wsgi_app:app"


@pytest.fixture(scope="module")
def wsgi_server():
    from tests.helpers import ServerProcess

    with ServerProcess(WSGI_APP, "--interface", "wsgi", "--root-path", "/mount") as server:
        server.wait_ready()
        yield server


def test_environ(wsgi_server):
    r = httpx.get(wsgi_server.url + "/a/b?x=1&y=2", headers={"x-custom": "v"}, timeout=10)
    assert r.status_code == 200
    environ = r.json()
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == "/mount"
    assert environ["PATH_INFO"] == "/a/b"
    assert environ["QUERY_STRING"] == "x=1&y=2"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    # PEP 3333: a str (uvicorn's own middleware, which it uses without a2wsgi, gives an int).
    assert environ["SERVER_PORT"] == (wsgi_server.port if IS_UVICORN else str(wsgi_server.port))
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["HTTP_X_CUSTOM"] == "v"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["main_thread"] is False, "the WSGI app must not run on the event loop's thread"


def test_request_body(wsgi_server):
    body = bytes(range(256)) * 4096
    r = httpx.post(wsgi_server.url + "/echo", content=body, timeout=10)
    assert r.status_code == 200
    assert r.content == body


def test_streamed_response(wsgi_server):
    r = httpx.get(wsgi_server.url + "/stream", timeout=10)
    assert r.text == "part0;part1;part2;"


def test_status_and_headers(wsgi_server):
    r = httpx.get(wsgi_server.url + "/status", timeout=10)
    assert r.status_code == 404
    assert r.headers["x-wsgi"] == "yes"
    assert r.text == "nothing here"


def test_exception_gives_500_and_a_traceback(wsgi_server):
    r = httpx.get(wsgi_server.url + "/raise", timeout=10)
    assert r.status_code == 500
    wsgi_server.wait_output("boom-in-wsgi")


def test_blocking_requests_run_side_by_side(wsgi_server):
    results = []

    def one():
        results.append(httpx.get(wsgi_server.url + "/sleep?seconds=1", timeout=10).text)

    threads = [threading.Thread(target=one) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["slept"] * 4
    assert time.monotonic() - started < 3, "the requests were not served by several threads"


def test_keep_alive_with_content_length_responses(wsgi_server):
    with RawClient(port=wsgi_server.port) as client:
        for _ in range(3):
            r = client.request("POST", "/echo", body=b"hello")
            assert (r.status, r.body) == (200, b"hello")


def test_websocket_upgrade_reaches_the_app_as_plain_http(wsgi_server):
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    with RawClient(port=wsgi_server.port) as client:
        r = client.request("GET", "/ws", headers)
    assert r.status == 200
    assert r.header("content-type") == "application/json"


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's --interface auto takes a WSGI app for ASGI 2")
def test_interface_auto_detects_a_wsgi_app(start_server):
    server = start_server(WSGI_APP)
    assert httpx.get(server.url + "/x", timeout=10).json()["PATH_INFO"] == "/x"


def test_no_error_logged_for_complete_responses(wsgi_server):
    for path in ("/a", "/echo", "/stream", "/status"):
        httpx.get(wsgi_server.url + path, timeout=10)
    assert "without completing" not in wsgi_server.output
    assert "without starting" not in wsgi_server.output


def test_django_wsgi_application(start_server):
    server = start_server("tests.apps.django_app.wsgi:application", "--interface", "wsgi")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/items/3?q=x")
        assert r.status_code == 200
        assert r.json() == {"item_id": 3, "q": "x", "path": "/items/3", "framework": "django"}
        r = client.post("/echo", json={"a": [1, 2]})
        assert r.json() == {"received": {"a": [1, 2]}, "framework": "django"}
        assert client.get("/sync").json() == {"sync": True}
        assert client.get("/missing").status_code == 404
    assert "Traceback" not in server.output
