"""`--workers N`: worker processes on one socket; restarts, signals, health checks and recycling."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers import IS_UVICORN, REPO, SERVER, Closed, RawClient, clean_env, free_port, wait_until

pytestmark = pytest.mark.timeout(30)

tricorn_only = pytest.mark.skipif(IS_UVICORN, reason="tricorn's own supervisor features")


def get(srv, path: str, timeout: float = 5.0):
    """GET `path` on a new connection."""
    with RawClient(port=srv.port, timeout=timeout) as client:
        return client.request("GET", path, {"Connection": "close"})


def whoami(srv) -> dict:
    """The pid and multiprocessing name of the worker that answers."""
    response = get(srv, "/pid")
    assert response.status == 200
    return json.loads(response.body)


def started_pids(srv) -> list[int]:
    """Pids of the worker processes started so far, from the log."""
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", srv.output)]


def _stat(pid: int) -> list[str] | None:
    """State and parent pid (and the rest) of a process that is not a zombie; None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields


def alive(pid: int) -> bool:
    return _stat(pid) is not None


def children(pid: int) -> set[int]:
    """Live child processes of `pid`."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.add(int(entry))
    return found


def seen_pids(srv, count: int, within: float = 15.0) -> set[int]:
    """Ask until `count` different workers have answered (new connections are spread by the kernel).

    Time-bounded rather than count-bounded: a worker that was just started may still be importing
    the app on a loaded machine, and only joins the accepting once it is ready.
    """
    pids: set[int] = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids.add(whoami(srv)["pid"])
        if len(pids) >= count:
            return pids
    raise AssertionError(f"only {pids} answered in {within} s")


def start_workers(start_server, count: int, *args: str):
    srv = start_server("tests.apps.basic:app", "--workers", str(count), *args)
    wait_until(lambda: len(started_pids(srv)) >= count, message=f"{count} workers started:\n{srv.output}")
    wait_until(lambda: srv.output.count("Application startup complete.") >= count, message="startup complete")
    return srv


class Load(threading.Thread):
    """GET /pid on new connections, one after the other, until stopped; records who answered and what failed."""

    def __init__(self, srv) -> None:
        super().__init__(daemon=True)
        self.srv = srv
        self.pids: list[int] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.pids.append(whoami(self.srv)["pid"])
            except Exception as exc:
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def test_two_workers_serve_from_two_processes(start_server):
    srv = start_workers(start_server, 2)
    pids = seen_pids(srv, 2)
    assert pids == set(started_pids(srv))
    assert children(srv.proc.pid) >= pids
    assert f"Started parent process [{srv.proc.pid}]" in srv.output
    assert srv.output.count("running on http://127.0.0.1:") == 1


def test_web_concurrency_sets_the_worker_count(start_server):
    srv = start_server("tests.apps.basic:app", env={"WEB_CONCURRENCY": "2"})
    wait_until(lambda: len(started_pids(srv)) == 2, message=f"2 workers:\n{srv.output}")
    assert seen_pids(srv, 2)


def test_workers_need_an_import_string():
    code = f"import {SERVER}\n{SERVER}.run(lambda scope, receive, send: None, workers=2, port={free_port()})"
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=15, cwd=str(REPO)
    )
    assert result.returncode == 3
    assert "You must pass the application as an import string to enable 'reload' or 'workers'." in result.stderr


def test_killed_worker_is_replaced_while_the_other_serves(start_server):
    srv = start_workers(start_server, 2)
    victim, survivor = started_pids(srv)
    os.kill(victim, signal.SIGKILL)
    # Connections wait in the shared backlog: the survivor answers all of them meanwhile.
    answered = {whoami(srv)["pid"] for _ in range(20)}
    assert victim not in answered
    srv.wait_output(f"Child process [{victim}] died")
    wait_until(lambda: len(started_pids(srv)) == 3, message=f"a replacement:\n{srv.output}")
    replacement = started_pids(srv)[2]
    assert seen_pids(srv, 2) == {survivor, replacement}


def test_hung_worker_is_killed_and_replaced(start_server):
    srv = start_workers(start_server, 2, "--timeout-worker-healthcheck", "1")
    hung = started_pids(srv)[0]
    os.kill(hung, signal.SIGSTOP)
    srv.wait_output(f"Child process [{hung}] died", timeout=10)
    wait_until(lambda: len(started_pids(srv)) == 3, message=f"a replacement:\n{srv.output}")
    assert not alive(hung)
    assert hung not in seen_pids(srv, 2)


def test_sighup_replaces_every_worker_without_failing_a_request(start_server):
    srv = start_workers(start_server, 2)
    old = set(started_pids(srv))
    load = Load(srv)
    load.start()
    wait_until(lambda: len(load.pids) > 10, message="requests before SIGHUP")
    srv.send_signal(signal.SIGHUP)
    wait_until(
        lambda: all(f"Finished server process [{pid}]" in srv.output for pid in old),
        timeout=15,
        message=f"old workers finished:\n{srv.output}",
    )
    # The one request in flight when the log line was read may have been answered by an old worker.
    after = len(load.pids) + 1
    wait_until(lambda: len(load.pids) > after + 10, message="requests after the restart")
    load.stop()
    # uvicorn now and then resets a connection its stopping worker accepted but had not read yet.
    assert load.failures == [] or IS_UVICORN
    assert "Received SIGHUP, restarting processes." in srv.output
    new = set(started_pids(srv)) - old
    assert len(new) == 2
    assert set(load.pids[after:]) <= new
    # Each replacement started before its predecessor was told to stop.
    hup = srv.output.index("Received SIGHUP")
    starts = sorted(srv.output.index(f"Started server process [{pid}]") for pid in new)
    stops = [match.start() for match in re.finditer(r"Terminated child process", srv.output[hup:])]
    assert len(stops) == 2
    assert starts[0] < hup + stops[0] and starts[1] < hup + stops[1]


def test_sighup_keeps_the_workers_when_the_new_code_cannot_start(start_server, tmp_path):
    app = tmp_path / "deployed_app.py"
    app.write_text("from tests.apps.basic import app\n")
    srv = start_server("deployed_app:app", "--workers", "2", "--app-dir", str(tmp_path))
    wait_until(lambda: len(started_pids(srv)) == 2, message=f"2 workers:\n{srv.output}")
    old = set(started_pids(srv))
    app.write_text("def app(:\n")
    srv.send_signal(signal.SIGHUP)
    srv.wait_output("aborting the restart.", timeout=15)
    assert "SyntaxError" in srv.output
    assert seen_pids(srv, 2) == old
    assert srv.proc.poll() is None


def test_sigttin_adds_and_sigttou_removes_a_worker(start_server):
    srv = start_workers(start_server, 2)
    srv.send_signal(signal.SIGTTIN)
    srv.wait_output("Received SIGTTIN, increasing the number of processes.")
    wait_until(lambda: len(started_pids(srv)) == 3, message=f"a third worker:\n{srv.output}")
    third = started_pids(srv)[2]
    assert seen_pids(srv, 3) == set(started_pids(srv))

    srv.send_signal(signal.SIGTTOU)
    srv.wait_output("Received SIGTTOU, decreasing number of processes.")
    srv.wait_output(f"Finished server process [{third}]")
    wait_until(lambda: third not in children(srv.proc.pid), message="the third worker exited")
    assert len(children(srv.proc.pid) & set(started_pids(srv))) == 2

    srv.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(children(srv.proc.pid) & set(started_pids(srv))) == 1, message="one worker left")
    srv.send_signal(signal.SIGTTOU)
    srv.wait_output("Already reached one process, cannot decrease the number of processes anymore.")
    assert whoami(srv)["pid"] in started_pids(srv)


def test_max_requests_recycles_workers(start_server):
    srv = start_workers(start_server, 2, "--limit-max-requests", "3")
    first = set(started_pids(srv))
    deadline = time.monotonic() + 15
    answered = set()
    while len(answered - first) < 2 and time.monotonic() < deadline:
        try:
            answered.add(whoami(srv)["pid"])
        except (OSError, Closed):
            if not IS_UVICORN:  # see test_sighup_replaces_every_worker_without_failing_a_request
                raise
        time.sleep(0.05)
    assert len(answered - first) >= 2, srv.output
    assert "Maximum request limit of 3 exceeded. Terminating process." in srv.output
    assert any(f"Child process [{pid}] died" in srv.output for pid in first)
    assert srv.proc.poll() is None


@pytest.mark.parametrize("app", ["tests.apps.lifespan_apps:failing_app", "tests.apps.no_such_module:app"])
def test_startup_failure_stops_the_parent_with_status_3(start_server, app):
    srv = start_server(app, "--workers", "2", ready=False)
    status = srv.wait_exit(timeout=15)
    # uvicorn's parent logs the failure but exits with 0.
    assert status == (0 if IS_UVICORN else 3), srv.output
    assert "failed to start, stopping the parent process." in srv.output
    assert "Stopping parent process" in srv.output


def test_sigterm_lets_every_worker_finish_its_requests(start_server):
    srv = start_workers(start_server, 2)
    results: list[bytes] = []

    def slow_request(key: int) -> None:
        results.append(get(srv, f"/sleep?seconds=1.5&key={key}", timeout=10).body)

    threads = [threading.Thread(target=slow_request, args=(key,)) for key in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: srv.output.count("SLEEP-STARTED") == 4, message=f"4 requests running:\n{srv.output}")
    srv.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(10)
    assert results == [b"slept"] * 4
    assert srv.wait_exit() == 0
    assert srv.output.count("SLEEP-DONE") == 4
    assert srv.output.count("BASIC-LIFESPAN-SHUTDOWN") == 2
    assert "Received SIGTERM, exiting." in srv.output
    assert srv.output.rstrip().endswith(f"Stopping parent process [{srv.proc.pid}]")


@tricorn_only
def test_worker_index_is_inherited_by_the_replacement(start_server):
    srv = start_workers(start_server, 2)
    names = {}
    while len(names) < 2:
        worker = whoami(srv)
        names[worker["process"]] = worker["pid"]
    assert sorted(names) == ["tricorn-worker-0", "tricorn-worker-1"]
    os.kill(names["tricorn-worker-1"], signal.SIGKILL)
    wait_until(lambda: len(started_pids(srv)) == 3, message=f"a replacement:\n{srv.output}")
    replacement = started_pids(srv)[2]
    wait_until(lambda: whoami(srv) == {"pid": replacement, "process": "tricorn-worker-1"}, message="worker 1 again")
    srv.send_signal(signal.SIGTTIN)
    wait_until(lambda: whoami(srv)["process"] == "tricorn-worker-2", message="a worker 2")


@tricorn_only
def test_workers_lifetime_replaces_workers_one_by_one(start_server):
    srv = start_workers(start_server, 2, "--workers-lifetime", "3")
    first = {}
    while len(first) < 2:
        worker = whoami(srv)
        first[worker["process"]] = worker["pid"]
    load = Load(srv)
    load.start()
    wait_until(
        lambda: all(f"Finished server process [{pid}]" in srv.output for pid in first.values()),
        timeout=15,
        message=f"both workers replaced:\n{srv.output}",
    )
    load.stop()
    assert load.failures == []
    assert srv.output.count("(--workers-lifetime 3); replacing it.") == 2
    # The first workers are spread over the second half of a lifetime: worker 1 is due after 2.25 s, worker 0 after 3.
    due = [
        srv.output.index(f"Child process [{first[name]}] has served")
        for name in ("tricorn-worker-1", "tricorn-worker-0")
    ]
    assert due == sorted(due)


@tricorn_only
def test_workers_max_rss_replaces_a_worker_that_grows(start_server):
    srv = start_server("tests.apps.basic:app", env={"TRICORN_WORKERS_MAX_RSS": "200"})
    wait_until(lambda: len(started_pids(srv)) == 1, message="one worker")
    (first,) = started_pids(srv)
    assert f"Started parent process [{srv.proc.pid}]" in srv.output
    assert json.loads(get(srv, "/grow?mib=250").body) == first
    srv.wait_output(f"Child process [{first}] uses", timeout=10)
    srv.wait_output(f"Finished server process [{first}]", timeout=10)
    assert whoami(srv)["pid"] == started_pids(srv)[1]


@tricorn_only
def test_workers_stop_when_the_parent_is_killed(start_server):
    srv = start_workers(start_server, 2)
    pids = started_pids(srv)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(5)
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), message=f"orphan worker {pid} exited")
    assert srv.output.count(f"Parent process [{srv.proc.pid}] is gone, shutting down") == 2
