# The two commands of the README:
#   make demo   -- set up .venv, install mbm_keras, run `mbm-keras demo`
#   make test   -- set up .venv, install mbm_keras[dev], run the test suite
# Installs happen once: the stamp files below are only remade when setup.cfg or
# pyproject.toml change, so a second `make test` does not reinstall TensorFlow.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast zoo docs clean graphviz chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	@command -v dot >/dev/null || $(MAKE) --no-print-directory graphviz
	@{ command -v chromium || command -v chromium-browser; } >/dev/null && command -v chromedriver >/dev/null \
		|| $(MAKE) --no-print-directory chromium
	touch $@ $(VENV)/.installed

# keras.utils.plot_model (notebook 01) needs Graphviz's `dot` program, a system
# package: installed with apt-get (as root or with passwordless sudo) or brew.
graphviz:
	@if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q graphviz || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q graphviz; } \
			|| echo "NOTE: apt-get could not install graphviz; plot_model in notebook 01 will print a message instead."; \
	elif command -v brew >/dev/null; then brew install graphviz || echo "NOTE: brew could not install graphviz."; \
	else echo "NOTE: Graphviz's dot is missing and cannot be installed here (no root/sudo apt-get, no brew);" \
		"plot_model in notebook 01 will print a message instead of drawing the graph."; fi

# The web page's browser test (tests/test_serve.py) drives headless Chromium with Selenium: Debian's chromium
# and chromium-driver, installed with apt-get (as root or with passwordless sudo); elsewhere the test skips
# and says why (MBM_KERAS_REQUIRE_BROWSER=1 turns that skip into a failure).
chromium:
	@if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q chromium chromium-driver || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; } \
			|| echo "NOTE: apt-get could not install chromium; the web page's browser test will skip."; \
	else echo "NOTE: chromium and chromedriver are missing and cannot be installed here (no root/sudo apt-get);" \
		"the web page's browser test will skip."; fi

demo: $(VENV)/.installed
	$(BIN)/mbm-keras demo

# Two pytest workers (pytest-xdist), one test module each at a time, so a
# module's trained fixtures are built once: about 46 minutes on 2 cores (benchmarks/suite.py --all says where).
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto --dist loadscope $(PYTEST_ARGS)

# Skips the full-size backbones' training steps, the end-to-end demo run, int8 conversions, the notebooks, the
# sequence fusions' TFLite conversions, the multi-process and resume runs, the retrieval and transcription runs' training and
# exports, the CLI's export and predict subprocesses, the ONNX parity export, the two-modality fusion variants, the
# classification config's epoch, a uvicorn process, the search and transcription servers (tests/test_serve_tasks.py),
# the AV-digits benchmark's run (make test runs them all): about
# 7 minutes on 2 cores (benchmarks/suite.py).
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto --dist loadscope -m "not slow" $(PYTEST_ARGS)

# The documentation site (mkdocs.yml): guides, config keys, architecture, API reference from the docstrings.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

zoo: $(VENV)/.installed
	$(BIN)/mbm-keras zoo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache site
