"""Application errors: 500s, aborted connections, wrong ASGI message order."""

import uuid

import httpx
import pytest

from tests.helpers import IS_UVICORN, RawClient, wait_until


@pytest.fixture(scope="module")
def srv(basic_server):
    return basic_server


def assert_still_serving(srv):
    r = httpx.get(srv.url + "/head", timeout=10)
    assert r.status_code == 200 and r.text == "hello"


def test_exception_before_response_start_gives_500(srv):
    with RawClient(port=srv.port) as c:
        r = c.request("GET", "/raise-before")
        assert r.status == 500
        assert r.body == b"Internal Server Error"
        assert r.header("content-type") == "text/plain; charset=utf-8"
        assert (r.header("connection") or "").lower() == "close"
        assert c.is_closed(5)
    assert_still_serving(srv)
    srv.wait_output("boom-before-start")


def test_exception_after_response_start_closes_connection(srv):
    """The app raises after http.response.start + a partial body: the connection is closed, and the client
    never sees a complete response (uvicorn flushes the head and "partial" first; a server that had not yet
    written them may drop them, which a client cannot tell from a crash)."""
    with RawClient(port=srv.port) as c:
        c.send(b"GET /raise-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.read_eof()  # must terminate: the server closes the connection
    if data:
        assert data.startswith(b"HTTP/1.1 200"), data
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower(), data
        assert not body.endswith(b"0\r\n\r\n"), "the chunked body must not be terminated"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(srv.url + "/raise-after", timeout=10)
    assert_still_serving(srv)


def test_app_returns_without_response_gives_500(srv):
    with RawClient(port=srv.port) as c:
        r = c.request("GET", "/no-response")
        assert r.status == 500
        assert r.body == b"Internal Server Error"
    assert_still_serving(srv)


def test_app_returns_with_incomplete_response_closes_connection(srv):
    """Content-length 100 announced, 7 bytes sent, app returns: the connection is closed."""
    with RawClient(port=srv.port) as c:
        c.send(b"GET /incomplete HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.read_eof()
    if data:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 100" in head.lower(), data
        assert len(body) < 100
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(srv.url + "/incomplete", timeout=10)
    assert_still_serving(srv)


def test_app_returning_value_still_responds(srv):
    r = httpx.get(srv.url + "/return-value", timeout=10)
    assert r.status_code == 200 and r.text == "ok"
    assert_still_serving(srv)


def test_wrong_order_body_before_start(srv):
    r = httpx.get(srv.url + "/wrong-order?case=body-first", timeout=10)
    assert r.status_code == 200
    assert r.text.startswith("RuntimeError: "), r.text
    assert "http.response.start" in r.text and "http.response.body" in r.text
    assert_still_serving(srv)


def test_wrong_order_double_start(srv):
    r = httpx.get(srv.url + "/wrong-order?case=double-start", timeout=10)
    assert r.status_code == 200
    assert r.text.startswith("RuntimeError: "), r.text
    assert "http.response.body" in r.text and "http.response.start" in r.text
    assert_still_serving(srv)


@pytest.mark.parametrize("shape", ["list-of-tuples", "list-of-lists", "tuple-of-tuples", "generator"])
def test_response_headers_in_any_iterable_of_pairs(srv, shape):
    r = httpx.get(srv.url + "/header-shapes", params={"shape": shape}, timeout=10)
    assert (r.status_code, r.text, r.headers["x-shape"]) == (200, "shaped", shape)


@pytest.mark.parametrize("shape", ["dict", "fresh-keys", "subclass", "mapping-proxy"])
def test_response_messages_in_any_mapping(srv, shape):
    # A plain dict is read in one pass over its entries, its keys found by identity with the
    # server's interned strings or else by their text; other mappings are asked key by key.
    r = httpx.get(srv.url + "/message-shapes", params={"shape": shape}, timeout=10)
    assert (r.status_code, r.text, r.headers["x-shape"]) == (201, "two parts", shape)


@pytest.mark.parametrize("shape", ["dict", "fresh-keys", "mapping-proxy"])
@pytest.mark.parametrize("missing", ["type", "status"])
def test_a_message_without_a_required_key_raises_in_send(srv, shape, missing):
    r = httpx.get(srv.url + "/message-shapes", params={"shape": shape, "missing": missing}, timeout=10)
    assert (r.status_code, r.text) == (500, f"KeyError: '{missing}'")
    assert_still_serving(srv)


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ("str-name", "TypeError: ASGI header name must be bytes"),
        ("str-value", "TypeError: ASGI header value must be bytes"),
        ("triple", "TypeError: ASGI header must be a [name, value] pair"),
        ("bare-bytes", "TypeError: ASGI header must be a [name, value] pair"),
    ],
)
def test_malformed_response_headers_raise_in_send(srv, shape, error):
    r = httpx.get(srv.url + "/header-shapes", params={"shape": shape}, timeout=10)
    assert (r.status_code, r.text) == (500, error)
    assert_still_serving(srv)


def test_wrong_order_send_after_complete(srv):
    key = "wo-" + uuid.uuid4().hex
    r = httpx.get(srv.url + f"/wrong-order?case=after-complete&key={key}", timeout=10)
    assert r.status_code == 200 and r.text == "done"

    def value():
        return httpx.get(srv.url + "/results", params={"key": key}, timeout=10).json()["value"]

    text = wait_until(value, 10, message="app recorded error")
    assert text.startswith("RuntimeError: "), text
    assert "http.response.body" in text and "completed" in text
    assert_still_serving(srv)


def test_contextvars_isolated_per_request(srv):
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for i in range(3):  # same keep-alive connection
            data = client.get("/ctx", params={"value": f"v{i}"}).json()
            assert data == {"before": "unset", "after": f"v{i}", "child": f"v{i}"}


def test_contextvars_concurrent_requests(srv):
    import concurrent.futures

    def one(i):
        return httpx.get(srv.url + "/ctx", params={"value": f"c{i}", "delay": "0.1"}, timeout=10).json()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    for i, data in enumerate(results):
        assert data == {"before": "unset", "after": f"c{i}", "child": f"c{i}"}


def test_current_task_is_real_asyncio_task_and_anyio_works(srv):
    data = httpx.get(srv.url + "/task", timeout=15).json()
    assert data["is_task"] is True
    assert data["anyio_task_matches"] is True
    assert data["task_group"] == [0, 1, 2]
    assert data["to_thread"] == 42
    assert data["cancelled"] is True
    assert data["wait_for_timeout"] is True


def test_requests_copy_the_server_context(srv):
    data = httpx.get(srv.url + "/ctx-import", timeout=10).json()
    assert data == {"import_var": "set-at-import"}


def test_reset_contextvars_gives_each_request_a_fresh_context(start_server):
    s = start_server("tests.apps.basic:app", "--reset-contextvars")
    data = httpx.get(s.url + "/ctx-import", timeout=10).json()
    assert data == {"import_var": "unset"}


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's send is a coroutine function: a wrong call raises when awaited")
def test_send_and_receive_called_wrongly_raise_and_the_response_goes_on(srv):
    data = httpx.get(srv.url + "/send-misuse", timeout=10).json()
    assert (
        data["errors"]
        == ["TypeError: send() takes exactly one argument, the message"] * 3
        + ["TypeError: receive() takes no arguments"] * 2
    )
    assert data["from_thread"] == [
        "RuntimeError: send() must be called on the event loop's thread",
        "RuntimeError: receive() must be called on the event loop's thread",
    ]
    assert_still_serving(srv)
