"""Every option of uvicorn's command line, given on the command line and as an environment variable, with its effect.

One row per option: the arguments, the same through `TRICORN_*` (or `UVICORN_*` for the reference run), and a
check of what it does. Rows of one group share a server start (one per form). A row's `elsewhere` names the tests
that cover the option in depth; the row still checks its effect in both forms here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h2.connection
import h2.events
import httpx
import pytest

from tests.helpers import (
    ENV_PREFIX,
    IS_UVICORN,
    SERVER_NAME,
    RawClient,
    ServerProcess,
    free_port,
    run_cli,
    wait_until,
)
from tests.test_websocket import RawWS, closed_code, ws_connect

# `uvicorn --help` of uvicorn 0.54 (the newest release), in its order.
UVICORN_OPTIONS = (
    "--host --port --uds --fd --reload --reload-dir --reload-include --reload-exclude --reload-delay --workers --loop "
    "--http --http2 --ws --ws-max-size --ws-max-queue --ws-ping-interval --ws-ping-timeout --ws-per-message-deflate "
    "--lifespan --interface --env-file --log-config --log-level --access-log --use-colors --proxy-headers "
    "--server-header --date-header --forwarded-allow-ips --root-path --limit-concurrency --backlog "
    "--limit-max-requests --limit-max-requests-jitter --timeout-keep-alive --timeout-graceful-shutdown "
    "--timeout-worker-healthcheck --ssl-keyfile --ssl-certfile --ssl-keyfile-password --ssl-version --ssl-cert-reqs "
    "--ssl-ca-certs --ssl-ciphers --header --version --app-dir --h11-max-incomplete-event-size --reset-contextvars "
    "--factory"
).split()
UNPREFIXED = ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")
HOST2 = "127.0.0.2"


@dataclass
class Row:
    """One option: `cli` arguments and the `env` variables that mean the same (names without the prefix)."""

    option: str
    cli: list[str]
    env: dict[str, str]
    check: Callable[[Run], None]
    elsewhere: str = ""


@dataclass
class Group:
    """Options that share one server start; `app` and `args` are what the group needs besides its options."""

    app: str
    rows: list[Row]
    args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    uds: bool = False
    fd: bool = False
    # Why the group is skipped when the suite runs against uvicorn, if it is.
    not_uvicorn: str = ""
    # Writes the files of a project into a fresh directory, where the server then runs ("{project}" in rows).
    project: Callable[[Path], None] | None = None


@dataclass
class Run:
    """A started server, the form under test ("cli" or "env") and the files it was given."""

    server: ServerProcess
    form: str
    files: Path
    project: Path

    def get(self, path: str, **kwargs) -> httpx.Response:
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            return client.get(path, **kwargs)

    def scope(self, path: str = "/scope", **kwargs) -> dict:
        return self.get(path, **kwargs).json()

    def stopped(self, sig=signal.SIGTERM) -> str:
        """Stop the server and return everything it logged."""
        self.server.stop(sig)
        return self.server.output


# --- checks -----------------------------------------------------------------------------------------------------
def check_host(run: Run) -> None:
    assert run.scope()["server"] == [HOST2, run.server.port]


def check_port(run: Run) -> None:
    assert run.scope()["server"][1] == run.server.port


def check_root_path(run: Run) -> None:
    scope = run.scope("/x")
    assert scope["root_path"] == "/mounted" and scope["path"] == "/mounted/x"


def check_header(run: Run) -> None:
    assert run.get("/head").headers["x-option"] == "on"


def check_no_server_header(run: Run) -> None:
    assert "server" not in run.get("/head").headers


def check_no_date_header(run: Run) -> None:
    assert "date" not in run.get("/head").headers


def check_no_proxy_headers(run: Run) -> None:
    scope = run.scope(headers={"x-forwarded-for": "203.0.113.1", "x-forwarded-proto": "https"})
    assert scope["client"][0] == "127.0.0.1" and scope["scheme"] == "http"


def check_forwarded_allow_ips(run: Run) -> None:
    scope = run.scope(headers={"x-forwarded-for": "203.0.113.1"})
    assert scope["client"][0] == "127.0.0.1", "127.0.0.1 is not among the trusted addresses any more"


def check_reset_contextvars(run: Run) -> None:
    assert run.get("/ctx-import").json()["import_var"] == "unset"


def check_env_file(run: Run) -> None:
    assert run.get("/env", params={"name": "OPTIONS_TABLE_VALUE"}).json()["value"] == "from-env-file"


def check_backlog(run: Run) -> None:
    # For a listening socket, ss shows the backlog as Send-Q.
    out = subprocess.run(["ss", "-ltnH", f"sport = :{run.server.port}"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[2] == "16", out.stdout


def check_timeout_keep_alive(run: Run) -> None:
    with RawClient(host=run.server.host, port=run.server.port) as client:
        assert client.request("GET", "/head").status == 200
        started = time.monotonic()
        assert client.is_closed(8)
        assert time.monotonic() - started < 4


def check_loop_asyncio(run: Run) -> None:
    assert "SelectorEventLoop" in run.get("/loop").text


def check_lifespan_off(run: Run) -> None:
    run.get("/head")
    assert "Waiting for application startup" not in run.server.output


def check_ws_none(run: Run) -> None:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    with RawClient(host=run.server.host, port=run.server.port) as client:
        assert client.request("GET", "/head", headers).status == 200


def check_no_access_log(run: Run) -> None:
    run.get("/head?marker=no-access")
    time.sleep(0.2)
    assert "marker=no-access" not in run.server.output


def check_use_colors(run: Run) -> None:
    assert "\x1b[" in run.server.stderr


def check_app_dir(run: Run) -> None:
    assert run.get("/").text == "from-app-dir"


def check_h11_max_incomplete_event_size(run: Run) -> None:
    # The largest request head: a 10 KiB header is refused with 431, a small one served (uvicorn's h11 applies
    # the limit to a head that arrives in pieces only).
    assert run.get("/head", headers={"x-small": "a" * 100}).status_code == 200
    assert run.get("/head", headers={"x-big": "a" * 10240}).status_code in ((200, 400) if IS_UVICORN else (431,))


def h2c_get(run: Run, path: str = "/head") -> int | None:
    """Send one HTTP/2 request by prior knowledge; the status, or None if the server does not speak HTTP/2."""
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")], end_stream=True
    )
    with socket.create_connection((run.server.host, run.server.port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
                events = conn.receive_data(data) if data else []
            except (OSError, h2.exceptions.ProtocolError):
                return None
            if not data:
                return None
            for event in events:
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
    return None


def check_http_h11(run: Run) -> None:
    assert run.get("/head").status_code == 200
    assert h2c_get(run) is None
    if not IS_UVICORN:
        run.server.wait_output("--http h11: tricorn serves HTTP/1.1")


def check_http2(run: Run) -> None:
    assert h2c_get(run) == 200


def check_interface_asgi2(run: Run) -> None:
    assert run.get("/").json()["asgi"]["version"] == "2.0"


def check_factory(run: Run) -> None:
    assert run.get("/").text == "from-factory"
    assert "factory detected" not in run.server.output


def check_log_level_warning(run: Run) -> None:
    assert run.get("/head").status_code == 200
    time.sleep(0.2)
    assert "Started server process" not in run.server.output
    assert "GET /head" not in run.server.output


def check_log_config(run: Run) -> None:
    run.server.wait_output("OPTIONS-TABLE-FORMAT INFO Started server process")


def check_uds(run: Run) -> None:
    path = str(run.files / "server.sock")
    with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client:
        assert client.get("http://localhost/scope").json()["server"][0] == path


def check_fd(run: Run) -> None:
    assert run.scope()["server"] == ["127.0.0.1", run.server.port]


def check_limit_concurrency(run: Run) -> None:
    with RawClient(port=run.server.port) as first:
        assert first.request("GET", "/head").status == 200  # stays open: idle keep-alive connections count
        with RawClient(port=run.server.port) as second:
            assert second.request("GET", "/head").status == 503


def check_limit_max_requests(run: Run) -> None:
    for _ in range(3):
        assert run.get("/head").status_code == 200
    run.server.wait_exit(10)
    assert "Maximum request limit of 3 exceeded" in run.server.output


def check_limit_max_requests_jitter(run: Run) -> None:
    # --limit-max-requests 1 plus a jitter drawn in [0, 1000000]: the server almost surely outlives 20 requests.
    for _ in range(20):
        assert run.get("/head").status_code == 200
    time.sleep(0.3)
    assert run.server.proc.poll() is None


def check_timeout_graceful_shutdown(run: Run) -> None:
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=_quiet_get(run, "/sleep?seconds=60&key=opt")))
    thread.start()
    run.server.wait_output("SLEEP-STARTED opt", stream="stdout")
    started = time.monotonic()
    run.server.send_signal(signal.SIGTERM)
    run.server.wait_exit(15)
    assert time.monotonic() - started < 5
    thread.join(10)


def _quiet_get(run: Run, path: str):
    try:
        return run.get(path, timeout=60)
    except httpx.HTTPError as exc:
        return exc


def tls_context(run: Run, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(run.files / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(run.files / "client.pem"), str(run.files / "client.key"))
    return context


def check_tls(run: Run) -> None:
    """--ssl-certfile, --ssl-keyfile (encrypted: --ssl-keyfile-password), --ssl-ca-certs, --ssl-cert-reqs 2,
    --ssl-version 5 (TLS 1.2 only) and --ssl-ciphers: all in one handshake."""
    with socket.create_connection((run.server.host, run.server.port), timeout=5) as raw:
        with tls_context(run, client_cert=True).wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
            tls.sendall(b"GET /head HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection((run.server.host, run.server.port), timeout=5) as raw:
            with tls_context(run, client_cert=False).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /head HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if not tls.recv(100):
                    raise ConnectionError("closed without a client certificate")


def ws_url(run: Run, path: str) -> str:
    return f"ws://{run.server.host}:{run.server.port}{path}"


def check_ws_implementation(run: Run) -> None:
    with ws_connect(run.server, "/echo") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"


def check_ws_max_size(run: Run) -> None:
    with ws_connect(run.server, "/echo", compression=None) as ws:
        ws.send(b"a" * 100)
        assert ws.recv(timeout=5) == b"a" * 100
        ws.send(b"b" * 101)
        assert closed_code(ws)[0] == 1009


def check_ws_max_queue(run: Run) -> None:
    with ws_connect(run.server, "/slow-receiver?n=5&delay=1") as ws:
        for i in range(5):
            ws.send(f"m{i}")
        assert json.loads(ws.recv(timeout=10)) == [f"m{i}" for i in range(5)]


def check_ws_ping(run: Run) -> None:
    raw = RawWS(run.server, "/wait")
    try:
        raw.recv_frame()
        started = time.monotonic()
        _, _, seen = raw.read_close(timeout=8)  # never answers the pings
    finally:
        raw.close()
    assert 0x9 in seen and time.monotonic() - started < 4


def check_ws_per_message_deflate_off(run: Run) -> None:
    with ws_connect(run.server, "/echo", compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


RELOAD_APP = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": b"{version}"}})
"""


