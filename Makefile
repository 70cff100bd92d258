# gradkit: two commands on a fresh machine (Python >= 3.10 and pip): `make report`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.gradkit-installed
PROFILE ?=
PYTEST_ARGS ?=

.PHONY: all install report test browser-test lab doctor bench notebooks slides clean

all: install

install: $(STAMP)

# Rebuilt only when the dependencies change; `make` alone is safe to repeat.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Execute every lesson with papermill into reports/ (.ipynb + .html + index.html).
report: $(STAMP)
	$(BIN)/python -m gradkit report --out reports $(if $(PROFILE),--profile $(PROFILE))

# Unit tests, doctests and every notebook under nbval (only `# NBVAL_CHECK_OUTPUT` cells are compared).
test: $(STAMP)
	GRADKIT_HEADLESS=1 MPLBACKEND=Agg $(BIN)/python -m pytest tests gradkit notebooks \
		--doctest-modules --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
		--durations=15 -p no:cacheprovider $(PYTEST_ARGS)

# The widget lessons in JupyterLab, driven in Debian's Chromium (/usr/bin/chromium) by Playwright, and
# executed with plain papermill (GRADKIT_PAPERMILL_REPEAT times each, default 1); screenshots in reports/browser/.
BROWSER_STAMP := $(VENV)/.gradkit-browser-installed
$(BROWSER_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,browser]"
	touch $(BROWSER_STAMP)

browser-test: $(BROWSER_STAMP)
	GRADKIT_BROWSER_TEST=1 GRADKIT_PROFILE=$(or $(PROFILE),smoke) $(BIN)/python -m pytest tests/browser \
		-s -p no:cacheprovider $(PYTEST_ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

doctor: $(STAMP)
	$(BIN)/python -m gradkit doctor

bench: $(STAMP)
	$(BIN)/python bench/clip_overhead.py
	$(BIN)/python bench/train_throughput.py --width 0.25 --subset 5000 --test-subset 2000 --epochs 2
	$(BIN)/python bench/sweep_throughput.py

# One offline reveal.js deck per lesson (from the stored outputs) in reports/slides/.
slides: $(STAMP)
	$(BIN)/python -m gradkit slides notebooks/[0-9][0-9]_*.ipynb --out reports/slides

# Re-execute the lessons in place (cpu profile) so the stored outputs are fresh.
notebooks: $(STAMP)
	$(BIN)/python tools/nbtool.py execute notebooks/[0-9][0-9]_*.ipynb --profile $(or $(PROFILE),cpu) --timings reports/timing

clean:
	rm -rf reports .pytest_cache build *.egg-info
