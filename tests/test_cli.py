"""Command line: options, environment variables, exit statuses, signals."""

import os
import re
import signal
import socket
import stat
import threading
import time

import httpx
import pytest

from tests.helpers import (
    ENV_PREFIX,
    HOST,
    SERVER_NAME,
    RawClient,
    free_port,
    graceful_exit_codes,
    run_cli,
    wait_until,
)


def assert_one_readable_error(stderr: str, *needles: str):
    assert "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle.lower() in stderr.lower(), stderr
    assert len([line for line in stderr.splitlines() if line.strip()]) <= 5, stderr


# --- exit statuses ------------------------------------------------------------------------------
def test_bad_module_exits_3():
    r = run_cli("tests.apps.no_such_module_xyz:app", "--port", "0")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert_one_readable_error(r.stderr, "no_such_module_xyz")


def test_bad_attribute_exits_3():
    r = run_cli("tests.apps.basic:no_such_attr", "--port", "0")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert_one_readable_error(r.stderr, "no_such_attr")


def test_malformed_import_string_exits_3():
    r = run_cli("tests.apps.basic", "--port", "0")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert_one_readable_error(r.stderr, "tests.apps.basic")


def test_bind_failure_exits_3():
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("tests.apps.basic:app", "--port", str(port))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "in use" in r.stderr.lower(), r.stderr


