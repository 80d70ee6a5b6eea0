"""Signals caught by a supervisor, handed over in arrival order through a wakeup socket."""

from __future__ import annotations

import signal
import socket
from types import FrameType, TracebackType


class SignalQueue:
    """Catch `signals` while the `with` block runs; `read()` returns them in the order they arrived.

    Python's C-level handler writes the number of each caught signal to the wakeup socket
    (`signal.set_wakeup_fd`), so a supervisor blocked in `multiprocessing.connection.wait` on `fileno()` wakes at
    once. The Python-level handler has nothing left to do. Main thread only, as every signal handler.
    """

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.signals = signals
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_handlers: dict[signal.Signals, object] = {}
        self._previous_wakeup_fd = -1

    def __enter__(self) -> SignalQueue:
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous_handlers = {sig: signal.signal(sig, _record_only) for sig in self.signals}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._reader.close()
        self._writer.close()

    def fileno(self) -> int:
        """Readable when a signal has arrived."""
        return self._reader.fileno()

    def read(self) -> list[signal.Signals]:
        """The signals that arrived since the last call, oldest first."""
        received = b""
        while True:
            try:
                data = self._reader.recv(4096)
            except BlockingIOError:
                break
            if not data:
                break
            received += data
        return [signal.Signals(number) for number in received if number in self.signals]


def _record_only(signum: int, frame: FrameType | None) -> None:
    """Installed so that the signal is caught; the wakeup socket already recorded it."""
