"""What `--reload` watches: directories from `--reload-dir`/`--reload-include`/`--reload-exclude`, and a file filter.

Patterns are globs matched against the end of a path (`pathlib.PurePath.match`), as in uvicorn. A pattern that
names directories (relative to the working directory) adds them to the watched ones (`--reload-include`) or
removes them (`--reload-exclude`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

DEFAULT_INCLUDES = ["*.py"]
DEFAULT_EXCLUDES = [".*", ".py[cod]", ".sw.*", "~*"]

logger = logging.getLogger("tricorn.error")


@dataclass
class WatchedPaths:
    """The directories to watch and the patterns given by the user, once resolved."""

    dirs: list[Path]
    dirs_excludes: list[Path]
    includes: list[str]
    excludes: list[str]


def resolve_watched_paths(dirs: list[str], includes: list[str], excludes: list[str]) -> WatchedPaths:
    """Resolve the `--reload-*` options; with no directory left, watch the working directory."""
    watched = _directories(dirs, includes)
    dirs_excludes = _directories([], excludes)
    watched = [d for d in watched if not any(d == excluded or excluded in d.parents for excluded in dirs_excludes)]
    if not watched:
        if dirs:
            logger.warning(
                "Provided reload directories %s did not contain valid directories, watching current working directory.",
                dirs,
            )
        watched = [Path.cwd()]
    return WatchedPaths(
        dirs=watched,
        dirs_excludes=dirs_excludes,
        includes=[pattern for pattern in includes if pattern not in excludes],
        excludes=list(excludes),
    )


def _directories(dirs: list[str], patterns: list[str]) -> list[Path]:
    """`dirs` and the directories the `patterns` name, resolved, without those nested in another one."""
    found = [Path(directory) for directory in dirs]
    for pattern in patterns:
        if pattern == ".*":
            continue  # as a directory glob it would pick every hidden directory; it is meant for files
        if Path(pattern).is_dir():
            found.append(Path(pattern))
            continue
        try:
            found.extend(match for match in Path.cwd().glob(pattern) if match.is_dir())
        except (ValueError, NotImplementedError):
            pass  # an absolute or empty pattern names no directory below the working directory
    resolved = {directory.resolve() for directory in found if directory.resolve().is_dir()}
    return sorted(directory for directory in resolved if not any(other in directory.parents for other in resolved))


class FileFilter:
    """Tell whether a changed file should reload the app.

    A file is included when it matches an include pattern (default `*.py`), unless it lies in an excluded
    directory, or it or one of its directories below the watched one matches an exclude pattern (defaults:
    hidden names, compiled Python, editor swap and backup files). A default pattern the user gives on the other
    side is dropped: `--reload-include '.*'` watches hidden files.
    """

    def __init__(self, paths: WatchedPaths) -> None:
        self.roots = paths.dirs
        self.includes = [p for p in DEFAULT_INCLUDES if p not in paths.excludes] + paths.includes
        self.excludes = [p for p in DEFAULT_EXCLUDES if p not in paths.includes]
        self.excludes += [p for p in paths.excludes if Path(p).resolve() not in paths.dirs_excludes]
        self.dirs_excludes = paths.dirs_excludes

    def __call__(self, path: Path) -> bool:
        """True when a change to `path` should reload the app."""
        if not any(path.match(pattern) for pattern in self.includes):
            return False
        if any(path.name == pattern for pattern in self.includes):
            return True  # named exactly: wins over the exclude patterns
        if any(excluded in path.parents for excluded in self.dirs_excludes):
            return False
        if any(path.match(pattern) for pattern in self.excludes):
            return False
        return not any(fnmatch(part, pattern) for part in self._dir_names(path) for pattern in self.excludes)

    def _dir_names(self, path: Path) -> tuple[str, ...]:
        """The names of the directories between the watched directory holding `path` and `path`."""
        for root in self.roots:
            if root in path.parents:
                return path.relative_to(root).parts[:-1]
        return ()
