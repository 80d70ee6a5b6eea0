"""The same small app written for FastAPI, Starlette and Django (ASGI), served and exercised."""

import httpx
import pytest

from tests.helpers import ServerProcess

APPS = {
    "fastapi": "tests.apps.fastapi_app:app",
    "starlette": "tests.apps.starlette_app:app",
    "django": "tests.apps.django_app.asgi:app",
}


@pytest.fixture(scope="module", params=list(APPS))
def fw(request):
    pytest.importorskip(request.param)
    with ServerProcess(APPS[request.param]) as s:
        s.wait_ready()
        s.framework = request.param
        yield s


def test_get_with_path_and_query(fw):
    r = httpx.get(fw.url + "/items/42", params={"q": "café"}, timeout=15)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["item_id"] == 42
    assert data["q"] == "café"
    assert data["path"] == "/items/42"
    assert data["framework"] == fw.framework
    if fw.framework != "django":
        assert data["greeting"] == "hello-from-lifespan"  # lifespan state -> request.state


def test_post_echo_json(fw):
    payload = {"a": 1, "b": [1, 2, 3], "c": "é"}
    r = httpx.post(fw.url + "/echo", json=payload, timeout=15)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": payload, "framework": fw.framework}


def test_streaming_response(fw):
    r = httpx.get(fw.url + "/stream", timeout=15)
    assert r.status_code == 200
    assert r.text == "part0;part1;part2;"


def test_not_found(fw):
    r = httpx.get(fw.url + "/nope", timeout=15)
    assert r.status_code == 404


def test_keep_alive_many_requests(fw):
    with httpx.Client(base_url=fw.url, timeout=15) as client:
        for i in range(20):
            assert client.get(f"/items/{i}").json()["item_id"] == i


def test_sync_endpoint_in_thread(fw):
    r = httpx.get(fw.url + "/sync", timeout=15)
    assert r.status_code == 200 and r.json() == {"sync": True}


def test_server_header(fw):
    from tests.helpers import SERVER_NAME

    r = httpx.get(fw.url + "/items/1", timeout=15)
    assert r.headers["server"] == SERVER_NAME


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])  # Django needs Channels for WebSockets
def test_websocket_route(start_server, framework):
    """A framework WebSocket route: accept with a subprotocol, echo, close; compression negotiated."""
    from websockets.sync.client import connect

    srv = start_server(APPS[framework])
    with connect(srv.url.replace("http:", "ws:") + "/ws/lobby", subprotocols=["chat"], open_timeout=10) as ws:
        assert ws.subprotocol == "chat"
        assert ws.protocol.extensions, "permessage-deflate negotiated"
        for text in ("hello", "é" * 5000):
            ws.send(text)
            assert ws.recv(timeout=10) == f"lobby:{text}"
