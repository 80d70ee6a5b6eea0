# tricorn: `make run` serves examples/hello.py, `make test` builds and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(abspath $(PY))
# System packages the tests and benchmarks use, installed with apt-get when missing.
SYSTEM_TOOLS := curl:curl wrk:wrk nginx:nginx-light h2load:nghttp2-client

.PHONY: run run-tls test build venv system-deps lint format test-rust test-python test-pythons bench wheel clean docs \
	fuzz idle-connections soak bench-plots

run: build
	@echo "Serving examples/hello.py on http://127.0.0.1:8000 (Ctrl+C to stop)"
	$(PY) -m tricorn examples.hello:app --host 127.0.0.1 --port 8000

run-tls: build
	test -f certs/server.pem || certs/make-dev-certs.sh
	@echo "Serving examples/hello.py on https://127.0.0.1:8443 (trust certs/ca.pem; Ctrl+C to stop)"
	$(PY) -m tricorn examples.hello:app --host 127.0.0.1 --port 8443 --ssl-certfile certs/server.pem --ssl-keyfile certs/server.key

test: system-deps build lint test-rust test-python test-pythons

$(VENV)/.deps: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.deps

build: venv
	$(PY) -m maturin develop --release --quiet

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: venv
	cargo fmt --all -- --check
	cargo clippy --all-targets --quiet -- -D warnings
	cargo clippy --all-targets --features fuzzing --quiet -- -D warnings
	$(VENV)/bin/ruff check python tests bench examples scripts
	$(VENV)/bin/ruff format --check python tests bench examples scripts
	$(VENV)/bin/mypy

format: venv
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench examples scripts
	$(VENV)/bin/ruff check --fix python tests bench examples scripts

test-rust:
	cargo test --quiet

test-python: build
	$(PY) -m pytest tests -q -p no:cacheprovider

# The core tests on the oldest and newest supported CPython (3.10, 3.13).
test-pythons:
	scripts/test-other-pythons.sh

# bench/pgo.py builds tricorn as the wheels are built (profile-guided) into .venv, then
# bench/run.py installs what it needs into .venv when missing (fastapi, uvloop, matplotlib for
# bench/plots.py) and the other servers into bench/.venv-peers; it writes bench/RESULTS.md,
# bench/results.json and the charts in docs/performance/.
bench: system-deps venv
	$(PY) bench/pgo.py
	$(PY) bench/run.py

# The wheel as shipped: profile-guided (bench/pgo.py), into target/wheels-pgo and installed in .venv.
wheel: system-deps venv
	$(PY) bench/pgo.py --wheel

# Re-draw the charts of docs/performance/ from bench/results.json.
bench-plots: venv
	$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q matplotlib
	$(PY) bench/plots.py

# Fuzzing (not part of `make test`): each target in fuzz/ for FUZZ_SECONDS with libFuzzer, via
# cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP lets it use the nightly-only flags).
# New inputs go to fuzz/corpus/TARGET, crashes to fuzz/artifacts/TARGET. docs/reliability.md.
FUZZ_SECONDS ?= 60
FUZZ_SANITIZER ?= none
FUZZ_TARGETS ?= trusted_hosts proxy_headers request_head length_field_scan access_log_format ws_negotiate ws_inflate ws_deflate_roundtrip
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$target && \
	  RUSTC_BOOTSTRAP=1 nice -n 10 cargo fuzz run --sanitizer $(FUZZ_SANITIZER) $$target corpus/$$target seeds/$$target \
	    -- -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -print_final_stats=1 || exit 1; \
	done

# 10,000 idle keep-alive connections against one release-build worker (docs/reliability.md).
IDLE_CONNECTIONS ?= 10000
idle-connections: build
	$(PY) bench/idle_connections.py --connections $(IDLE_CONNECTIONS)

# A bounded soak run of mixed requests against one release-build worker (docs/reliability.md).
SOAK_REQUESTS ?= 2000000
soak: system-deps build
	$(PY) bench/soak.py --requests $(SOAK_REQUESTS)

clean:
	cargo clean
	rm -rf $(VENV)

docs: venv
	$(PY) scripts/cli_reference.py > docs/cli.md
