"""One worker process: the supervisor's handle on it, and the function it runs.

The supervisor and each worker share a pipe. The supervisor writes a ping; a thread in the worker answers with
whether its server has finished startup. A worker that does not answer in time is hung; a worker that reads
end-of-file has lost its supervisor and shuts down gracefully instead of serving on as an orphan.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection

from tricorn._ansi import style
from tricorn.config import STARTUP_FAILURE, Config
from tricorn.server import Server

PING = b"ping"
STARTED = b"started"
STARTING = b"starting"

# Workers are started fresh (not forked) so that no thread, lock or event loop state of the supervisor leaks in.
spawn = multiprocessing.get_context("spawn")

logger = logging.getLogger("tricorn.error")


class WorkerProcess:
    """The supervisor's handle on one worker process serving as worker `index`."""

    def __init__(self, config: Config, sockets: list[socket.socket], index: int) -> None:
        self.index = index
        self.conn, child_conn = spawn.Pipe()
        self.process = spawn.Process(
            target=serve_worker,
            kwargs={
                "config": config,
                "sockets": sockets,
                "index": index,
                "conn": child_conn,
                "stdin_fileno": _stdin_fileno(),
            },
            name=f"tricorn-worker-{index}",
        )
        self._child_conn = child_conn
        self.started_at = 0.0
        self.ready = False
        self.stopping = False
        self.ping_sent_at: float | None = None
        self.last_ping_at = 0.0
        # When the supervisor plans to replace it (`--workers-lifetime`), and how soon it may try (after a failure).
        self.expires_at: float | None = None
        self.recycle_after = 0.0

    def start(self) -> None:
        """Start the process; the child end of the pipe now lives in the child only."""
        self.process.start()
        self._child_conn.close()
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        """The process id (the process is started)."""
        assert self.process.pid is not None
        return self.process.pid

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the process ends."""
        return self.process.sentinel

    @property
    def exitcode(self) -> int | None:
        """None while running; the exit status, or minus the signal number that ended it."""
        return self.process.exitcode

    def is_alive(self) -> bool:
        """True until the process has ended."""
        return self.process.is_alive()

    def ping(self) -> None:
        """Ask the worker whether it has started, unless a ping is already waiting for its answer."""
        if self.ping_sent_at is not None:
            return
        try:
            self.conn.send_bytes(PING)
        except OSError:
            return  # the worker is gone: its sentinel says so
        self.ping_sent_at = self.last_ping_at = time.monotonic()

    def read_answers(self) -> None:
        """Read the worker's answers without blocking; each one clears the outstanding ping."""
        try:
            while self.conn.poll(0):
                self.ready = self.conn.recv_bytes() == STARTED
                self.ping_sent_at = None
        except (EOFError, OSError):
            pass  # the worker is gone: its sentinel says so

    def is_unresponsive(self, now: float, timeout: float) -> bool:
        """True when a ping has waited more than `timeout` seconds for its answer."""
        return self.ping_sent_at is not None and now - self.ping_sent_at > timeout

    def terminate(self) -> None:
        """Ask the worker to shut down gracefully (SIGTERM): it finishes its requests, then exits."""
        self.stopping = True
        if self.process.exitcode is None:
            os.kill(self.pid, signal.SIGTERM)
            logger.info("Terminated child process [%d]", self.pid)

    def interrupt(self) -> None:
        """Send SIGINT: to a worker already shutting down, a second interrupt means quit now."""
        self.stopping = True
        if self.process.exitcode is None:
            os.kill(self.pid, signal.SIGINT)

    def kill(self) -> None:
        """End the worker at once (SIGKILL)."""
        self.stopping = True
        if self.process.exitcode is None:
            self.process.kill()

    def close(self) -> None:
        """Reap the ended process and close the pipe."""
        self.process.join()
        self.conn.close()

    def rss(self) -> int | None:
        """Resident memory in bytes, from /proc (Linux); None when it cannot be read."""
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                resident_pages = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return resident_pages * os.sysconf("SC_PAGE_SIZE")


def serve_worker(
    config: Config, sockets: list[socket.socket], index: int, conn: Connection, stdin_fileno: int | None
) -> None:
    """Run in the child: serve on `sockets` as worker `index` until told to stop.

    Exits with status 3 (STARTUP_FAILURE) when the server did not start, which tells the supervisor that
    starting another worker would fail the same way.
    """
    if stdin_fileno is not None:
        # Reopen the supervisor's stdin, so that a debugger's prompt (breakpoint()) reads from the terminal.
        sys.stdin = os.fdopen(stdin_fileno)
    config.worker_index = index
    server = Server(config=config)
    pinger = threading.Thread(target=_answer_pings, args=(conn, server, os.getppid()), name="tricorn-healthcheck")
    pinger.daemon = True
    pinger.start()
    config.configure_logging()
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # the supervisor is stopping this worker; no traceback
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _answer_pings(conn: Connection, server: Server, parent_pid: int) -> None:
    """Answer each ping with whether the server has started; on end-of-file, shut the server down."""
    while True:
        try:
            conn.recv_bytes()
            conn.send_bytes(STARTED if server.started else STARTING)
        except (EOFError, OSError):
            break
    if not server.should_exit:
        message = "Parent process [%d] is gone, shutting down"
        color_message = "Parent process [" + style("%d", fg="cyan", bold=True) + "] is gone, shutting down"
        logger.warning(message, parent_pid, extra={"color_message": color_message})
        server.should_exit = True


def _stdin_fileno() -> int | None:
    """The supervisor's stdin file descriptor, if it has one (`sys.stdin` can be None or closed)."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
