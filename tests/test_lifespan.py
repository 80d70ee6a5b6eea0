"""Lifespan protocol: auto|on|off, state, failures."""

import json
import signal

import httpx
import pytest

from tests.helpers import graceful_exit_codes, run_cli


def get_state(s):
    return httpx.get(s.url + "/", timeout=10).json()


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_state_copied_into_each_request(start_server, mode):
    s = start_server("tests.apps.lifespan_apps:state_app", "--lifespan", mode)
    first = get_state(s)
    assert first["has_state"] and first["state_type"] == "dict"
    assert first["token"] == "abc"
    assert first["seen_mutation"] is False
    second = get_state(s)
    # Top-level keys set by a request do not leak into the next one (shallow copy per request) ...
    assert second["seen_mutation"] is False
    # ... but values are shared (shallow, not deep, copy), as in uvicorn.
    assert second["shared_len"] == first["shared_len"] + 1
    assert "LIFESPAN-STARTUP" in s.stdout
    lifespan_scope = json.loads(s.stdout.split("LIFESPAN-SCOPE ", 1)[1].splitlines()[0])
    assert lifespan_scope["asgi"]["version"] == "3.0"
    assert lifespan_scope["asgi"]["spec_version"] in ("2.0", "2.1", "2.2", "2.3", "2.4", "2.5")
    assert lifespan_scope["has_state"] is True
    assert s.stop() in graceful_exit_codes()
    assert "LIFESPAN-SHUTDOWN" in s.stdout


def test_lifespan_off_never_calls_lifespan(start_server):
    s = start_server("tests.apps.lifespan_apps:state_app", "--lifespan", "off")
    data = get_state(s)
    assert data["token"] is None
    assert "LIFESPAN-STARTUP" not in s.stdout
    assert s.stop() in graceful_exit_codes()
    assert "LIFESPAN-SHUTDOWN" not in s.stdout


def test_lifespan_auto_tolerates_unsupported_app(start_server):
    s = start_server("tests.apps.lifespan_apps:unsupported_app", "--lifespan", "auto")
    data = get_state(s)
    assert data["has_state"] is True
    assert "lifespan" in s.stderr.lower() and "unsupported" in s.stderr.lower()
    assert "Traceback" not in s.stderr
    assert s.stop() in graceful_exit_codes()


def test_lifespan_off_with_unsupported_app(start_server):
    s = start_server("tests.apps.lifespan_apps:unsupported_app", "--lifespan", "off")
    assert get_state(s)["has_state"] is True
    assert "UNSUPPORTED-CALLED-WITH" not in s.stdout
    assert s.stop() in graceful_exit_codes()


def test_lifespan_on_with_unsupported_app_fails_startup():
    r = run_cli("tests.apps.lifespan_apps:unsupported_app", "--lifespan", "on", "--port", "0")
    assert r.returncode == 3, r.stderr
    assert "startup failed" in r.stderr.lower()


def test_startup_failed_message_exits_3():
    r = run_cli("tests.apps.lifespan_apps:failing_app", "--port", "0")
    assert r.returncode == 3, r.stderr
    assert "boom-startup-failed" in r.stderr
    assert "startup failed" in r.stderr.lower()
    assert "Traceback" not in r.stderr


def test_startup_raising_in_on_mode_exits_3():
    r = run_cli("tests.apps.lifespan_apps:raising_startup_app", "--lifespan", "on", "--port", "0")
    assert r.returncode == 3, r.stderr
    assert "boom-startup-raised" in r.stderr


def test_shutdown_failed_is_reported(start_server):
    s = start_server("tests.apps.lifespan_apps:shutdown_failing_app")
    assert get_state(s)["has_state"] is True
    s.stop(signal.SIGTERM)
    assert "boom-shutdown-failed" in s.stderr