def reload_project(directory: Path) -> None:
    (directory / "reload_table_app.py").write_text(RELOAD_APP.format(version="v1"))
    (directory / "src").mkdir()


def served(run: Run, version: str) -> bool:
    try:
        return run.get("/").text == version
    except httpx.HTTPError:
        return False


def reloads(run: Run) -> int:
    return run.server.output.count("Reloading...")


def check_reload(run: Run) -> None:
    (run.project / "reload_table_app.py").write_text(RELOAD_APP.format(version="v2"))
    wait_until(lambda: served(run, "v2"), message=f"the reloaded app:\n{run.server.output}")


def check_reload_exclude(run: Run) -> None:
    # Runs first in its group: an excluded file changes, nothing reloads.
    wait_until(lambda: served(run, "v1"), message=f"v1:\n{run.server.output}")
    time.sleep(1 if IS_UVICORN else 0)
    (run.project / "skip_me.py").write_text("x = 1\n")
    time.sleep(1.5)
    assert reloads(run) == 0, run.server.output


def check_reload_include(run: Run) -> None:
    (run.project / "notes.txt").write_text("watched\n")
    wait_until(lambda: reloads(run) >= 1, message=f"a reload for notes.txt:\n{run.server.output}")
    assert "'notes.txt'" in run.server.output


