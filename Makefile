# reid-attn developer commands. Every target installs .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-slow lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Train and evaluate the default (CBAM + joint circle loss on synthetic data), on this CPU.
train: $(STAMP)
	$(BIN)/python -m reid_attn.train $(ARGS)

## Fast test suite (what CI runs) plus ruff.
test: $(STAMP)
	$(BIN)/ruff check src tests experiments
	$(BIN)/python -m pytest -q

## Long end-to-end tests (marked slow).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests experiments

clean:
	rm -rf $(VENV) outputs build dist src/*.egg-info
