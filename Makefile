# reid-attn developer commands. Every target installs .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-avx2 test-slow lint clean

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

## The fast suite as a CPU without AVX-512 or native bf16 runs it (e.g. a 2-core AMD EPYC):
## PyTorch, oneDNN and MKL capped at their AVX2 kernels; precision=auto then picks float32.
test-avx2: $(STAMP)
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
		$(BIN)/python -m pytest -q

## Long end-to-end tests (marked slow).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests experiments

clean:
	rm -rf $(VENV) outputs build dist src/*.egg-info