def test_failed_lifespan_startup_exits_3():
    r = run_cli("tests.apps.lifespan_apps:failing_app", "--port", "0")
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    assert "startup failed" in r.stderr.lower()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--no-such-option"], "--no-such-option"),
        (["--port", "not-a-number"], "--port"),
        (["--lifespan", "bogus"], "--lifespan"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_option_is_usage_error_exit_2(args, needle):
    r = run_cli("tests.apps.basic:app", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "usage" in r.stderr.lower()


def test_missing_app_is_usage_error():
    r = run_cli()
    assert r.returncode == 2
    assert "usage" in r.stderr.lower()


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert re.fullmatch(rf"Running {SERVER_NAME} \S+ with CPython \d+\.\d+\.\d+ on Linux\s*", r.stdout), r.stdout


def test_help_lists_options():
    r = run_cli("--help")
    assert r.returncode == 0
    for opt in [
        "--host",
        "--port",
        "--uds",
        "--fd",
        "--loop",
        "--lifespan",
        "--log-level",
        "--access-log",
        "--no-access-log",
        "--root-path",
        "--proxy-headers",
        "--no-proxy-headers",
        "--forwarded-allow-ips",
        "--timeout-keep-alive",
        "--timeout-graceful-shutdown",
        "--limit-concurrency",
        "--backlog",
        "--header",
        "--server-header",
        "--no-server-header",
        "--date-header",
        "--no-date-header",
        "--factory",
        "--app-dir",
        "--env-file",
        "--version",
    ]:
        assert opt in r.stdout, opt


# --- environment variables ------------------------------------------------------------------------
def test_env_port_and_root_path(start_server):
    port = free_port()
    s = start_server(
        "tests.apps.basic:app",
        use_port=False,
        port=port,
        env={ENV_PREFIX + "PORT": str(port), ENV_PREFIX + "ROOT_PATH": "/env-root"},
    )
    scope = httpx.get(s.url + "/scope", timeout=10).json()
    assert scope["root_path"] == "/env-root"
    assert scope["server"][1] == port


def test_env_app_and_flag(start_server):
    port = free_port()
    s = start_server(
        None,
        use_port=False,
        port=port,
        env={
            ENV_PREFIX + "APP": "tests.apps.basic:app",
            ENV_PREFIX + "PORT": str(port),
            ENV_PREFIX + "SERVER_HEADER": "false",
        },
    )
    r = httpx.get(s.url + "/head", timeout=10)
    assert r.text == "hello"
    assert "server" not in r.headers


def test_cli_option_wins_over_env(start_server):
    port = free_port()
    s = start_server(
        "tests.apps.basic:app",
        "--root-path",
        "/from-cli",
        port=port,
        env={ENV_PREFIX + "PORT": str(free_port()), ENV_PREFIX + "ROOT_PATH": "/from-env"},
    )
    scope = httpx.get(s.url + "/scope", timeout=10).json()
    assert scope["root_path"] == "/from-cli"
    assert scope["server"][1] == port


# --- binding --------------------------------------------------------------------------------------
def test_uds(start_server, tmp_path):
    path = str(tmp_path / "server.sock")
    s = start_server("tests.apps.basic:app", "--uds", path, use_port=False, uds=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, timeout=10) as client:
        scope = client.get("http://localhost/scope").json()
    assert scope["server"] == [path, None]
    assert scope["client"] is None or scope["client"][0] in ("", path)
    # SIGINT: uvicorn re-raises SIGTERM before its cleanup, leaving the file behind on SIGTERM.
    assert s.stop(signal.SIGINT) in graceful_exit_codes(signal.SIGINT)
    assert not os.path.exists(path), "the socket file is removed on exit"


def test_fd_inherited_tcp_socket(start_server):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    try:
        start_server(
            "tests.apps.basic:app",
            "--fd",
            str(sock.fileno()),
            use_port=False,
            port=port,
            pass_fds=(sock.fileno(),),
            ready=False,
        )
        r = httpx.get(f"http://{HOST}:{port}/scope", timeout=30)
        assert r.status_code == 200
        assert r.json()["server"] == [HOST, port]
        assert r.json()["client"][0] == HOST
    finally:
        sock.close()


def test_backlog_and_loop_and_host(start_server):
    s = start_server("tests.apps.basic:app", "--backlog", "16", "--loop", "asyncio", "--host", HOST)
    assert httpx.get(s.url + "/head", timeout=10).text == "hello"


# --- app loading ----------------------------------------------------------------------------------
def test_app_dir(start_server, tmp_path):
    (tmp_path / "appdir_module_xyz.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'from-app-dir'})\n"
    )
    s = start_server("appdir_module_xyz:app", "--app-dir", str(tmp_path), "--lifespan", "off")
    assert httpx.get(s.url + "/", timeout=10).text == "from-app-dir"


def test_env_file(start_server, tmp_path):
    env_file = tmp_path / "test.env"
    env_file.write_text("TEST_ENV_FILE_VALUE=from-env-file\n")
    s = start_server("tests.apps.basic:app", "--env-file", str(env_file))
    r = httpx.get(s.url + "/env", params={"name": "TEST_ENV_FILE_VALUE"}, timeout=10)
    assert r.json()["value"] == "from-env-file"


def test_factory(start_server):
    s = start_server("tests.apps.basic:create_app", "--factory")
    assert httpx.get(s.url + "/", timeout=10).text == "from-factory"


# --- limits and timeouts --------------------------------------------------------------------------
def test_limit_concurrency_503(start_server):
    s = start_server("tests.apps.basic:app", "--limit-concurrency", "2")
    with RawClient(port=s.port) as a:
        assert a.request("GET", "/head").status == 200  # a stays open (idle keep-alive counts)
        with RawClient(port=s.port) as b:
            r = b.request("GET", "/head")
            assert r.status == 503
            assert r.body == b"Service Unavailable"
            assert r.header("content-type") == "text/plain; charset=utf-8"
            assert r.header("content-length") == "19"
            assert (r.header("connection") or "").lower() == "close"
    # Once the connections are gone, requests are served again.
    wait_until(lambda: httpx.get(s.url + "/head", timeout=10).status_code == 200, 10, message="served again")
    s.wait_output("Exceeded concurrency limit")


def test_timeout_keep_alive_closes_idle_connection(start_server):
    s = start_server("tests.apps.basic:app", "--timeout-keep-alive", "1")
    with RawClient(port=s.port) as c:
        assert c.request("GET", "/head").status == 200
        t0 = time.monotonic()
        assert c.is_closed(8), "idle connection not closed after --timeout-keep-alive"
        elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed <= 6, elapsed


def test_default_keep_alive_keeps_connection_for_a_while(start_server):
    s = start_server("tests.apps.basic:app")
    with RawClient(port=s.port) as c:
        assert c.request("GET", "/head").status == 200
        assert not c.is_closed(2), "default --timeout-keep-alive is 5 s"
        assert c.request("GET", "/head").status == 200


# --- signals and graceful shutdown ----------------------------------------------------------------
def _request_in_thread(url, out):
    try:
        out["response"] = httpx.get(url, timeout=30)
    except Exception as exc:  # noqa: BLE001
        out["error"] = exc


def _refused(port):
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return False
    except OSError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_in_flight_request_finish(start_server, sig):
    s = start_server("tests.apps.basic:app")
    out = {}
    t = threading.Thread(target=_request_in_thread, args=(s.url + "/sleep?seconds=3&key=k1", out))
    t.start()
    s.wait_output("SLEEP-STARTED k1", stream="stdout")
    s.send_signal(sig)
    # New connections are refused while the in-flight request is still running.
    wait_until(lambda: _refused(s.port), 2.5, message="listener closed after signal")
    assert "SLEEP-DONE k1" not in s.stdout and t.is_alive(), "refusal must be observed while the request runs"
    t.join(30)
    assert "error" not in out, out
    assert out["response"].status_code == 200 and out["response"].text == "slept"
    assert s.wait_exit(15) in graceful_exit_codes(sig)
    assert "SLEEP-DONE k1" in s.stdout
    assert "BASIC-LIFESPAN-SHUTDOWN" in s.stdout


def test_shutdown_closes_idle_keep_alive_connections(start_server):
    s = start_server("tests.apps.basic:app", "--timeout-keep-alive", "60")
    with RawClient(port=s.port) as c:
        assert c.request("GET", "/head").status == 200
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        assert c.is_closed(5), "idle keep-alive connection must be closed at shutdown"
        assert s.wait_exit(10) in graceful_exit_codes()
        assert time.monotonic() - t0 < 8


def test_timeout_graceful_shutdown_bounds_shutdown(start_server):
    s = start_server("tests.apps.basic:app", "--timeout-graceful-shutdown", "1")
    out = {}
    t = threading.Thread(target=_request_in_thread, args=(s.url + "/sleep?seconds=60&key=k2", out))
    t.start()
    s.wait_output("SLEEP-STARTED k2", stream="stdout")
    t0 = time.monotonic()
    s.send_signal(signal.SIGTERM)
    s.wait_exit(15)
    assert time.monotonic() - t0 < 8
    t.join(30)
    assert not t.is_alive()
    assert "SLEEP-DONE k2" not in s.stdout
    assert "response" not in out or out["response"].status_code >= 500


def test_no_graceful_timeout_waits_for_request(start_server):
    """Without --timeout-graceful-shutdown the server waits for the in-flight request."""
    s = start_server("tests.apps.basic:app")
    out = {}
    t = threading.Thread(target=_request_in_thread, args=(s.url + "/sleep?seconds=3&key=k3", out))
    t.start()
    s.wait_output("SLEEP-STARTED k3", stream="stdout")
    s.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # the request is still sleeping: the server must not have exited
    assert s.proc.poll() is None, "server exited before the in-flight request finished"
    t.join(30)
    assert out["response"].status_code == 200
    assert s.wait_exit(15) in graceful_exit_codes()


def test_many_options_from_env(start_server):
    port = free_port()
    s = start_server(
        "tests.apps.lifespan_apps:state_app",
        use_port=False,
        port=port,
        env={
            ENV_PREFIX + "HOST": HOST,
            ENV_PREFIX + "PORT": str(port),
            ENV_PREFIX + "LIFESPAN": "off",
            ENV_PREFIX + "ACCESS_LOG": "false",
            ENV_PREFIX + "DATE_HEADER": "false",
            ENV_PREFIX + "TIMEOUT_KEEP_ALIVE": "1",
            ENV_PREFIX + "PROXY_HEADERS": "false",
        },
    )
    with RawClient(port=port) as c:
        r = c.request("GET", "/?marker=envaccess", {"X-Forwarded-For": "203.0.113.9"})
        assert r.status == 200
        assert r.header("date") is None
        assert c.is_closed(8), "TIMEOUT_KEEP_ALIVE=1 from the environment"
    assert '"token": null' in r.body.decode()  # lifespan off: startup never ran
    assert "LIFESPAN-STARTUP" not in s.stdout
    assert "marker=envaccess" not in s.output
