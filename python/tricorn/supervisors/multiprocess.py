"""`--workers N`: a parent process that keeps N worker processes serving on the sockets it bound.

Each worker has an index 0..N-1 that its replacements inherit (`config.worker_index` in the worker).
Signals to the parent: SIGINT/SIGTERM stop every worker gracefully (a second SIGINT makes them quit at once),
SIGHUP replaces the workers one by one (each replacement serves before its predecessor is told to stop),
SIGTTIN adds a worker, SIGTTOU removes the last one.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from multiprocessing.connection import wait

from tricorn._ansi import style
from tricorn.config import STARTUP_FAILURE, Config
from tricorn.sockets import SupervisorSockets
from tricorn.supervisors.recycling import Recycling
from tricorn.supervisors.signals import SignalQueue
from tricorn.supervisors.worker import WorkerProcess

HEALTHCHECK_INTERVAL = 0.5  # seconds between pings to a worker that serves
STARTUP_INTERVAL = 0.1  # seconds between pings to a worker that has not started yet, to see it ready soon
RECYCLE_INTERVAL = 0.5  # seconds between checks of --workers-lifetime and --workers-max-rss
RECYCLE_RETRY_DELAY = 30.0  # seconds before recycling a worker again after its replacement failed to start

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)

logger = logging.getLogger("tricorn.error")


class Multiprocess:
    """Start `config.workers` workers, keep them healthy and replace them on request, until told to stop."""

    def __init__(self, config: Config, sockets: SupervisorSockets) -> None:
        self.config = config
        self.sockets = sockets
        self.workers: dict[int, WorkerProcess] = {}  # index -> the worker serving as that index
        self.replacement: WorkerProcess | None = None  # a worker starting to take over from workers[its index]
        self.replacement_deadline = 0.0
        self.queued: list[int] = []  # indexes waiting for their replacement, one at a time
        self.retiring: list[WorkerProcess] = []  # told to stop, not yet exited
        self.recycling = Recycling(config.workers_lifetime, config.workers_max_rss)
        self.next_recycle_check = 0.0
        self.signals = SignalQueue(HANDLED_SIGNALS)
        self.should_exit = False
        self.exit_code = 0

    def run(self) -> int:
        """Supervise until every worker has exited; return the exit status for the parent (3 on startup failure)."""
        pid = os.getpid()
        _log_pid("Started parent process [%d]", pid)
        with self.signals:
            for index in range(self.config.workers):
                self.workers[index] = self.start_worker(index, first_of=self.config.workers)
            while not self.should_exit or self.processes():
                self.wait()
                for sig in self.signals.read():
                    self.handle_signal(sig)
                self.reap()
                now = time.monotonic()
                self.check_health(now)
                if not self.should_exit:
                    self.recycle(now)
                    self.advance_replacement(now)
        self.sockets.close()
        _log_pid("Stopping parent process [%d]", pid)
        return self.exit_code

    def processes(self) -> list[WorkerProcess]:
        """Every process started and not yet reaped."""
        starting = [self.replacement] if self.replacement is not None else []
        return [*self.workers.values(), *starting, *self.retiring]

    def start_worker(self, index: int, first_of: int | None = None) -> WorkerProcess:
        """Start a worker serving as `index`; `first_of` is N for one of the first N workers."""
        worker = WorkerProcess(self.config, self.sockets.for_worker(index), index)
        worker.start()
        self.recycling.plan(worker, first_of)
        return worker

    def retire(self, worker: WorkerProcess) -> None:
        """Tell a worker to stop gracefully; it is reaped when it exits."""
        worker.terminate()
        logger.info("Waiting for child process [%d]", worker.pid)
        self.retiring.append(worker)

    def wait(self) -> None:
        """Sleep until a signal, a worker's answer or a worker's exit, or until the next ping is due."""
        processes = self.processes()
        starting = any(not worker.ready for worker in processes)
        handles: list[object] = [self.signals]
        for worker in processes:
            handles += [worker.sentinel, worker.conn]
        wait(handles, timeout=STARTUP_INTERVAL if starting else HEALTHCHECK_INTERVAL)  # type: ignore[arg-type]
        for worker in processes:
            worker.read_answers()

    def reap(self) -> None:
        """Deal with the workers that have exited: replace them, or stop everything on a startup failure."""
        for worker in [worker for worker in self.retiring if not worker.is_alive()]:
            worker.close()
            self.retiring.remove(worker)
        if self.replacement is not None and not self.replacement.is_alive():
            self.abandon_replacement(f"exited with status {self.replacement.exitcode} before serving")
        for index, worker in list(self.workers.items()):
            if worker.is_alive():
                continue
            worker.close()
            del self.workers[index]
            if worker.exitcode == STARTUP_FAILURE:
                # The app, its lifespan startup or its TLS files are broken: every new worker would fail the same.
                logger.error("Child process [%d] failed to start, stopping the parent process.", worker.pid)
                self.exit_code = STARTUP_FAILURE
                self.stop()
                return
            logger.info("Child process [%d] died", worker.pid)
            if self.replacement is not None and self.replacement.index == index:
                self.workers[index], self.replacement = self.replacement, None
            else:
                self.workers[index] = self.start_worker(index)

    def check_health(self, now: float) -> None:
        """Kill the workers whose last ping went unanswered for `--timeout-worker-healthcheck`; ping the others."""
        timeout = self.config.timeout_worker_healthcheck
        for worker in self.processes():
            if worker.is_unresponsive(now, max(timeout, HEALTHCHECK_INTERVAL)):
                logger.warning(
                    "Child process [%d] did not answer the health check within %g s, killing it.", worker.pid, timeout
                )
                worker.kill()
            elif now - worker.last_ping_at >= (HEALTHCHECK_INTERVAL if worker.ready else STARTUP_INTERVAL):
                worker.ping()

    def recycle(self, now: float) -> None:
        """Queue for replacement the workers past `--workers-lifetime` or above `--workers-max-rss`."""
        if not self.recycling.enabled or now < self.next_recycle_check:
            return
        self.next_recycle_check = now + RECYCLE_INTERVAL
        replacing = self.replacement.index if self.replacement is not None else None
        for index, worker in self.workers.items():
            if index in self.queued or index == replacing:
                continue
            reason = self.recycling.reason(worker, now)
            if reason is not None:
                logger.info("Child process [%d] %s; replacing it.", worker.pid, reason)
                self.queued.append(index)

    def advance_replacement(self, now: float) -> None:
        """Start the next queued replacement, or put a started one in service once it serves."""
        if self.replacement is None:
            while self.queued:
                index = self.queued.pop(0)
                if index in self.workers:
                    self.replacement = self.start_worker(index)
                    self.replacement_deadline = now + self.config.timeout_worker_healthcheck
                    return
            return
        new = self.replacement
        if new.ready:
            old = self.workers[new.index]
            self.workers[new.index], self.replacement = new, None
            logger.info("Child process [%d] serves in place of [%d]", new.pid, old.pid)
            self.retire(old)
        elif now > self.replacement_deadline:
            self.abandon_replacement(f"was not ready within {self.config.timeout_worker_healthcheck} s")

    def abandon_replacement(self, reason: str) -> None:
        """Give up a replacement that could not start: the worker it was to replace keeps serving."""
        assert self.replacement is not None
        new, self.replacement = self.replacement, None
        old = self.workers.get(new.index)
        logger.error(
            "New child process [%d] %s; keeping worker [%s] and aborting the restart.",
            new.pid,
            reason,
            old.pid if old is not None else "-",
        )
        new.kill()
        self.retiring.append(new)
        self.queued.clear()
        if old is not None:
            old.recycle_after = time.monotonic() + RECYCLE_RETRY_DELAY

    def stop(self) -> None:
        """Stop every worker gracefully; `run()` returns once all have exited."""
        self.should_exit = True
        self.queued.clear()
        starting = [self.replacement] if self.replacement is not None else []
        for worker in [*self.workers.values(), *starting]:
            self.retire(worker)
        self.workers.clear()
        self.replacement = None

    def handle_signal(self, sig: signal.Signals) -> None:
        """Act on one signal received by the parent."""
        if sig in (signal.SIGINT, signal.SIGTERM):
            logger.info("Received %s, exiting.", sig.name)
            if not self.should_exit:
                self.stop()
            elif sig == signal.SIGINT:
                for worker in self.retiring:
                    worker.interrupt()
        elif self.should_exit:
            return
        elif sig == signal.SIGHUP:
            logger.info("Received SIGHUP, restarting processes.")
            replacing = self.replacement.index if self.replacement is not None else None
            self.queued = [index for index in sorted(self.workers) if index != replacing]
        elif sig == signal.SIGTTIN:
            logger.info("Received SIGTTIN, increasing the number of processes.")
            index = len(self.workers)
            self.workers[index] = self.start_worker(index)
            self.sockets.workers_changed(len(self.workers))
        elif sig == signal.SIGTTOU:
            logger.info("Received SIGTTOU, decreasing number of processes.")
            if len(self.workers) <= 1:
                logger.info("Already reached one process, cannot decrease the number of processes anymore.")
                return
            index = max(self.workers)
            if self.replacement is not None and self.replacement.index == index:
                self.retire(self.replacement)
                self.replacement = None
            if index in self.queued:
                self.queued.remove(index)
            self.retire(self.workers.pop(index))
            self.sockets.workers_changed(len(self.workers))


def _log_pid(message: str, pid: int) -> None:
    color_message = message.replace("%d", style("%d", fg="cyan", bold=True))
    logger.info(message, pid, extra={"color_message": color_message})
