"""TLS (rustls): certificates and keys, client certificates, protocol versions, ciphers, the ASGI TLS extension.

Real servers with the development certificates of certs/make-dev-certs.sh (the ``tls_certs`` fixture), real
clients: httpx with an ``ssl.SSLContext`` trusting the development CA, curl, raw sockets.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import HOST, IS_UVICORN, free_port, run_cli

STARTUP_FAILURE = 3
CLIENT_ERRORS = (httpx.TransportError, ssl.SSLError, ConnectionError)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def client_context(
    certs: Path,
    client_cert: bool = False,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_args(certs: Path, cert: str = "server.pem", key: str = "server.key", *extra: str) -> list[str]:
    return ["--ssl-certfile", str(certs / cert), "--ssl-keyfile", str(certs / key), *extra]


def https(srv, path: str = "/") -> str:
    return f"https://{HOST}:{srv.port}{path}"


def get(srv, path: str = "/", ctx: ssl.SSLContext | None = None, http2: bool = False, **kwargs) -> httpx.Response:
    if http2 and IS_UVICORN:
        pytest.skip("uvicorn does not speak HTTP/2")
    with httpx.Client(verify=ctx, http2=http2, timeout=10) as client:
        return client.get(https(srv, path), **kwargs)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue_with_ca(certs: Path, key: str, name: str) -> None:
    """Issue NAME.pem for localhost/127.0.0.1 signed by the development CA, for the existing private key KEY."""
    ext = certs / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-new", "-key", key, "-subj", "/O=tricorn tests/CN=localhost", "-out", f"{name}.csr", cwd=certs)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "30", "-extfile", ext.name, "-out", f"{name}.pem", cwd=certs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def key_variants(tls_certs, tmp_path_factory):
    """Copies of the development certificates plus keys in the other accepted (and refused) formats.

    rsa.key/rsa.pem: RSA PKCS#1 ("BEGIN RSA PRIVATE KEY"); sec1.key: the server's EC key as SEC1
    ("BEGIN EC PRIVATE KEY"); enc.key: the server's key as encrypted PKCS#8 (password "secret");
    legacy.key: the RSA key with the legacy OpenSSL PEM encryption (Proc-Type/DEK-Info, password "secret").
    """
    d = tmp_path_factory.mktemp("tls-keys")
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"):
        (d / name).write_bytes((tls_certs / name).read_bytes())
    openssl("genrsa", "-traditional", "-out", "rsa.key", "2048", cwd=d)
    issue_with_ca(d, "rsa.key", "rsa")
    openssl("ec", "-in", "server.key", "-out", "sec1.key", cwd=d)
    openssl(
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        "server.key",
        "-out",
        "enc.key",
        "-passout",
        "pass:secret",
        cwd=d,
    )
    openssl("rsa", "-aes256", "-traditional", "-in", "rsa.key", "-out", "legacy.key", "-passout", "pass:secret", cwd=d)
    assert "BEGIN RSA PRIVATE KEY" in (d / "rsa.key").read_text()
    assert "BEGIN EC PRIVATE KEY" in (d / "sec1.key").read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" in (d / "enc.key").read_text()
    assert "Proc-Type: 4,ENCRYPTED" in (d / "legacy.key").read_text()
    return d


def startup_failure(*args: str):
    """Run the server with ARGS, expecting it to exit by itself with status 3."""
    if IS_UVICORN:
        pytest.skip("uvicorn exits with status 1 and a traceback (or starts, without --ssl-ca-certs)")
    result = run_cli("tests.apps.basic:app", "--port", str(free_port()), *args, timeout=30)
    assert result.returncode == STARTUP_FAILURE, (result.returncode, result.stdout, result.stderr)
    return result


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR")]


@pytest.fixture(scope="module")
def tls_server(tls_certs):
    """A TLS server without client certificates, shared by the module."""
    from tests.helpers import ServerProcess

    with ServerProcess("tests.apps.basic:app", *tls_args(tls_certs)) as srv:
        srv.wait_ready()
        yield srv


# ---------------------------------------------------------------------------------------------
# Clients over TLS
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_httpx_over_tls(tls_server, tls_certs, http2):
    resp = get(tls_server, "/scope-echo", client_context(tls_certs), http2=http2)
    assert resp.status_code == 200
    assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    scope = resp.json()
    assert scope["scheme"] == "https"
    assert scope["http_version"] == ("2" if http2 else "1.1")


def test_httpx_post_body_over_tls(tls_server, tls_certs):
    body = bytes(range(256)) * 4096  # 1 MiB
    with httpx.Client(verify=client_context(tls_certs), timeout=20) as client:
        resp = client.post(https(tls_server, "/echo"), content=body)
    assert resp.status_code == 200
    assert resp.content == body


def test_untrusted_certificate_is_rejected_by_client(tls_server):
    with pytest.raises(httpx.ConnectError):
        get(tls_server, "/", ssl.create_default_context())


def test_startup_line_says_https(tls_server):
    tls_server.wait_output(f"https://{HOST}:{tls_server.port}")


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_over_tls(tls_server, tls_certs, version):
    if version == "--http2" and IS_UVICORN:
        pytest.skip("uvicorn does not speak HTTP/2")
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", version, "--cacert", str(tls_certs / "ca.pem"),
         "-o", "-", "-w", "\n%{http_version}", https(tls_server, "/curl-path")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, _, http_version = result.stdout.rpartition("\n")
    assert http_version == ("1.1" if version == "--http1.1" else "2")
    scope = httpx.Response(200, content=body.encode()).json()
    assert scope["path"] == "/curl-path"
    assert scope["scheme"] == "https"


def test_curl_with_localhost_name(tls_server, tls_certs):
    """The certificate names localhost too (SNI and name check by curl)."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(tls_certs / "ca.pem"),
         "--resolve", f"localhost:{tls_server.port}:{HOST}", "-o", "/dev/null", "-w", "%{http_code}",
         f"https://localhost:{tls_server.port}/"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"


