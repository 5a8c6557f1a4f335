# Every target creates .venv on first use; nothing else needs installing by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BOT ?= arcade
STAMP := $(VENV)/.installed

.PHONY: chat test lint bench bench-scale bench-safety run check clean browser console vendor-chartjs

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

test: $(STAMP) browser  ## the whole suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The console's browser tests drive Debian's chromium through its matching chromium-driver (nothing is
# downloaded by selenium). Installed here when missing and we are root (CI is); otherwise say what to run.
CHARTJS_VERSION ?= 4.5.1
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver (apt) for the console's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "NOTE: chromium/chromium-driver missing and not root: the console's browser tests will be skipped"; \
		echo "      (sudo apt-get install chromium chromium-driver)"; \
	fi

console: $(STAMP)  ## the operator console alone, on http://127.0.0.1:3000/console/ (needs PARLEY_CONSOLE_PASSWORD)
	$(BIN)/parley console --bot $(BOT)

vendor-chartjs:  ## re-vendor Chart.js (pinned) into the console's static files, with its licence
	rm -rf .vendor-tmp && mkdir .vendor-tmp
	cd .vendor-tmp && npm pack --silent chart.js@$(CHARTJS_VERSION) && tar xzf chart.js-$(CHARTJS_VERSION).tgz
	cp .vendor-tmp/package/dist/chart.umd.min.js core/console/static/vendor/chart.umd.min.js
	cp .vendor-tmp/package/LICENSE.md core/console/static/vendor/chart.js.LICENSE.md
	sha256sum .vendor-tmp/chart.js-$(CHARTJS_VERSION).tgz
	rm -rf .vendor-tmp

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
