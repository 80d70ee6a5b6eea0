"""Read a callgrind out file: self and inclusive instruction counts (Ir) per function and object.

Used by bench/instructions.py. Inclusive cost follows callgrind_annotate's rule: a function's
self cost plus the cost of its calls to other functions (a call to itself is left out, so
direct recursion is not counted twice). Functions callgrind split by recursion depth
(`name'2`) are separate entries, as in callgrind's own output.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"c?(?:ob|fn)=\((\d+)\)(?: (.*))?")


@dataclass
class Profile:
    """Instruction counts of one callgrind dump."""

    total: int = 0
    self_by_fn: collections.Counter[str] = field(default_factory=collections.Counter)
    self_by_ob: collections.Counter[str] = field(default_factory=collections.Counter)
    calls: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def inclusive(self, function: str) -> int:
        """Self cost of `function` plus the inclusive cost of the calls it makes to others."""
        return self.self_by_fn[function] + sum(
            cost for (caller, callee), cost in self.calls.items() if caller == function and callee != function
        )

    def matching(self, pattern: str) -> list[str]:
        """Names of the functions that `pattern` (a regular expression) finds."""
        regex = re.compile(pattern)
        names = set(self.self_by_fn) | {caller for caller, _ in self.calls}
        return sorted(name for name in names if regex.search(name))


def read_profile(path: Path) -> Profile:
    """Parse a callgrind out file written with `--dump-instr=no` (costs per line)."""
    profile = Profile()
    functions: dict[str, str] = {}
    objects: dict[str, str] = {}
    fn = ob = callee = ""
    after_calls = False
    for line in path.read_text().splitlines():
        head = line[:4]
        if head in ("ob=(", "cob="):
            match = _NAME.match(line)
            if match and match.group(2):
                objects[match.group(1)] = match.group(2)
            if head == "ob=(" and match:
                ob = objects.get(match.group(1), match.group(1))
        elif head in ("fn=(", "cfn="):
            match = _NAME.match(line)
            if match and match.group(2):
                functions[match.group(1)] = match.group(2)
            if match:
                name = functions.get(match.group(1), match.group(1))
                if head == "fn=(":
                    fn = name
                else:
                    callee = name
        elif line.startswith("calls="):
            after_calls = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if len(fields) < 2:
                continue
            cost = int(fields[1])
            if after_calls:  # the inclusive cost of the call just named, not self cost
                after_calls = False
                profile.calls[(fn, callee)] += cost
                continue
            profile.self_by_fn[fn] += cost
            profile.self_by_ob[ob] += cost
            profile.total += cost
    return profile
