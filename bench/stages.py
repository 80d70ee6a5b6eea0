"""The stages of an HTTP/1.1 request in tricorn, as function names of a profile.

bench/instructions.py applies them to a callgrind profile (instructions, user space only),
bench/perf_breakdown.py to `perf record` samples (time, kernel included). Each stage is the
inclusive cost of its entry functions less that of its sub-stages, so the rows add up to the
total. A stage whose entry is not in a profile (kernel functions under callgrind, an entry
another build inlines, uvloop's under the asyncio loop) hands its sub-stages to its parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class CostSource(Protocol):
    """A profile: its total cost and inclusive costs by function name."""

    @property
    def total(self) -> float: ...

    def matching(self, pattern: str) -> list[str]: ...

    def inclusive(self, function: str) -> float: ...


@dataclass(frozen=True)
class Stage:
    """A part of a request: the functions `entry` (a regular expression) finds, and sub-stages."""

    label: str
    entry: str
    children: tuple[Stage, ...] = ()


STAGES = Stage(
    "event loop iteration (libuv, epoll_wait; asyncio: _run_once) and what the profile cannot place",
    "",
    (
        Stage(
            "Rust runtime: drive() (epoll events, executor, hyper's connection task)",
            r"^_tricorn::runtime::Runtime::drive_with$",
            (
                Stage(
                    "hyper: read the socket, parse the request head",
                    r"^hyper::proto::h1::conn::Conn<I,B,T>::poll_read_head$",
                    (Stage("kernel: read()", r"^ksys_read$"),),
                ),
                Stage(
                    "hand-off to Python: service, exchange, receive/send, the task's AppCall",
                    r"^_tricorn::asgi::service::AsgiService::handle$",
                    (
                        Stage(
                            "request checks (Host, target, transfer codings)",
                            r"^_tricorn::request_checks::check_http1$",
                        ),
                        Stage("scope dict", r"^_tricorn::asgi::scope::ScopeTemplate::build$"),
                        Stage(
                            "asyncio.Task creation (Task.__init__, its first step kept for the batch)",
                            r"^_tricorn::asgi::task::TaskSpawner::spawn$",
                        ),
                    ),
                ),
                Stage(
                    "the batch's first steps (Python < 3.12: in its task's context; then freeing the task)",
                    r"^_tricorn::asgi::first_step::FirstSteps::run$",
                    (
                        Stage(
                            "task step: AppCall, the app's call and bytecode",
                            r"^task_step_impl$",
                            (
                                Stage(
                                    "send(): ASGI messages into Rust, response queued",
                                    r"^_tricorn::asgi::send_type::call$",
                                ),
                            ),
                        ),
                    ),
                ),
                Stage(
                    "hyper: encode the response, write the socket",
                    r"^hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_write$"
                    r"|^hyper::proto::h1::io::Buffered<T,B>::poll_flush$",
                    (
                        Stage(
                            "kernel: writev() (TCP send; on loopback also the client's receive, in softirq)",
                            r"^do_writev$",
                        ),
                    ),
                ),
            ),
        ),
        Stage("event loop: ready callbacks (uvloop Loop._on_idle)", r"Loop__on_idle$"),
    ),
)

Row = tuple[int, str, float]  # depth, label, own cost


def stage_rows(profile: CostSource, stage: Stage = STAGES, depth: int = 0) -> tuple[list[Row], float]:
    """The rows of `stage` and its sub-stages (depth first) and the stage's inclusive cost; the
    root (no entry) costs the profile's total."""
    found = profile.matching(stage.entry) if stage.entry else []
    if stage.entry and not found:  # hand the sub-stages to the parent
        lifted = [stage_rows(profile, child, depth) for child in stage.children]
        return [row for rows, _ in lifted for row in rows], sum(cost for _, cost in lifted)
    below = [stage_rows(profile, child, depth + 1) for child in stage.children]
    inclusive = sum(profile.inclusive(name) for name in found) if stage.entry else profile.total
    inner = sum(cost for _, cost in below)
    return [(depth, stage.label, inclusive - inner), *(row for rows, _ in below for row in rows)], inclusive


def print_rows(rows: list[Row], total: float, per_request: float, unit: str, digits: int) -> None:
    """The stage table: cost per request (`cost * per_request`), share of `total`, label."""
    print(f"  {unit:>8}  {'share':>6}  stage (own cost; a sub-stage is indented below its parent)")
    for depth, label, cost in rows:
        print(f"  {cost * per_request:8,.{digits}f}  {cost / total:6.1%}  {'  ' * depth}{label}")
