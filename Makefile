# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export RAY_DEDUP_LOGS ?= 0
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test test-fast lint security bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The README's main job: map-reduce over the shipped corpus, offline on the emulator. Run it
# twice: the second run reuses every stored chunk and pays only for the reducer.
DEMO_QUESTION ?= What caused the great flood of 1887 in Wrenmouth, and what did the town change afterwards?
demo: $(STAMP)
	$(BIN)/raytroupe run mapreduce examples/corpus --question "$(DEMO_QUESTION)" \
		--mapper haiku --reducer sonnet --max-parallel 16 --chunk-size 300

# Two pytest-xdist workers, one test file each at a time (module fixtures stay whole): most
# tests wait on Ray start-up and emulated latency, not the CPU, so two share 2 cores well.
# Each worker gets a Ray temp root of its own (tests/conftest.py).
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory security
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# bandit (medium severity and up) over the code that ships; detect-secrets over every tracked
# file. The only secrets allowed are the tests' canaries and the dummy keys below.
DUMMY_SECRETS := ^(sk-ant-emulator|sk-ant-bench|sk-ant-x|sk-test|sk-ant-api03-secret|a1b2c3d4e5f6)$$
security: $(STAMP)
	$(BIN)/bandit -ll -q -r actors cluster topologies emulator benchmarks
	$(BIN)/detect-secrets-hook --exclude-secrets '(?i)canary' \
		--exclude-secrets '$(DUMMY_SECRETS)' $$(git ls-files)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) build *.egg-info