def check_reload_dir(run: Run) -> None:
    run.server.wait_output(f"Will watch for changes in these directories: ['{run.project / 'src'}']")


def check_reload_delay(run: Run) -> None:
    # After a reload, the next change is noticed --reload-delay (2 s) later, not at once.
    wait_until(lambda: served(run, "v1"), message=f"v1:\n{run.server.output}")
    time.sleep(1 if IS_UVICORN else 0)
    (run.project / "src" / "a.py").write_text("x = 1\n")
    wait_until(lambda: reloads(run) == 1, message=f"a reload:\n{run.server.output}")
    first = time.monotonic()
    (run.project / "src" / "b.py").write_text("x = 2\n")
    wait_until(lambda: reloads(run) == 2, 10, message=f"a second reload:\n{run.server.output}")
    assert time.monotonic() - first > 1.9, "the second change was not delayed"


def worker_pids(run: Run) -> set[int]:
    return {int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", run.server.output)}


def check_two_workers(run: Run) -> None:
    seen: set[int] = set()

    def both() -> bool:
        seen.add(int(run.get("/pid").text))
        return len(seen) == 2

    wait_until(both, 15, interval=0.01, message=f"two workers answering (seen {seen})")


def check_timeout_worker_healthcheck(run: Run) -> None:
    wait_until(lambda: len(worker_pids(run)) == 2, message="two workers")
    hung = min(worker_pids(run))
    os.kill(hung, signal.SIGSTOP)
    started = time.monotonic()
    run.server.wait_output(f"[{hung}]", timeout=10)
    wait_until(lambda: len(worker_pids(run)) == 3, 10, message=f"a replacement:\n{run.server.output}")
    assert time.monotonic() - started < 6, "killed later than --timeout-worker-healthcheck 1 allows"


# --- the table --------------------------------------------------------------------------------------------------
APP = "tests.apps.process:app"
WS_APP = "tests.apps.ws:app"

GROUPS: dict[str, Group] = {
    "main": Group(
        "options_table_app_xyz:app",
        host=HOST2,
        rows=[
            Row("--host", ["--host", HOST2], {"HOST": HOST2}, check_host),
            Row("--port", [], {}, check_port, "every server of this table is given its port"),
            Row(
                "--app-dir",
                ["--app-dir", "{files}"],
                {"APP_DIR": "{files}"},
                check_app_dir,
                "test_cli.py::test_app_dir",
            ),
            Row("--root-path", ["--root-path", "/mounted"], {"ROOT_PATH": "/mounted"}, check_root_path),
            Row("--header", ["--header", "x-option:on"], {"HEADERS": "x-option:on"}, check_header),
            Row("--server-header", ["--no-server-header"], {"SERVER_HEADER": "false"}, check_no_server_header),
            Row("--date-header", ["--no-date-header"], {"DATE_HEADER": "false"}, check_no_date_header),
            Row("--proxy-headers", ["--no-proxy-headers"], {"PROXY_HEADERS": "false"}, check_no_proxy_headers),
            Row("--reset-contextvars", ["--reset-contextvars"], {"RESET_CONTEXTVARS": "true"}, check_reset_contextvars),
            Row("--env-file", ["--env-file", "{files}/table.env"], {"ENV_FILE": "{files}/table.env"}, check_env_file),
            Row("--backlog", ["--backlog", "16"], {"BACKLOG": "16"}, check_backlog),
            Row(
                "--timeout-keep-alive",
                ["--timeout-keep-alive", "1"],
                {"TIMEOUT_KEEP_ALIVE": "1"},
                check_timeout_keep_alive,
            ),
            Row("--loop", ["--loop", "asyncio"], {"LOOP": "asyncio"}, check_loop_asyncio),
            Row("--lifespan", ["--lifespan", "off"], {"LIFESPAN": "off"}, check_lifespan_off, "test_lifespan.py"),
            Row("--ws", ["--ws", "none"], {"WS": "none"}, check_ws_none, "test_websocket.py"),
            Row("--access-log", ["--no-access-log"], {"ACCESS_LOG": "false"}, check_no_access_log),
            Row("--use-colors", ["--use-colors"], {"USE_COLORS": "true"}, check_use_colors),
            Row(
                "--http", ["--http", "h11"], {"HTTP": "h11"}, check_http_h11, "test_http2.py::test_http_h1_refuses_h2c"
            ),
            Row(
                "--h11-max-incomplete-event-size",
                ["--h11-max-incomplete-event-size", "8192"],
                {"H11_MAX_INCOMPLETE_EVENT_SIZE": "8192"},
                check_h11_max_incomplete_event_size,
            ),
        ],
    ),
    "proxy": Group(
        APP,
        rows=[
            Row(
                "--forwarded-allow-ips",
                ["--forwarded-allow-ips", "10.0.0.1"],
                {"FORWARDED_ALLOW_IPS": "10.0.0.1"},
                check_forwarded_allow_ips,
                "test_scope.py, test_nginx.py",
            )
        ],
    ),
    "unprefixed-forwarded-allow-ips": Group(
        APP, rows=[Row("FORWARDED_ALLOW_IPS", [], {"=FORWARDED_ALLOW_IPS": "10.0.0.1"}, check_forwarded_allow_ips)]
    ),
    "http2": Group(
        APP,
        not_uvicorn="uvicorn's --http2 needs its zttp package",
        rows=[Row("--http2", ["--http2"], {"HTTP2": "true"}, check_http2, "test_http2.py")],
    ),
    "asgi2": Group(
        "tests.apps.process:asgi2_app",
        rows=[
            Row("--interface", ["--interface", "asgi2"], {"INTERFACE": "asgi2"}, check_interface_asgi2, "test_wsgi.py")
        ],
    ),
    "factory": Group(
        "tests.apps.basic:create_app", rows=[Row("--factory", ["--factory"], {"FACTORY": "true"}, check_factory)]
    ),
    "quiet": Group(
        APP, rows=[Row("--log-level", ["--log-level", "warning"], {"LOG_LEVEL": "warning"}, check_log_level_warning)]
    ),
    "log-config": Group(
        APP,
        rows=[
            Row(
                "--log-config",
                ["--log-config", "{files}/log.json"],
                {"LOG_CONFIG": "{files}/log.json"},
                check_log_config,
                "test_logging.py",
            )
        ],
    ),
    "uds": Group(
        APP,
        uds=True,
        rows=[
            Row("--uds", ["--uds", "{files}/server.sock"], {"UDS": "{files}/server.sock"}, check_uds, "test_nginx.py")
        ],
    ),
    "fd": Group(
        APP,
        fd=True,
        rows=[Row("--fd", ["--fd", "{fd}"], {"FD": "{fd}"}, check_fd, "test_socket_activation.py")],
    ),
    "concurrency": Group(
        APP,
        rows=[
            Row(
                "--limit-concurrency",
                ["--limit-concurrency", "2"],
                {"LIMIT_CONCURRENCY": "2"},
                check_limit_concurrency,
                "test_cli.py::test_limit_concurrency_503",
            )
        ],
    ),
    "max-requests": Group(
        APP,
        rows=[
            Row(
                "--limit-max-requests",
                ["--limit-max-requests", "3"],
                {"LIMIT_MAX_REQUESTS": "3"},
                check_limit_max_requests,
                "test_gunicorn.py::test_max_requests_recycles_the_worker",
            )
        ],
    ),
    "jitter": Group(
        APP,
        args=["--limit-max-requests", "1"],
        rows=[
            Row(
                "--limit-max-requests-jitter",
                ["--limit-max-requests-jitter", "1000000"],
                {"LIMIT_MAX_REQUESTS_JITTER": "1000000"},
                check_limit_max_requests_jitter,
            )
        ],
    ),
    "graceful": Group(
        APP,
        rows=[
            Row(
                "--timeout-graceful-shutdown",
                ["--timeout-graceful-shutdown", "1"],
                {"TIMEOUT_GRACEFUL_SHUTDOWN": "1"},
                check_timeout_graceful_shutdown,
                "test_cli.py::test_timeout_graceful_shutdown_bounds_shutdown",
            )
        ],
    ),
    "tls": Group(
        APP,
        rows=[
            Row(
                "--ssl-certfile",
                ["--ssl-certfile", "{files}/server.pem"],
                {"SSL_CERTFILE": "{files}/server.pem"},
                check_tls,
                "test_tls.py",
            ),
            Row(
                "--ssl-keyfile",
                ["--ssl-keyfile", "{files}/enc.key"],
                {"SSL_KEYFILE": "{files}/enc.key"},
                check_tls,
                "test_tls.py",
            ),
            Row(
                "--ssl-keyfile-password",
                ["--ssl-keyfile-password", "table-secret"],
                {"SSL_KEYFILE_PASSWORD": "table-secret"},
                check_tls,
                "test_tls.py::test_wrong_password",
            ),
            Row(
                "--ssl-version",
                ["--ssl-version", "5"],
                {"SSL_VERSION": "5"},
                check_tls,
                "test_tls.py::test_ssl_version_tls12_only",
            ),
            Row(
                "--ssl-cert-reqs",
                ["--ssl-cert-reqs", "2"],
                {"SSL_CERT_REQS": "2"},
                check_tls,
                "test_tls.py::test_cert_reqs_required",
            ),
            Row(
                "--ssl-ca-certs",
                ["--ssl-ca-certs", "{files}/ca.pem"],
                {"SSL_CA_CERTS": "{files}/ca.pem"},
                check_tls,
                "test_tls.py",
            ),
            Row(
                "--ssl-ciphers",
                ["--ssl-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                {"SSL_CIPHERS": "ECDHE-ECDSA-AES128-GCM-SHA256"},
                check_tls,
                "test_tls.py::test_ssl_ciphers",
            ),
        ],
    ),
    "websocket": Group(
        WS_APP,
        rows=[
            Row(
                "--ws (an implementation)",
                ["--ws", "wsproto"],
                {"WS": "wsproto"},
                check_ws_implementation,
                "test_websocket.py::test_ws_implementation_choices_serve_websockets",
            ),
            Row(
                "--ws-max-size",
                ["--ws-max-size", "100"],
                {"WS_MAX_SIZE": "100"},
                check_ws_max_size,
                "test_websocket.py::test_ws_max_size",
            ),
            Row(
                "--ws-max-queue",
                ["--ws-max-queue", "1"],
                {"WS_MAX_QUEUE": "1"},
                check_ws_max_queue,
                "test_websocket.py::test_ws_max_queue_loses_nothing",
            ),
            Row(
                "--ws-per-message-deflate",
                ["--ws-per-message-deflate", "false"],
                {"WS_PER_MESSAGE_DEFLATE": "false"},
                check_ws_per_message_deflate_off,
                "test_websocket.py::test_per_message_deflate_disabled",
            ),
        ],
    ),
    # Apart: with --ws-max-queue 1 a receiver that waits stops the server reading its connection, pongs included.
    "websocket-ping": Group(
        WS_APP,
        rows=[
            Row(
                "--ws-ping-interval",
                ["--ws-ping-interval", "0.3"],
                {"WS_PING_INTERVAL": "0.3"},
                check_ws_ping,
                "test_websocket.py::test_ws_ping_timeout_closes_a_client_that_never_pongs",
            ),
            Row(
                "--ws-ping-timeout",
                ["--ws-ping-timeout", "0.3"],
                {"WS_PING_TIMEOUT": "0.3"},
                check_ws_ping,
                "test_websocket.py::test_ws_ping_timeout_closes_a_client_that_never_pongs",
            ),
        ],
    ),
    # Rows run in order: the exclude check must see no reload before the include check makes one.
    "reload": Group(
        "reload_table_app:app",
        project=reload_project,
        rows=[
            Row(
                "--reload-exclude",
                ["--reload-exclude", "skip_*.py"],
                {"RELOAD_EXCLUDES": "skip_*.py"},
                check_reload_exclude,
                "test_reload.py::test_only_included_files_reload",
            ),
            Row(
                "--reload-include",
                ["--reload-include", "*.txt"],
                {"RELOAD_INCLUDES": "*.txt"},
                check_reload_include,
                "test_reload.py::test_only_included_files_reload",
            ),
            Row("--reload", ["--reload"], {"RELOAD": "true"}, check_reload, "test_reload.py"),
        ],
    ),
    "reload-dir-delay": Group(
        "reload_table_app:app",
        not_uvicorn="uvicorn's --reload-delay is the interval between its checks for changes",
        project=reload_project,
        args=["--reload"],
        rows=[
            Row(
                "--reload-dir",
                ["--reload-dir", "{project}/src"],
                {"RELOAD_DIRS": "{project}/src"},
                check_reload_dir,
                "test_reload.py::test_reload_dir_limits_what_is_watched",
            ),
            Row("--reload-delay", ["--reload-delay", "2"], {"RELOAD_DELAY": "2"}, check_reload_delay),
        ],
    ),
    "workers": Group(
        APP,
        rows=[
            Row("--workers", ["--workers", "2"], {"WORKERS": "2"}, check_two_workers, "test_workers.py"),
            Row(
                "--timeout-worker-healthcheck",
                ["--timeout-worker-healthcheck", "1"],
                {"TIMEOUT_WORKER_HEALTHCHECK": "1"},
                check_timeout_worker_healthcheck,
                "test_workers.py::test_hung_worker_is_killed_and_replaced",
            ),
        ],
    ),
    "unprefixed-web-concurrency": Group(
        APP, rows=[Row("WEB_CONCURRENCY", [], {"=WEB_CONCURRENCY": "2"}, check_two_workers, "test_workers.py")]
    ),
}
# Checked without a server: --version prints and exits (see test_version_option).
ROWS_WITHOUT_SERVER = ("--version",)


def _options_in_table() -> set[str]:
    names = {row.option.split(" ")[0] for group in GROUPS.values() for row in group.rows}
    return names | set(ROWS_WITHOUT_SERVER)


def test_every_uvicorn_option_has_a_row_and_is_accepted():
    assert set(UVICORN_OPTIONS) | set(UNPREFIXED) <= _options_in_table(), set(UVICORN_OPTIONS) - _options_in_table()
    help_text = run_cli("--help").stdout
    for option in UVICORN_OPTIONS:
        assert option in help_text, option


@pytest.fixture(scope="module")
def files(tmp_path_factory, tls_certs) -> Path:
    """What the rows name: an app directory, an env file, a log config, certificates and an encrypted key."""
    d = tmp_path_factory.mktemp("options-table")
    (d / "options_table_app_xyz.py").write_text(
        "from tests.apps import basic, process\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'http' and scope['path'].endswith('/'):\n"
        "        return await basic.respond(send, b'from-app-dir')\n"
        "    return await process.app(scope, receive, send)\n"
    )
    (d / "table.env").write_text("OPTIONS_TABLE_VALUE=from-env-file\n")
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "OPTIONS-TABLE-FORMAT %(levelname)s %(message)s"}},
        "handlers": {"plain": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {SERVER_NAME: {"handlers": ["plain"], "level": "INFO", "propagate": False}},
    }
    (d / "log.json").write_text(json.dumps(log_config))
    for name in ("ca.pem", "server.pem", "client.pem", "client.key"):
        (d / name).write_bytes((tls_certs / name).read_bytes())
    subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(tls_certs / "server.key")]
        + ["-out", str(d / "enc.key"), "-passout", "pass:table-secret"],
        check=True,
        capture_output=True,
    )
    return d


