"""Logging: startup lines, access log in uvicorn's format, tracebacks."""

import logging
import re

import httpx
import pytest

from tests.helpers import IS_UVICORN, SERVER_NAME, RawClient, ServerProcess, run_cli, wait_until


@pytest.fixture(scope="module")
def srv():
    with ServerProcess("tests.apps.basic:app") as s:
        s.wait_ready()
        yield s


def test_startup_lines(srv):
    err = srv.wait_output("Application startup complete.", stream="stderr")
    assert re.search(rf"INFO:\s+Started server process \[{srv.proc.pid}\]", err), err
    assert re.search(r"INFO:\s+Waiting for application startup\.", err), err
    assert re.search(rf"INFO:\s+\w+ running on http://127\.0\.0\.1:{srv.port} \(Press CTRL\+C to quit\)", err), err


def test_access_line_format_on_stdout(srv):
    with RawClient(port=srv.port) as c:
        local_port = c.sock.getsockname()[1]
        assert c.request("GET", "/scope?q=1&r=2").status == 200
    line = rf'INFO:\s+127\.0\.0\.1:{local_port} - "GET /scope\?q=1&r=2 HTTP/1\.1" 200 OK'
    wait_until(lambda: re.search(line, srv.stdout), 10, message=f"access line {line} in stdout:\n{srv.output}")
    assert not re.search(line, srv.stderr)


