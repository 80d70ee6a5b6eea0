"""gunicorn with tricorn's worker class: real arbiters, real workers, real signals."""

import os
import signal
import ssl
import sys
import textwrap
import threading
import time

import httpx
import pytest

from tests.helpers import HOST, IS_UVICORN, RawClient, ServerProcess, free_port, wait_until

if IS_UVICORN:
    pytest.importorskip("gunicorn")
    WORKER = "uvicorn.workers.UvicornWorker"
else:
    WORKER = "tricorn.workers.TricornWorker"


def gunicorn(app, *args, worker=WORKER, env=None, ready=True, workers=1):
    """Start `gunicorn -k WORKER` on a free port (the arbiter is `server.proc`)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker,
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--no-control-socket",
        *args,
        app,
    ]
    server = ServerProcess(None, cmd=cmd, env=env, port=port)
    if ready:
        server.wait_ready()
    return server


@pytest.fixture
def start_gunicorn():
    started = []

    def start(*args, **kwargs):
        server = gunicorn(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


def get(server, path, timeout=10.0, **kwargs):
    """One request on a new connection (so that any worker may accept it)."""
    with httpx.Client(base_url=server.url, timeout=timeout) as client:
        return client.get(path, **kwargs)


def pids_seen(server, count, timeout=15.0):
    """Request /pid on new connections until `count` different worker pids answered."""
    seen = set()

    def enough():
        seen.add(int(get(server, "/pid").text))
        return len(seen) >= count

    wait_until(enough, timeout, interval=0.01, message=f"{count} worker pids (seen {seen})")
    return seen


def children(pid):
    """The pids whose parent is `pid`."""
    result = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                result.add(int(entry))
    return result


def request_in_thread(server, path, out):
    def run():
        try:
            out["response"] = get(server, path, timeout=60)
        except httpx.HTTPError as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_workers_serve_from_two_processes(start_gunicorn):
    server = start_gunicorn("tests.apps.process:app", workers=2)
    pids = pids_seen(server, 2)
    assert pids <= children(server.proc.pid), (pids, children(server.proc.pid))
    assert server.proc.pid not in pids


def test_a_killed_worker_is_replaced(start_gunicorn):
    server = start_gunicorn("tests.apps.process:app", workers=2)
    first, second = pids_seen(server, 2)
    os.kill(first, signal.SIGKILL)

    def replacement_only():
        # One reading of the process table: two readings can see different moments of the restart.
        others = children(server.proc.pid) - {second}
        return others if len(others) == 1 and first not in others else None

    (replacement,) = wait_until(replacement_only)
    assert pids_seen(server, 2) == {second, replacement}
    server.wait_output(f"Worker (pid:{first}) was sent SIGKILL")


def test_sigterm_lets_a_slow_request_finish(start_gunicorn):
    server = start_gunicorn("tests.apps.process:app", "--graceful-timeout", "20")
    out = {}
    thread = request_in_thread(server, "/sleep?seconds=2&key=g1", out)
    server.wait_output("SLEEP-STARTED g1")
    server.send_signal(signal.SIGTERM)
    thread.join(30)
    assert out["response"].status_code == 200 and out["response"].text == "slept", out
    assert server.wait_exit(15) == 0
    assert "BASIC-LIFESPAN-SHUTDOWN" in server.output


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker does not map --graceful-timeout")
def test_graceful_timeout_bounds_the_wait_and_the_lifespan_shutdown_still_runs(start_gunicorn):
    server = start_gunicorn("tests.apps.process:app", "--graceful-timeout", "3")
    out = {}
    thread = request_in_thread(server, "/sleep?seconds=60&key=g2", out)
    server.wait_output("SLEEP-STARTED g2")
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    assert time.monotonic() - started < 5
    thread.join(10)
    assert "BASIC-LIFESPAN-SHUTDOWN" in server.output, "the worker was killed before its lifespan shutdown"
    assert "SLEEP-DONE g2" not in server.output


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker leaves SIGINT and SIGQUIT to its own handlers")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_sigint_and_sigquit_stop_at_once(start_gunicorn, sig):
    server = start_gunicorn("tests.apps.process:app", "--graceful-timeout", "30")
    out = {}
    thread = request_in_thread(server, "/sleep?seconds=60&key=g3", out)
    server.wait_output("SLEEP-STARTED g3")
    started = time.monotonic()
    server.send_signal(sig)
    assert server.wait_exit(15) == 0
    assert time.monotonic() - started < 5
    thread.join(10)
    assert "response" not in out, "the running request was not ended"


def _gone(pid):
    """True once `pid` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker does not watch its parent")
