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


# The command line of uvicorn 0.54, the contract of the drop-in (`uvicorn --help`).
UVICORN_OPTIONS = """
--host --port --uds --fd --reload --reload-dir --reload-include --reload-exclude --reload-delay --workers --loop
--http --http2 --ws --ws-max-size --ws-max-queue --ws-ping-interval --ws-ping-timeout --ws-per-message-deflate
--lifespan --interface --env-file --log-config --log-level --access-log --no-access-log --use-colors --no-use-colors
--proxy-headers --no-proxy-headers --server-header --no-server-header --date-header --no-date-header
--forwarded-allow-ips --root-path --limit-concurrency --backlog --limit-max-requests --limit-max-requests-jitter
--timeout-keep-alive --timeout-graceful-shutdown --timeout-worker-healthcheck --ssl-keyfile --ssl-certfile
--ssl-keyfile-password --ssl-version --ssl-cert-reqs --ssl-ca-certs --ssl-ciphers --header --version --app-dir
--h11-max-incomplete-event-size --reset-contextvars --factory
""".split()


def test_every_uvicorn_option_is_accepted_and_in_the_migration_table():
    help_text = subprocess.run(
        [sys.executable, "-m", "tricorn", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    table = (ROOT / "docs" / "migrating-from-uvicorn.md").read_text()
    rows = {line.split("|")[1] for line in table.splitlines() if line.startswith("| `--")}
    for option in UVICORN_OPTIONS:
        assert f"{option} " in help_text or f"{option}\n" in help_text, f"{option} missing from tricorn --help"
        assert any(f"`{option}`" in row for row in rows), f"{option} has no row in docs/migrating-from-uvicorn.md"
