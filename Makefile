# Two commands for a fresh machine:
#   make demo   set up .venv, then train -> export -> build FP32/FP16/INT8 -> comparison table
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU-only machines take the CPU build of PyTorch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo

.PHONY: setup browser demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[torch,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m trtopt demo --out $(DEMO_DIR)

# The HTML report test renders in headless Chromium (Debian package). Installed when we are root with
# apt-get; elsewhere that one test is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "note: chromium is not installed; the HTML render test will be skipped"

# lint first: a ruff finding fails the target before the (minutes long) test suite starts
test: setup browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) engines calibration .pytest_cache