def test_workers_stop_when_the_arbiter_is_killed(start_gunicorn):
    """No orphans: a worker whose arbiter died (SIGKILL, no chance to stop it) shuts itself down."""
    server = start_gunicorn("tests.apps.process:app", workers=2)
    workers = pids_seen(server, 2)
    server.proc.kill()
    server.proc.wait(5)
    wait_until(lambda: all(_gone(pid) for pid in workers), 15, message=f"workers {workers} to exit")
    server.wait_output("Parent changed, shutting down")


def test_max_requests_recycles_the_worker(start_gunicorn):
    server = start_gunicorn("tests.apps.process:app", "--max-requests", "3")
    pids = [int(get(server, "/pid").text) for _ in range(3)]
    assert len(set(pids)) == 1
    wait_until(lambda: int(get(server, "/pid").text) != pids[0], 15, message="a new worker")
    server.wait_output("Maximum request limit of 3 exceeded")


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker stops notifying the arbiter once it shuts down")
def test_a_recycled_worker_keeps_its_heartbeat_while_it_finishes_a_long_request(start_gunicorn):
    """The worker reached --max-requests during a request that outlasts --timeout: the arbiter must not kill it."""
    server = start_gunicorn("tests.apps.process:app", "--max-requests", "2", "--timeout", "2")
    get(server, "/pid")
    out = {}
    thread = request_in_thread(server, "/sleep?seconds=5&key=g4", out)
    thread.join(30)
    assert out["response"].text == "slept", out
    assert "WORKER TIMEOUT" not in server.output


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker lets SIGABRT dump core")
def test_a_worker_whose_loop_is_blocked_is_aborted_and_replaced(start_gunicorn):
    server = start_gunicorn("tests.apps.process:app", "--timeout", "2")
    first = int(get(server, "/pid").text)
    out = {}
    request_in_thread(server, "/block?seconds=30", out)
    server.wait_output("WORKER TIMEOUT", timeout=15)
    wait_until(lambda: first not in children(server.proc.pid) and children(server.proc.pid), 15)
    assert int(get(server, "/pid").text) != first
    server.wait_output(f"Worker (pid:{first}) exited with code 1")


def test_sighup_loads_the_new_code_and_finishes_the_running_request(start_gunicorn, tmp_path):
    module = tmp_path / "hup_app_xyz.py"
    source = textwrap.dedent("""
        from tests.apps import basic

        async def app(scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/version":
                return await basic.respond(send, VERSION)
            return await basic.app(scope, receive, send)
    """)
    module.write_text(source + 'VERSION = "v1"\n')
    server = start_gunicorn("hup_app_xyz:app", "--pythonpath", str(tmp_path), "--timeout", "2")
    assert get(server, "/version").text == "v1"
    out = {}
    thread = request_in_thread(server, "/sleep?seconds=3&key=g5", out)
    server.wait_output("SLEEP-STARTED g5")
    module.write_text(source + 'VERSION = "v2"\n')
    server.send_signal(signal.SIGHUP)
    wait_until(lambda: get(server, "/version").text == "v2", 15, message="the new code")
    thread.join(30)
    assert out["response"].text == "slept", out
    assert "WORKER TIMEOUT" not in server.output


def test_an_app_that_cannot_be_imported_stops_gunicorn_quickly(start_gunicorn):
    server = start_gunicorn("tests.apps.no_such_module_xyz:app", ready=False)
    started = time.monotonic()
    assert server.wait_exit(20) != 0
    assert time.monotonic() - started < 15
    assert "no_such_module_xyz" in server.output


