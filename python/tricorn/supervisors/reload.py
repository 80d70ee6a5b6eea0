"""`--reload`: run one worker process and replace it whenever a watched file changes (watchfiles).

The parent never imports the application, so a file that fails to import (a syntax error) only ends the worker:
the parent keeps watching, and the next save starts a new worker.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from watchfiles import Change, watch

from tricorn._ansi import style
from tricorn.config import Config
from tricorn.sockets import SupervisorSockets
from tricorn.supervisors.watched import FileFilter, WatchedPaths
from tricorn.supervisors.worker import WorkerProcess

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RELOADER_NAME = "WatchFiles"
WATCH_TIMEOUT_MS = 100  # how long the first call waits, then how often the watcher returns empty-handed

logger = logging.getLogger("tricorn.error")


class WatchFilesReload:
    """Serve with one worker process, restarted on each batch of changes to the watched files."""

    def __init__(self, config: Config, sockets: SupervisorSockets) -> None:
        self.config = config
        self.sockets = sockets
        watched = WatchedPaths(
            config.reload_dirs, config.reload_dirs_excludes, config.reload_includes, config.reload_excludes
        )
        self.file_filter = FileFilter(watched)
        self.should_exit = ExitFlag()

    def run(self) -> None:
        """Watch and restart until SIGINT or SIGTERM, then stop the worker gracefully."""
        pid = os.getpid()
        message = f"Started reloader process [{pid}] using {RELOADER_NAME}"
        color_message = "Started reloader process [{}] using {}".format(
            style(str(pid), fg="cyan", bold=True), style(RELOADER_NAME, fg="cyan", bold=True)
        )
        logger.info(message, extra={"color_message": color_message})
        previous_handlers = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            watcher = self.watch()
            # watchfiles starts watching on the first call, before the worker imports the app: no save is missed.
            next(watcher, None)
            worker = self.start_worker()
            for batch in watcher:
                if not batch:
                    continue  # nothing changed within WATCH_TIMEOUT_MS
                changes = sorted({Path(path) for _, path in batch})
                logger.warning(
                    "%s detected changes in %s. Reloading...", RELOADER_NAME, ", ".join(map(_display, changes))
                )
                self.stop_worker(worker)
                worker = self.start_worker()
                time.sleep(self.config.reload_delay)
            self.stop_worker(worker)
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            self.sockets.close()
        message = f"Stopping reloader process [{pid}]"
        color_message = "Stopping reloader process [{}]".format(style(str(pid), fg="cyan", bold=True))
        logger.info(message, extra={"color_message": color_message})

    def watch(self) -> Iterator[set[tuple[Change, str]]]:
        """Batches of changes to the files that pass the filter (an empty one every WATCH_TIMEOUT_MS without any).

        watchfiles groups the events of a burst (a save that writes several files, an editor's rename dance)
        into one batch: it yields once no new event came for 50 ms, or after 1.6 s of steady events. Changes
        that happen while the worker restarts are kept for the next batch. The generator ends once
        `should_exit` is set.
        """
        return watch(
            *self.config.reload_dirs,
            watch_filter=self._wanted,
            stop_event=self.should_exit,
            rust_timeout=WATCH_TIMEOUT_MS,
            yield_on_timeout=True,
            ignore_permission_denied=True,
        )

    def _wanted(self, change: Change, path: str) -> bool:
        return self.file_filter(Path(path))

    def start_worker(self) -> WorkerProcess:
        """Start a worker (index 0) on the shared sockets."""
        worker = WorkerProcess(self.config, self.sockets.for_worker(0), 0)
        worker.start()
        return worker

    def stop_worker(self, worker: WorkerProcess) -> None:
        """Stop the worker gracefully (it may already have exited, e.g. on an import error) and reap it."""
        worker.terminate()
        worker.close()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGINT or SIGTERM: stop watching; `run()` then stops the worker."""
        self.should_exit.set()


class ExitFlag:
    """Set by a signal handler, read by watchfiles: a plain flag, as a handler must not take the lock of an Event."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Ask the watcher to stop."""
        self._set = True

    def is_set(self) -> bool:
        """True once asked to stop."""
        return self._set


def _display(path: Path) -> str:
    """The path quoted, relative to the working directory when it is below it."""
    try:
        return f"'{path.relative_to(Path.cwd())}'"
    except ValueError:
        return f"'{path}'"
