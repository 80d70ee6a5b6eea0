"""When to replace a healthy worker: `--workers-lifetime` (age) and `--workers-max-rss` (resident memory)."""

from __future__ import annotations

import logging
import os

from tricorn.supervisors.worker import WorkerProcess

MIB = 1024 * 1024

logger = logging.getLogger("tricorn.error")


class Recycling:
    """Decide which serving workers are due for replacement.

    Every worker lives at most `lifetime` seconds. So that the first workers, started together, are not all due
    together, worker i of the first N lives `lifetime * (1 - i / 2N)`: their deadlines are spread over the second
    half of one lifetime, and each replacement then lives the whole `lifetime`, which keeps the spread.
    """

    def __init__(self, lifetime: float | None, max_rss_mib: int | None) -> None:
        self.lifetime = lifetime
        self.max_rss = max_rss_mib * MIB if max_rss_mib else None
        if self.max_rss is not None and not os.path.exists("/proc/self/statm"):
            logger.warning("--workers-max-rss reads /proc/PID/statm, which this system lacks: it is ignored.")
            self.max_rss = None

    @property
    def enabled(self) -> bool:
        """True when a lifetime or a memory limit is set."""
        return bool(self.lifetime or self.max_rss)

    def plan(self, worker: WorkerProcess, first_of: int | None) -> None:
        """Set the deadline of a worker just started; `first_of` is N for one of the first N workers, else None."""
        if not self.lifetime:
            return
        lifetime = self.lifetime
        if first_of:
            lifetime *= 1 - worker.index / (2 * first_of)
        worker.expires_at = worker.started_at + lifetime

    def reason(self, worker: WorkerProcess, now: float) -> str | None:
        """Why `worker` should be replaced now, for the log; None when it should not."""
        if not worker.ready or now < worker.recycle_after:
            return None
        if worker.expires_at is not None and now >= worker.expires_at:
            return f"has served for {now - worker.started_at:.0f} s (--workers-lifetime {self.lifetime:g})"
        if self.max_rss is not None:
            rss = worker.rss()
            if rss is not None and rss > self.max_rss:
                return f"uses {rss / MIB:.0f} MiB (--workers-max-rss {self.max_rss // MIB})"
        return None
