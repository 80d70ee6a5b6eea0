"""`--reload`: a new worker on each change of a watched file, through syntax errors and back."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import IS_UVICORN, Closed, RawClient, wait_until

pytestmark = pytest.mark.timeout(30)

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": b"{version}"}})
"""


def write_app(directory: Path, version: str, name: str = "reload_app.py") -> None:
    path = directory / name
    path.write_text(APP.format(version=version))


def body(srv, timeout: float = 5.0) -> bytes:
    with RawClient(port=srv.port, timeout=timeout) as client:
        return client.request("GET", "/", {"Connection": "close"}).body


def serves(srv, version: str) -> bool:
    try:
        return body(srv, timeout=1) == version.encode()
    except (OSError, Closed):
        # A connection the old worker accepted as it was told to stop: closed before its request.
        return False


def reloads(srv) -> int:
    return srv.output.count("Reloading...")


def workers_started(srv) -> int:
    return len(re.findall(r"Started server process \[\d+\]", srv.output))


@pytest.fixture
def project(tmp_path):
    write_app(tmp_path, "v1")
    return tmp_path


def start(start_server, project, *args):
    srv = start_server("reload_app:app", "--reload", *args, cwd=str(project))
    wait_until(lambda: serves(srv, "v1"), message="v1 served")
    if IS_UVICORN:
        # uvicorn starts watching a reload delay after its worker, which may be serving by then: a save made
        # before would be missed. tricorn watches first, so the tests save at once.
        time.sleep(1)
    return srv


def test_change_reloads_the_app(start_server, project):
    srv = start(start_server, project)
    assert f"Will watch for changes in these directories: ['{project}']" in srv.output
    assert re.search(r"Started reloader process \[\d+\] using WatchFiles", srv.output)
    write_app(project, "v2")
    wait_until(lambda: serves(srv, "v2"), message=f"v2 served:\n{srv.output}")
    assert "WatchFiles detected changes in 'reload_app.py'. Reloading..." in srv.output
    assert workers_started(srv) == 2
    assert srv.stop(signal.SIGTERM) == 0
    assert re.search(r"Stopping reloader process \[\d+\]", srv.output)


def test_syntax_error_keeps_watching_and_the_next_save_recovers(start_server, project):
    srv = start(start_server, project)
    (project / "reload_app.py").write_text("def app(:\n")
    srv.wait_output("SyntaxError")
    assert srv.proc.poll() is None
    write_app(project, "v3")
    wait_until(lambda: serves(srv, "v3"), message=f"v3 served:\n{srv.output}")
    assert reloads(srv) == 2


def test_a_burst_of_changes_is_one_reload(start_server, project):
    srv = start(start_server, project)
    for name in ("a.py", "b.py", "c.py"):
        (project / name).write_text("x = 1\n")
    wait_until(lambda: workers_started(srv) == 2, message=f"one reload:\n{srv.output}")
    time.sleep(1)
    assert reloads(srv) == 1
    assert all(f"'{name}'" in srv.output for name in ("a.py", "b.py", "c.py"))


def test_only_included_files_reload(start_server, project):
    srv = start(start_server, project, "--reload-include", "*.txt", "--reload-exclude", "skip_*.py")
    (project / "notes.md").write_text("not watched\n")
    (project / "skip_me.py").write_text("x = 1\n")
    (project / ".hidden.py").write_text("x = 1\n")
    time.sleep(1.5)
    assert reloads(srv) == 0
    (project / "notes.txt").write_text("watched\n")
    wait_until(lambda: reloads(srv) == 1, message=f"a reload for notes.txt:\n{srv.output}")
    assert "detected changes in 'notes.txt'" in srv.output


def test_reload_dir_limits_what_is_watched(start_server, project):
    (project / "src").mkdir()
    srv = start(start_server, project, "--reload-dir", "src")
    assert f"Will watch for changes in these directories: ['{project / 'src'}']" in srv.output
    write_app(project, "v2")
    time.sleep(1.5)
    assert reloads(srv) == 0
    (project / "src" / "module.py").write_text("x = 1\n")
    wait_until(lambda: serves(srv, "v2"), message=f"v2 served after a change in src:\n{srv.output}")


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn matches exclude patterns against the end of the path only")
def test_files_in_hidden_directories_do_not_reload(start_server, project):
    srv = start(start_server, project)
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "lib" / "installed.py").write_text("x = 1\n")
    time.sleep(1.5)
    assert reloads(srv) == 0
    write_app(project, "v2")
    wait_until(lambda: serves(srv, "v2"), message=f"v2 served:\n{srv.output}")