def _fill(value: str, files: Path, fd: int | None, project: Path) -> str:
    return value.replace("{files}", str(files)).replace("{fd}", str(fd)).replace("{project}", str(project))


def _env_only(row: Row) -> bool:
    return any(key.startswith("=") for key in row.env)


# Each group in both forms; a group of unprefixed variables (no option) only through the environment.
FORMS = [
    pytest.param(
        name,
        form,
        id=f"{name}-{form}",
        marks=pytest.mark.skipif(IS_UVICORN and bool(group.not_uvicorn), reason=group.not_uvicorn),
    )
    for name, group in GROUPS.items()
    for form in ("cli", "env")
    if form == "env" or not all(_env_only(row) for row in group.rows)
]


@pytest.mark.parametrize("name, form", FORMS)
def test_options(name, form, files, tmp_path):
    group = GROUPS[name]
    rows = [row for row in group.rows if form == "env" or not _env_only(row)]
    listener = None
    args, env = [*group.args], {}
    if group.fd:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
    fd = listener.fileno() if listener else None
    for row in rows:
        if form == "cli":
            args += [_fill(value, files, fd, tmp_path) for value in row.cli]
        else:
            for key, value in row.env.items():
                env[key[1:] if key.startswith("=") else ENV_PREFIX + key] = _fill(value, files, fd, tmp_path)
    port = listener.getsockname()[1] if listener else free_port()
    use_port = not (group.uds or group.fd)
    if form == "env" and use_port:
        env[ENV_PREFIX + "PORT"] = str(port)
    pass_fds = (fd,) if fd is not None else ()
    if group.project is not None:
        group.project(tmp_path)
    cwd = str(tmp_path) if group.project is not None else None
    server = ServerProcess(
        group.app, *args, env=env, use_port=use_port and form == "cli", port=port, pass_fds=pass_fds, cwd=cwd
    )
    try:
        if listener:
            listener.close()
        server.host = group.host
        server.url = f"http://{group.host}:{server.port}"
        server.wait_ready(uds=str(files / "server.sock") if group.uds else None)
        run = Run(server, form, files, tmp_path)
        for row in rows:
            row.check(run)
    finally:
        server.cleanup()


@pytest.mark.parametrize("form", ["cli", "env"])
def test_version_option(form):
    result = run_cli("--version") if form == "cli" else run_cli(env={ENV_PREFIX + "VERSION": "true"})
    assert result.returncode == 0 and f"Running {SERVER_NAME}" in result.stdout, result