# ---------------------------------------------------------------------------------------------
# scope["scheme"] and the ASGI TLS extension
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(IS_UVICORN, reason="uvicorn does not provide the ASGI TLS extension")
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_tls_extension_without_client_cert(tls_server, tls_certs, http2):
    scope = get(tls_server, "/", client_context(tls_certs), http2=http2).json()
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert scope["_types"]["extensions"] == "dict"
    server_cert = tls["server_cert"]
    assert isinstance(server_cert, str)
    assert server_cert.strip() == (tls_certs / "server.pem").read_text().strip()
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    # TLS 1.3 suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256
    assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn does not provide the ASGI TLS extension")
def test_tls_extension_tls12(tls_server, tls_certs):
    ctx = client_context(tls_certs, maximum=ssl.TLSVersion.TLSv1_2)
    tls = get(tls_server, "/", ctx).json()["extensions"]["tls"]
    assert tls["tls_version"] == 0x0303
    # The server key is EC P-256: an ECDHE-ECDSA suite.
    assert tls["cipher_suite"] in (0xC02B, 0xC02C, 0xCCA9)


@pytest.fixture(scope="module")
def optional_client_cert_server(tls_certs):
    from tests.helpers import ServerProcess

    args = tls_args(tls_certs, "server.pem", "server.key", "--ssl-ca-certs", str(tls_certs / "ca.pem"))
    with ServerProcess("tests.apps.basic:app", *args, "--ssl-cert-reqs", "1") as srv:
        srv.wait_ready()
        yield srv


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn does not provide the ASGI TLS extension")
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_tls_extension_with_client_cert(optional_client_cert_server, tls_certs, http2):
    resp = get(optional_client_cert_server, "/", client_context(tls_certs, client_cert=True), http2=http2)
    assert resp.status_code == 200
    tls = resp.json()["extensions"]["tls"]
    chain = tls["client_cert_chain"]
    assert isinstance(chain, list) and len(chain) >= 1
    assert all(isinstance(pem, str) for pem in chain)
    assert chain[0].strip() == (tls_certs / "client.pem").read_text().strip()
    # Round trip through the ssl module: a valid PEM certificate.
    assert ssl.PEM_cert_to_DER_cert(chain[0])
    assert isinstance(tls["client_cert_name"], str)
    assert "CN=tricorn-client" in tls["client_cert_name"]
    assert "O=tricorn development" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None


def test_cert_reqs_optional_accepts_both(optional_client_cert_server, tls_certs):
    srv = optional_client_cert_server
    assert get(srv, "/", client_context(tls_certs)).status_code == 200
    assert get(srv, "/", client_context(tls_certs, client_cert=True)).status_code == 200