def test_a_failed_lifespan_startup_stops_gunicorn_with_status_3(start_gunicorn):
    server = start_gunicorn("tests.apps.lifespan_apps:failing_app", ready=False)
    assert server.wait_exit(20) == 3
    assert "Worker failed to boot" in server.output


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker does not map gunicorn's access log format")
def test_access_log_in_gunicorn_format_and_sigusr1_reopens_it(start_gunicorn, tmp_path):
    log = tmp_path / "access.log"
    server = start_gunicorn("tests.apps.process:app", "--access-logfile", str(log))
    get(server, "/pid", headers={"user-agent": "agent-one"})
    wait_until(lambda: log.exists() and "agent-one" in log.read_text(), message="the access line")
    line = log.read_text().splitlines()[-1]
    assert '"GET /pid HTTP/1.1" 200 ' in line and line.startswith("127.0.0.1"), line
    log.rename(tmp_path / "access.log.1")
    server.send_signal(signal.SIGUSR1)
    wait_until(log.exists, message="the reopened log file")
    get(server, "/pid", headers={"user-agent": "agent-two"})
    wait_until(lambda: "agent-two" in log.read_text(), message="the access line in the new file")
    assert "agent-two" not in (tmp_path / "access.log.1").read_text()


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker maps neither --graceful-timeout nor --root-path")
def test_settings_reach_the_server(start_gunicorn):
    server = start_gunicorn(
        "tests.apps.process:app",
        "--keep-alive",
        "1",
        "--forwarded-allow-ips",
        "*",
        "--root-path",
        "/api",
    )
    scope = get(server, "/api/scope", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}).json()
    assert scope["root_path"] == "/api"
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"
    with RawClient(port=server.port) as client:
        assert client.request("GET", "/pid").status == 200
        started = time.monotonic()
        assert client.is_closed(8), "the idle connection outlived --keep-alive 1"
        assert 0.5 < time.monotonic() - started < 4


def test_tls_from_gunicorn_options(start_gunicorn, tls_certs):
    server = start_gunicorn(
        "tests.apps.process:app",
        "--certfile",
        str(tls_certs / "server.pem"),
        "--keyfile",
        str(tls_certs / "server.key"),
    )
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls_certs / "ca.pem")), timeout=10) as client:
        scope = client.get(f"https://localhost:{server.port}/scope").json()
    assert scope["scheme"] == "https"


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker takes a WSGI application for ASGI 2")
def test_a_wsgi_application(start_gunicorn):
    server = start_gunicorn("tests.apps.wsgi_app:app")
    environ = get(server, "/some/path?q=1").json()
    assert environ["PATH_INFO"] == "/some/path" and environ["QUERY_STRING"] == "q=1"
    assert environ["pid"] in children(server.proc.pid)
    assert not environ["main_thread"]


def test_gunicorn_reload_option_restarts_the_worker_on_a_change(start_gunicorn, tmp_path):
    module = tmp_path / "reload_app_xyz.py"
    source = textwrap.dedent("""
        from tests.apps import basic

        async def app(scope, receive, send):
            return await basic.respond(send, VERSION)
    """)
    module.write_text(source + 'VERSION = "v1"\n')
    server = start_gunicorn("reload_app_xyz:app", "--pythonpath", str(tmp_path), "--reload")
    first = get(server, "/").text
    assert first == "v1"
    module.write_text(source + 'VERSION = "v2"\n')

    def reloaded() -> bool:
        # gunicorn's reloader takes its first mtimes once the worker runs, which can be after the
        # write above: a newer mtime on every poll makes sure it sees a change.
        os.utime(module)
        return get(server, "/").text == "v2"

    wait_until(reloaded, 15, interval=0.2, message="the reloaded code")


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's worker serves HTTP/1.1 only")
@pytest.mark.parametrize(
    "args, http2",
    [([], False), (["--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge"], True)],
    ids=["default", "h2"],
)
def test_http2_as_gunicorn_settings_say(start_gunicorn, args, http2):
    server = start_gunicorn("tests.apps.process:app", *args)
    assert get(server, "/head").text == "hello"
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        if http2:
            assert client.get(server.url + "/head").http_version == "HTTP/2"
        else:
            with pytest.raises(httpx.HTTPError):
                client.get(server.url + "/head")


@pytest.mark.skipif(IS_UVICORN, reason="tricorn's worker class")
def test_h11_worker_serves_http11_on_asyncio_only(start_gunicorn):
    server = start_gunicorn(
        "tests.apps.process:app",
        "--http-protocols",
        "h2,h1",
        "--http2-cleartext",
        "prior-knowledge",
        worker="tricorn.workers.TricornH11Worker",
    )
    assert "SelectorEventLoop" in get(server, "/loop").text
    with httpx.Client(http1=False, http2=True, timeout=5) as client, pytest.raises(httpx.HTTPError):
        client.get(server.url + "/head")
