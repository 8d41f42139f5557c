# Two commands do all set-up on a fresh machine, in either order: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The demo needs JupyterLab and a local recognizer; the tests need the dev extras too.
DEMO   := $(VENV)/.demo-$(HASH)
TESTS  := $(VENV)/.tests-$(HASH)

.PHONY: demo test sim bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEMO): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo]'
	@# Notebooks are committed without outputs: git strips them (see .gitattributes).
	-git rev-parse --git-dir >/dev/null 2>&1 && $(VENV)/bin/nbstripout --install
	rm -f $(VENV)/.demo-*
	touch $@

$(TESTS): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	-git rev-parse --git-dir >/dev/null 2>&1 && $(VENV)/bin/nbstripout --install
	rm -f $(VENV)/.tests-* $(VENV)/.demo-*
	touch $@ $(DEMO)

# Jupyter refuses to run as root unless told; containers often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# The notebooks and the CLI (run from here) share one data folder: ./voicenb-data.
demo: export VOICENB_HOME ?= $(CURDIR)/voicenb-data
demo: $(DEMO)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 $(ROOT_FLAG) --ServerApp.root_dir=$(CURDIR) \
		$(JUPYTER_ARGS) notebooks/demo.ipynb

test: $(TESTS)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(TESTS)
	$(PY) -m bench

sim: $(DEMO)
	$(PY) -m voicenb.sim

clean:
	rm -rf $(VENV) .pytest_cache voicenb-data