def test_cert_reqs_optional_rejects_untrusted_client_cert(optional_client_cert_server, tls_certs, tmp_path):
    """A client certificate that does not chain to --ssl-ca-certs is refused even when optional."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=self-signed-client", "-keyout", "self.key", "-out", "self.pem", cwd=tmp_path,
    )  # fmt: skip
    ctx = client_context(tls_certs)
    ctx.load_cert_chain(str(tmp_path / "self.pem"), str(tmp_path / "self.key"))
    with pytest.raises(CLIENT_ERRORS):
        get(optional_client_cert_server, "/", ctx)
    # The server is fine afterwards.
    assert get(optional_client_cert_server, "/", client_context(tls_certs)).status_code == 200


def test_cert_reqs_required(start_server, tls_certs):
    args = tls_args(tls_certs, "server.pem", "server.key", "--ssl-ca-certs", str(tls_certs / "ca.pem"))
    srv = start_server("tests.apps.basic:app", *args, "--ssl-cert-reqs", "2")
    with pytest.raises(CLIENT_ERRORS):
        # With TLS 1.3 the refusal (an alert) can arrive after the client's side of the handshake: the
        # request fails at the latest when the response is read.
        get(srv, "/", client_context(tls_certs))
    resp = get(srv, "/", client_context(tls_certs, client_cert=True))
    assert resp.status_code == 200
    if not IS_UVICORN:
        assert "CN=tricorn-client" in resp.json()["extensions"]["tls"]["client_cert_name"]


def test_cert_reqs_without_ca_is_refused(tls_certs):
    result = startup_failure(*tls_args(tls_certs), "--ssl-cert-reqs", "2")
    if not IS_UVICORN:
        assert any("--ssl-ca-certs" in line for line in error_lines(result)), result.stderr


# ---------------------------------------------------------------------------------------------
# Key formats and passwords
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cert,key,extra",
    [
        ("server.pem", "server.key", []),  # PKCS#8 EC
        ("rsa.pem", "rsa.key", []),  # PKCS#1 RSA
        ("server.pem", "sec1.key", []),  # SEC1 EC
        ("server.pem", "enc.key", ["--ssl-keyfile-password", "secret"]),  # encrypted PKCS#8
    ],
    ids=["pkcs8", "pkcs1-rsa", "sec1", "encrypted-pkcs8"],
)
def test_key_formats_load(start_server, key_variants, cert, key, extra):
    srv = start_server("tests.apps.basic:app", *tls_args(key_variants, cert, key, *extra))
    resp = get(srv, "/", client_context(key_variants))
    assert resp.status_code == 200
    assert resp.json()["scheme"] == "https"
    if cert == "rsa.pem" and not IS_UVICORN:
        # An RSA key negotiates an ECDHE-RSA suite under TLS 1.2.
        tls12 = get(srv, "/", client_context(key_variants, maximum=ssl.TLSVersion.TLSv1_2)).json()
        assert tls12["extensions"]["tls"]["cipher_suite"] in (0xC02F, 0xC030, 0xCCA8)


def test_cert_and_key_in_one_file(start_server, tls_certs, tmp_path):
    """--ssl-certfile alone, with the key in the same PEM file (as Python's load_cert_chain allows)."""
    both = tmp_path / "both.pem"
    both.write_text((tls_certs / "server.pem").read_text() + (tls_certs / "server.key").read_text())
    srv = start_server("tests.apps.basic:app", "--ssl-certfile", str(both))
    assert get(srv, "/", client_context(tls_certs)).status_code == 200


def test_wrong_password(key_variants):
    result = startup_failure(*tls_args(key_variants, "server.pem", "enc.key"), "--ssl-keyfile-password", "wrong")
    if not IS_UVICORN:
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert "password" in lines[0] and "enc.key" in lines[0]
        assert "Traceback" not in result.stderr


def test_missing_password(key_variants):
    result = startup_failure(*tls_args(key_variants, "server.pem", "enc.key"))
    if not IS_UVICORN:
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert "--ssl-keyfile-password" in lines[0]
        assert "Traceback" not in result.stderr


@pytest.mark.skipif(IS_UVICORN, reason="Python's ssl module reads legacy-encrypted keys")
def test_legacy_encrypted_key_is_refused_with_conversion_hint(key_variants):
    result = startup_failure(*tls_args(key_variants, "rsa.pem", "legacy.key"), "--ssl-keyfile-password", "secret")
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "pkcs8" in lines[0].lower()
    assert "openssl" in lines[0]
    assert "Traceback" not in result.stderr


def test_key_not_matching_cert(tls_certs):
    result = startup_failure(*tls_args(tls_certs, "server.pem", "client.key"))
    if not IS_UVICORN:
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("which", ["cert", "key"])
def test_nonexistent_paths(tls_certs, which):
    cert = "missing.pem" if which == "cert" else "server.pem"
    key = "missing.key" if which == "key" else "server.key"
    result = startup_failure(*tls_args(tls_certs, cert, key))
    if not IS_UVICORN:
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert ("missing.pem" if which == "cert" else "missing.key") in lines[0]
        assert "Traceback" not in result.stderr


def test_garbage_cert_file(tls_certs, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("this is not a certificate\n")
    result = startup_failure("--ssl-certfile", str(bad), "--ssl-keyfile", str(tls_certs / "server.key"))
    if not IS_UVICORN:
        assert len(error_lines(result)) == 1, result.stderr
        assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# --ssl-version and --ssl-ciphers
# ---------------------------------------------------------------------------------------------
def test_ssl_version_tls12_only(start_server, tls_certs):
    srv = start_server("tests.apps.basic:app", *tls_args(tls_certs), "--ssl-version", "5")
    with pytest.raises(CLIENT_ERRORS):
        get(srv, "/", client_context(tls_certs, minimum=ssl.TLSVersion.TLSv1_3))
    resp = get(srv, "/", client_context(tls_certs, maximum=ssl.TLSVersion.TLSv1_2))
    assert resp.status_code == 200
    # A client offering both gets TLS 1.2.
    resp = get(srv, "/", client_context(tls_certs))
    assert resp.status_code == 200
    if not IS_UVICORN:
        assert resp.json()["extensions"]["tls"]["tls_version"] == 0x0303


@pytest.mark.parametrize("version", ["17", "2"])
def test_ssl_version_default_allows_12_and_13(start_server, tls_certs, version):
    srv = start_server("tests.apps.basic:app", *tls_args(tls_certs), "--ssl-version", version)
    for minimum, maximum, expected in (
        (ssl.TLSVersion.TLSv1_3, None, 0x0304),
        (None, ssl.TLSVersion.TLSv1_2, 0x0303),
    ):
        resp = get(srv, "/", client_context(tls_certs, minimum=minimum, maximum=maximum))
        assert resp.status_code == 200
        if not IS_UVICORN:
            assert resp.json()["extensions"]["tls"]["tls_version"] == expected


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn accepts TLS 1.0/1.1 protocol constants")
@pytest.mark.parametrize("version", ["3", "4"])
def test_ssl_version_tls10_11_refused(tls_certs, version):
    result = startup_failure(*tls_args(tls_certs), "--ssl-version", version)
    lines = error_lines(result)
    assert len(lines) == 1 and "--ssl-version" in lines[0], result.stderr


def test_ssl_ciphers(start_server, tls_certs):
    srv = start_server("tests.apps.basic:app", *tls_args(tls_certs), "--ssl-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256")
    resp = get(srv, "/", client_context(tls_certs, maximum=ssl.TLSVersion.TLSv1_2))
    assert resp.status_code == 200
    if not IS_UVICORN:
        tls = resp.json()["extensions"]["tls"]
        assert tls["tls_version"] == 0x0303
        assert tls["cipher_suite"] == 0xC02B  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    # A TLS 1.2 client offering only suites outside the list is refused.
    ctx = client_context(tls_certs, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(CLIENT_ERRORS):
        get(srv, "/", ctx)
    # The server still serves afterwards.
    assert get(srv, "/", client_context(tls_certs, maximum=ssl.TLSVersion.TLSv1_2)).status_code == 200


@pytest.mark.skipif(IS_UVICORN, reason="OpenSSL accepts RC4-MD5 as a (possibly empty) cipher list")
def test_ssl_ciphers_unknown_only_refused(tls_certs):
    result = startup_failure(*tls_args(tls_certs), "--ssl-ciphers", "RC4-MD5")
    lines = error_lines(result)
    assert len(lines) == 1 and "--ssl-ciphers" in lines[0], result.stderr


# ---------------------------------------------------------------------------------------------
# Misbehaving clients
# ---------------------------------------------------------------------------------------------
def test_plaintext_http_on_tls_port(tls_server, tls_certs):
    """A plain HTTP/1.1 request on the TLS port gets no HTTP response (an alert or a close), and no harm."""
    with socket.create_connection((HOST, tls_server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except (ConnectionResetError, TimeoutError):
            pass
    assert not data.startswith(b"HTTP/1.1 200")
    assert get(tls_server, "/", client_context(tls_certs)).status_code == 200


def test_garbage_and_abandoned_handshakes(tls_server, tls_certs):
    socks = []
    try:
        # Random bytes, a truncated ClientHello, and connections that never send anything.
        for payload in (b"\x00" * 10, bytes(range(256)) * 20, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b""):
            sock = socket.create_connection((HOST, tls_server.port), timeout=10)
            if payload:
                sock.sendall(payload)
            socks.append(sock)
        for _ in range(3):
            resp = get(tls_server, "/", client_context(tls_certs), http2=not IS_UVICORN)
            assert resp.status_code == 200
    finally:
        for sock in socks:
            sock.close()
    assert get(tls_server, "/", client_context(tls_certs)).status_code == 200


def test_client_closes_mid_handshake_and_after_request(tls_server, tls_certs):
    ctx = client_context(tls_certs)
    for _ in range(5):
        raw = socket.create_connection((HOST, tls_server.port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname=HOST)
        tls.sendall(b"GET /stream?n=200&size=10000 HTTP/1.1\r\nHost: x\r\n\r\n")
        tls.recv(100)
        tls.close()
    assert get(tls_server, "/", ctx).status_code == 200
