# Every target creates .venv on first use; nothing else needs installing by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BOT ?= arcade
STAMP := $(VENV)/.installed

.PHONY: chat test lint bench bench-scale bench-safety run check clean kb eval-kb bench-kb

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

chat: $(STAMP)  ## chat with a bot in the terminal (BOT=support|arcade)
	$(BIN)/parley chat --bot $(BOT)

check: $(STAMP)  ## validate a bot's config and reach Redis and the LLM
	$(BIN)/parley check --bot $(BOT)

run: $(STAMP)  ## run a bot on its platforms
	$(BIN)/parley run --bot $(BOT)

test: $(STAMP)  ## the whole suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (check + format) and mypy strict on core/ and adapters/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core adapters bots
	$(BIN)/mypy

bench: $(STAMP)  ## core overhead per turn, round trips, throughput (prints a table, writes bench-results.json)
	$(BIN)/python -m tests.bench.core_bench

bench-scale: $(STAMP)  ## queue throughput, 1 vs 2 worker processes against a fixed-latency LLM
	$(BIN)/python -m tests.bench.scale_bench

bench-safety: $(STAMP)  ## redaction, moderation rules and limits costs
	$(BIN)/python -m tests.safety.bench

kb: $(STAMP)  ## (re-)index a bot's knowledge base from its [kb] sources (BOT=support)
	$(BIN)/parley kb ingest --bot $(BOT)

eval-kb: $(STAMP)  ## retrieval quality on the sample help centre: hit@1, hit@5, MRR, cited sources
	$(BIN)/python -m tests.bench.kb_eval

bench-kb: $(STAMP)  ## knowledge-base speed: ingest 1,000 pages, re-ingest, retrieval p50 at 10,000 chunks
	$(BIN)/python -m tests.bench.kb_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