def test_access_line_http10_and_status_phrase(srv):
    with RawClient(port=srv.port) as c:
        local_port = c.sock.getsockname()[1]
        c.send(b"POST /status?code=404 HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        assert c.read_response().status == 404
    line = rf'INFO:\s+127\.0\.0\.1:{local_port} - "POST /status\?code=404 HTTP/1\.0" 404 Not Found'
    wait_until(lambda: re.search(line, srv.stdout), 10, message=f"access line {line}:\n{srv.output}")


@pytest.mark.skipif(IS_UVICORN, reason="compares with tricorn's AccessFormatter")
@pytest.mark.parametrize("code", [200, 418, 422, 599])
def test_access_line_is_what_the_formatter_writes(srv, code):
    """Default lines are written by the server itself: byte for byte what `AccessFormatter` makes of them."""
    from tricorn.logging import ACCESS_FORMAT, AccessFormatter

    with RawClient(port=srv.port) as c:
        local_port = c.sock.getsockname()[1]
        assert c.request("GET", f"/status?code={code}").status == code
    args = (f"127.0.0.1:{local_port}", "GET", f"/status?code={code}", "1.1", code)
    record = logging.LogRecord("tricorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)
    expected = AccessFormatter(fmt=ACCESS_FORMAT, use_colors=False).format(record) + "\n"
    wait_until(lambda: expected in srv.stdout, 10, message=f"{expected!r} in stdout:\n{srv.stdout}")


def test_access_log_follows_logging_changes_at_run_time(start_server):
    s = start_server("tests.apps.access_filter:app")
    for path in ("/before", "/quiet", "/secret", "/after"):
        assert httpx.get(s.url + path, timeout=10).status_code == 200
    wait_until(lambda: '"GET /after HTTP/1.1" 200' in s.stdout, 10, message=f"access lines:\n{s.output}")
    assert '"GET /before HTTP/1.1" 200' in s.stdout
    assert '"GET /quiet HTTP/1.1" 200' in s.stdout
    assert "/secret" not in s.stdout, "a filter added at run time must apply"
    lines = [s.stdout.index(f'"GET {path} HTTP/1.1"') for path in ("/before", "/quiet", "/after")]
    assert lines == sorted(lines), "lines keep their order when they change path"


def test_access_line_keeps_raw_path(srv):
    httpx.get(srv.url + "/caf%C3%A9", timeout=10)
    wait_until(
        lambda: '"GET /caf%C3%A9 HTTP/1.1" 200' in srv.stdout, 10, message=f"raw path in access line:\n{srv.output}"
    )


def test_traceback_logged_on_app_exception(srv):
    assert httpx.get(srv.url + "/raise-before", timeout=10).status_code == 500
    err = srv.wait_output("boom-before-start", stream="stderr")
    assert re.search(r"ERROR:\s+Exception in ASGI application", err), err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: boom-before-start" in err


def test_no_response_logged(srv):
    assert httpx.get(srv.url + "/no-response", timeout=10).status_code == 500
    srv.wait_output("ASGI callable returned without starting response.", stream="stderr")


def test_shutdown_lines(start_server):
    s = start_server("tests.apps.basic:app")
    s.stop()
    err = s.stderr
    assert re.search(r"INFO:\s+Shutting down", err), err
    assert re.search(r"INFO:\s+Application shutdown complete\.", err), err
    assert re.search(rf"INFO:\s+Finished server process \[{s.proc.pid}\]", err), err


def test_no_access_log(start_server):
    s = start_server("tests.apps.basic:app", "--no-access-log")
    assert httpx.get(s.url + "/scope?marker=noaccess", timeout=10).status_code == 200
    assert httpx.get(s.url + "/raise-before", timeout=10).status_code == 500
    s.wait_output("boom-before-start", stream="stderr")  # error log still on
    assert "marker=noaccess" not in s.output
    assert '"GET' not in s.output


def test_log_level_warning_hides_info(start_server):
    s = start_server("tests.apps.basic:app", "--log-level", "warning")
    assert httpx.get(s.url + "/scope?marker=quiet", timeout=10).status_code == 200
    assert httpx.get(s.url + "/raise-before", timeout=10).status_code == 500
    s.wait_output("boom-before-start", stream="stderr")
    assert "marker=quiet" not in s.output
    assert "Application startup complete" not in s.output


def test_log_level_debug(start_server):
    s = start_server("tests.apps.basic:app", "--log-level", "debug")
    assert httpx.get(s.url + "/head", timeout=10).status_code == 200
    s.wait_output('"GET /head HTTP/1.1" 200', stream="stdout")


def _log_config(server: str) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {
                "()": f"{server}.logging.AccessFormatter",
                "fmt": "CUSTOM-ACCESS %(client_addr)s %(request_line)s %(status_code)s",
                "use_colors": False,
            },
            "default": {
                "()": f"{server}.logging.DefaultFormatter",
                "fmt": "CUSTOM-DEFAULT %(levelprefix)s %(message)s",
            },
        },
        "handlers": {
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            f"{server}.error": {"handlers": ["default"], "level": "INFO", "propagate": False},
            f"{server}.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_log_config_file_with_the_formatter_classes(start_server, tmp_path, suffix):
    import json

    from tests.helpers import SERVER

    path = tmp_path / f"logging{suffix}"
    path.write_text(json.dumps(_log_config(SERVER)))  # JSON is valid YAML
    s = start_server("tests.apps.basic:app", "--log-config", str(path))
    with RawClient(port=s.port) as c:
        local_port = c.sock.getsockname()[1]
        assert c.request("GET", "/scope?x=1").status == 200
    line = rf"CUSTOM-ACCESS 127\.0\.0\.1:{local_port} GET /scope\?x=1 HTTP/1\.1 200 OK"
    wait_until(lambda: re.search(line, s.stdout), 10, message=f"custom access line in:\n{s.output}")
    assert "CUSTOM-DEFAULT INFO:" in s.stderr


@pytest.mark.skipif(SERVER_NAME == "uvicorn", reason="checks that tricorn serves uvicorn's own log configs")
def test_a_uvicorn_log_config_keeps_working(start_server, tmp_path):
    import json

    config = _log_config("uvicorn")
    config["formatters"]["access"]["fmt"] = "UVICORN-STYLE %(client_addr)s %(request_line)s %(status_code)s"
    path = tmp_path / "uvicorn-logging.json"
    path.write_text(json.dumps(config))
    s = start_server("tests.apps.basic:app", "--log-config", str(path))
    with RawClient(port=s.port) as c:
        local_port = c.sock.getsockname()[1]
        assert c.request("GET", "/scope").status == 200
    line = rf"UVICORN-STYLE 127\.0\.0\.1:{local_port} GET /scope HTTP/1\.1 200 OK"
    wait_until(lambda: re.search(line, s.stdout), 10, message=f"uvicorn-style access line in:\n{s.output}")
    assert "CUSTOM-DEFAULT INFO:" in s.stderr


ACCESS_FORMAT = (
    '%(h)s %(l)s %(t)s "%(r)s" %(s)s %(b)s %(B)s %(M)s %(D)s "%(a)s" %({x-request-id}i)s %({content-type}o)s'
)


@pytest.mark.skipif(IS_UVICORN, reason="--access-log-format is tricorn's (gunicorn's atoms)")
def test_access_log_format_written_at_completion(start_server):
    srv = start_server("tests.apps.basic:app", "--access-log-format", ACCESS_FORMAT)
    headers = {"x-request-id": "req-7", "user-agent": "probe/1"}
    assert httpx.get(srv.url + "/sleep?seconds=0.2&x=1", headers=headers, timeout=10).status_code == 200
    assert httpx.head(srv.url + "/head", timeout=10).status_code == 200
    assert httpx.get(srv.url + "/raise-before", timeout=10).status_code == 500
    pattern = (
        r"INFO:\s+127\.0\.0\.1:\d+ - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
        r'"GET /sleep\?seconds=0\.2&x=1 HTTP/1\.1" 200 (\d+) (\d+) (\d+) (\d+) "probe/1" req-7 (\S+)'
    )
    match = wait_until(lambda: re.search(pattern, srv.stdout), 10, message=f"access line:\n{srv.output}")
    size, size_b, millis, micros, content_type = match.groups()
    assert size == size_b and int(size) > 0
    # The app's 0.2 s sleep is timed by the loop's clock, which libuv reads once per iteration and
    # counts in whole milliseconds: it can end up to 1 ms short of 0.2 s by the wall clock.
    assert int(millis) >= 199 and int(micros) >= 199_000, "the duration covers the app's sleep"
    assert content_type.startswith(("application/json", "text/plain"))
    head = r'"HEAD /head HTTP/1\.1" 200 - 0 '
    wait_until(lambda: re.search(head, srv.stdout), 10, message=f"HEAD line (no content sent):\n{srv.output}")
    wait_until(lambda: '"GET /raise-before HTTP/1.1" 500 -' in srv.stdout, 10, message=f"500 line:\n{srv.output}")


@pytest.mark.skipif(IS_UVICORN, reason="--access-log-format is tricorn's (gunicorn's atoms)")
def test_unknown_access_log_atom_is_one_error_line():
    result = run_cli("tests.apps.basic:app", "--access-log-format", "%(zz)s")
    assert result.returncode == 3
    assert "--access-log-format: unknown atom %(zz)s" in result.stderr
