"""The ASGI "Path Send" extension (``http.response.pathsend``): the server reads and sends the file.

HTTP/1.1 and HTTP/2 with httpx, HTTP/3 with niquests; Starlette's FileResponse, which uses the
extension when the scope offers it.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import IS_UVICORN

pytestmark = pytest.mark.skipif(IS_UVICORN, reason="uvicorn does not offer http.response.pathsend")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pathsend")
    small = directory / "small.bin"
    small.write_bytes(os.urandom(50_000))
    large = directory / "large.bin"
    large.write_bytes(os.urandom(10 * 1024 * 1024))
    empty = directory / "empty.bin"
    empty.write_bytes(b"")
    return {"small": small, "large": large, "empty": empty, "dir": directory}


@pytest.fixture(scope="module")
def tls_server(tls_certs):
    from tests.helpers import ServerProcess

    args = ["--ssl-certfile", str(tls_certs / "server.pem"), "--ssl-keyfile", str(tls_certs / "server.key")]
    with ServerProcess("tests.apps.basic:app", *args, "--http3") as srv:
        srv.wait_ready()
        yield srv


def url(base: str, path, **query) -> str:
    extra = "".join(f"&{key}={quote(str(value))}" for key, value in query.items())
    return f"{base}/pathsend?path={quote(str(path))}{extra}"


def test_scope_offers_the_extension(basic_server):
    scope = httpx.get(basic_server.url + "/").json()
    assert scope["extensions"]["http.response.pathsend"] == {}


@pytest.mark.parametrize("name", ["small", "large", "empty"])
def test_file_sent_over_http11(basic_server, files, name):
    response = httpx.get(url(basic_server.url, files[name]), timeout=30)
    assert response.status_code == 200
    assert response.content == files[name].read_bytes()
    assert response.headers["content-length"] == str(files[name].stat().st_size)


def test_body_chunk_before_the_file(basic_server, files):
    response = httpx.get(url(basic_server.url, files["small"], prefix="head:"))
    assert response.content == b"head:" + files["small"].read_bytes()
    assert response.headers["content-length"] == str(5 + files["small"].stat().st_size)


def test_head_request_gets_the_length_without_the_body(basic_server, files):
    response = httpx.head(url(basic_server.url, files["large"]))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(files["large"].stat().st_size)
    assert response.content == b""


@pytest.mark.parametrize("bad", ["missing", "relative", "directory", "wrong-length"])
def test_a_file_that_cannot_be_sent_raises_in_the_app(basic_server, files, bad):
    """send() raises, so the app fails after http.response.start: as for any app error after the
    start message (uvicorn's rule), the connection is closed instead of a response; the server
    stays healthy."""
    path = {"missing": files["dir"] / "nope.bin", "relative": "small.bin"}.get(bad, files["dir"])
    target = url(basic_server.url, files["small"], length=10) if bad == "wrong-length" else url(basic_server.url, path)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(target)
    assert httpx.get(url(basic_server.url, files["small"])).status_code == 200


def test_file_sent_over_http2(tls_server, files, tls_certs):
    context = ssl.create_default_context(cafile=str(tls_certs / "ca.pem"))
    with httpx.Client(http2=True, verify=context, timeout=30) as client:
        response = client.get(url(tls_server.url.replace("http:", "https:"), files["large"]))
    assert response.http_version == "HTTP/2"
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(files["large"].read_bytes()).digest()


def test_file_sent_over_http3(tls_server, files, tls_certs):
    import niquests

    with niquests.Session(disable_http1=True, disable_http2=True) as session:
        response = session.get(
            url(tls_server.url.replace("http:", "https:"), files["large"]), verify=str(tls_certs / "ca.pem"), timeout=30
        )
    assert response.http_version == 30
    assert response.content == files["large"].read_bytes()


def test_starlette_file_response_uses_it(start_server, files):
    server = start_server("tests.apps.starlette_app:app")
    response = httpx.get(server.url + "/file", params={"path": str(files["large"])}, timeout=30)
    assert response.status_code == 200
    assert response.content == files["large"].read_bytes()
    assert httpx.get(server.url + "/file-messages").json() == ["http.response.start", "http.response.pathsend"]
