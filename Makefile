# redis-nvm: build, run and test entry points. `make help` lists the targets.

CARGO      ?= cargo
SERVER     ?= redis-server
PORT       ?= 6379
POOL_SIZE  ?= 1gb
MODE       ?= auto
POOL       ?=
BENCH_ARGS ?=

export SERVER PORT POOL_SIZE MODE POOL

.DEFAULT_GOAL := help
.PHONY: help deps build test test-redis-suite test-redis-suite-stock test-dax run bench fmt lint clean

help: ## list the targets
	@echo "redis-nvm make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-7s %s\n", $$1, $$2 }'
	@echo "variables: PORT=$(PORT) POOL_SIZE=$(POOL_SIZE) MODE=$(MODE) POOL=<repo>/data/redis.nvm SERVER=$(SERVER) BENCH_ARGS="
	@echo "  e.g. make run MODE=emulate POOL=/dev/shm/redis.nvm; make run SERVER=valkey-server PORT=6399"

deps: ## install what is missing (redis, valkey, libclang, python3) with apt-get
	@bash scripts/install-deps.sh

build: deps ## cargo build --release (module libredis_nvm.so + nvm-tool)
	$(CARGO) build --release

test: build ## every test (unit, core, real servers, Redis's own suite with the module, dax mode in qemu guests), then cargo fmt --check and clippy
	$(CARGO) test --release
	python3 scripts/redis_suite.py
	@bash scripts/dax/run.sh
	@bash scripts/lint.sh

test-redis-suite: build ## Redis 7.0.15's own test suite against redis-server with the module (~5 min)
	python3 scripts/redis_suite.py

test-redis-suite-stock: deps ## the same units on stock redis-server, and proof that every skipped test fails there too
	python3 scripts/redis_suite.py --stock
	python3 scripts/redis_suite.py --stock --check-skips

test-dax: build ## dax mode on a real fsdax file system, in qemu guests (TCG; root; builds the guest once into target/dax-guest; ~3 min, ~5 from scratch)
	@bash scripts/dax/run.sh

run: build ## start SERVER on PORT in the foreground with the module (pool: ./data/redis.nvm)
	@bash scripts/run.sh

bench: build ## SET throughput vs stock persistence, replayer throughput, restart time, latency while persisting, writes on big values, streams, pool capacity per type, full-log fold (~35 min)
	python3 bench/bench.py $(BENCH_ARGS)
	$(CARGO) test --release --test core_bench replay_throughput -- --ignored --nocapture
	python3 bench/restart.py
	python3 bench/latency.py
	python3 bench/bigvalues.py
	python3 bench/streams.py
	python3 bench/capacity.py
	$(CARGO) test --release --test core_bench full_log_fold -- --ignored --nocapture

fmt: ## cargo fmt
	$(CARGO) fmt

lint: ## cargo fmt --check + cargo clippy --release --all-targets -D warnings
	@bash scripts/lint.sh

clean: ## cargo clean (target/, incl. test/bench scratch dirs; keeps ./data)
	$(CARGO) clean
