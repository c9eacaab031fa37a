# Two commands for a fresh machine:
#   make demo   set up .venv, then train -> export -> build FP32/FP16/INT8 -> comparison table
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU-only machines take the CPU build of PyTorch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[torch,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m trtopt demo --out $(DEMO_DIR)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) engines calibration .pytest_cache
