# Everything a fresh machine needs comes from here: Python 3.11+, make and the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SEEDS ?= 20000
JOBS ?= 2
# make test: pytest-xdist workers; --dist loadfile keeps a file's tests (and its module-scoped
# clusters) on one worker. Three on two cores: most integration tests wait on their node
# processes, so a third worker fills the idle time (446 s of pytest against 593 s with two)
TEST_JOBS ?= 3

.PHONY: test dev bench bench-quick bench-micro soak fuzz proto clean

# the compiled record decoder is built by the editable install: a change to its source
# must rebuild it, or the venv keeps running the old one
$(STAMP): pyproject.toml proto/raftka/v1/_records.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) jepsen-deps interop-deps monitoring-deps console-deps kafka-deps deploy-deps
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=25 tests --ignore=tests/bench

# tests/interop/ drives a real cluster from Node.js, a client that knows only the .proto
# files. As root, install Node.js and npm from Debian when missing (like jepsen-deps); then
# the npm packages pinned by its package-lock.json, with npm ci into its node_modules
# (gitignored). Without root, a missing node/npm or a failed npm ci only skips that test
# (it says why); as root (CI) they are errors.
INTEROP_JS := tests/interop/js
interop-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then \
	    echo "installing nodejs, npm for tests/interop/"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq nodejs npm >/dev/null; fi
	@if command -v npm >/dev/null; then \
	    $(MAKE) -s --no-print-directory $(INTEROP_JS)/node_modules/.installed || \
	    { [ "$$(id -u)" != 0 ] && echo "WARNING: npm ci failed: the Node.js interop test will be skipped"; }; fi

$(INTEROP_JS)/node_modules/.installed: $(INTEROP_JS)/package.json $(INTEROP_JS)/package-lock.json
	cd $(INTEROP_JS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# jepsen-like/ needs iproute2 and nftables (and libfaketime for the clock nemesis); as
# root, install whichever is missing. Without root it does nothing: the harness refuses to
# run with a clear message and tests/jepsen's real run is skipped (as root it must run).
jepsen-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { ! command -v nft >/dev/null || ! command -v ip >/dev/null || \
	      ! dpkg -s libfaketime >/dev/null 2>&1; }; then \
	    echo "installing nftables, iproute2, libfaketime for jepsen-like/"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq nftables iproute2 libfaketime >/dev/null; fi

.PHONY: jepsen jepsen-deps interop-deps monitoring-deps console-deps kafka-deps deploy-deps
# tests/deploy/ checks examples/deploy/ without a container engine: the compose file with
# `docker compose config` (else Debian's docker-compose) and the systemd unit with
# systemd-analyze. As root, install whichever is missing; without root and without them
# those checks are skipped (they say why); as root they are errors.
deploy-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { ! command -v systemd-analyze >/dev/null || \
	      { ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; }; }; then \
	    echo "installing docker-compose, systemd for tests/deploy/"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends docker-compose systemd >/dev/null; fi

# tests/kafka/ (and the `raftka dev` test) drive the Kafka listener with Debian's kcat and
# Go's sarama too (golang-github-shopify-sarama-dev, built in GOPATH mode like
# bench/natsload): as root, install whichever is missing. Without root and without them
# those checks are skipped (they say why); as root they are errors.
SARAMA_SRC := /usr/share/gocode/src/github.com/Shopify/sarama
kafka-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { ! command -v kcat >/dev/null || ! command -v go >/dev/null || [ ! -d $(SARAMA_SRC) ]; }; then \
	    echo "installing kcat, golang-go, golang-github-shopify-sarama-dev for tests/kafka/"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends kcat golang-go \
	        golang-github-shopify-sarama-dev >/dev/null; fi

# tests/integration/test_monitoring_examples.py checks examples/monitoring/ with promtool:
# as root, install Debian's prometheus package (it ships promtool) when missing. Without
# root and without promtool that check is skipped (the YAML is still checked); as root it
# is an error.
monitoring-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v promtool >/dev/null; then \
	    echo "installing prometheus (promtool) for examples/monitoring/"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends prometheus >/dev/null; fi

# tests/console/ drives the web console in a real browser: Debian's chromium and its
# chromedriver, run by Selenium (never Selenium Manager's downloads). As root, install them
# when missing; without root the browser tests skip, saying why (as root they must run).
console-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then \
	    echo "installing chromium, chromium-driver for tests/console/"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq chromium chromium-driver >/dev/null; fi

JEPSEN_TIME ?= 1800
JEPSEN_NODES ?= 5
JEPSEN_NEMESIS ?= partition,kill,pause,disk
jepsen: $(STAMP) jepsen-deps
	jepsen-like/run --nemesis $(JEPSEN_NEMESIS) --time $(JEPSEN_TIME) --nodes $(JEPSEN_NODES) \
	    $(if $(JEPSEN_SEED),--seed $(JEPSEN_SEED)) $(if $(JEPSEN_OUT),--out $(JEPSEN_OUT)) \
	    $(if $(JEPSEN_WORKLOAD),--workload $(JEPSEN_WORKLOAD)) \
	    $(if $(JEPSEN_CLIENT),--client $(JEPSEN_CLIENT))

# Raftka vs NATS JetStream (bench/, issue 7). Go and nats.go come from Debian (installed only
# when missing); nats-server, nats-py, matplotlib, tqdm and py-spy from the `bench` extra.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	command -v go >/dev/null && test -d /usr/share/gocode/src/github.com/nats-io/nats.go || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			golang-go golang-github-nats-io-go-nats-dev; }
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(PY) -m bench --quick --out bench/results-quick $(BENCH_ARGS)

bench-micro: $(STAMP)
	$(PY) -m pytest -q --timeout=0 tests/bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds

# Coverage-guided fuzzing (tests/fuzz, atheris): every target for FUZZ_SECONDS each, corpora
# kept in .fuzz/ between runs; a crash is saved as .fuzz/TARGET-crash-* (make test runs each
# target briefly and replays tests/fuzz/regressions/).
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= recordbatch kafka_request raft_batch rpc
fuzz: $(STAMP)
	@for t in $(FUZZ_TARGETS); do mkdir -p .fuzz/$$t; \
	    echo "fuzzing $$t for $(FUZZ_SECONDS)s"; \
	    $(PY) -m tests.fuzz $$t -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=.fuzz/$$t- .fuzz/$$t \
	        || exit 1; done

soak: $(STAMP)
	$(PY) -m tests.sim.soak --seeds $(SEEDS) --jobs $(JOBS)

proto: $(STAMP)
	$(PY) proto/generate.py

dev: $(STAMP)
	$(PY) -m raftka.node.dev $(DEV_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks bench/results-quick
