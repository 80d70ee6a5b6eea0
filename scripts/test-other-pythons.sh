#!/usr/bin/env bash
# Build tricorn for the oldest and newest supported CPython and run the core HTTP tests on each.
# Interpreters are looked up in pyenv, then as pythonX.Y on PATH; a missing one is reported and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for version in 3.10 3.13; do
  py=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python 2>/dev/null | tail -1 || true)
  [ -n "$py" ] || py=$(command -v "python$version" || true)
  if [ -z "$py" ] || ! "$py" -c "import sys" 2>/dev/null; then
    echo "python$version: not installed, skipped"
    continue
  fi
  venv=target/venv-$version
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  # The packages the core tests use, at the versions requirements-dev.txt pins.
  grep -E '^(maturin|pytest|pytest-timeout|httpx|h2|click|uvloop|python-dotenv|PyYAML)==' requirements-dev.txt \
    | "$venv/bin/python" -m pip install -q -r /dev/stdin
  rm -rf "target/wheels-$version"
  "$venv/bin/maturin" build --release --quiet -i "$venv/bin/python" -o "target/wheels-$version"
  "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "target/wheels-$version"/*.whl
  echo "== CPython $version"
  "$venv/bin/python" -m pytest tests/test_http11.py tests/test_scope.py tests/test_body.py tests/test_errors.py \
    tests/test_lifespan.py tests/test_tasks.py tests/test_app_call.py -q -p no:cacheprovider || status=1
done
exit $status
