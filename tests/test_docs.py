"""The CLI reference in docs/ matches the command line."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_reference.py")], capture_output=True, text=True, check=True
    ).stdout
    assert (ROOT / "docs" / "cli.md").read_text() == generated, "docs/cli.md is stale: run `make docs`"
