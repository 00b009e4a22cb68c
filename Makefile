# lors_det: `make demo` and `make test` work on a fresh machine (they install first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lors_det-installed
LINT_STAMP := $(VENV)/.lors_det-lint-installed
INSTALL_INPUTS := requirements.txt $(wildcard requirements/*.txt) setup.py tools/misc/install.sh
# what lint checks and format rewrites (settings: setup.cfg, mmdet's)
LINT_PATHS := lors_det tools tests configs projects demo setup.py

.PHONY: install test test-fast lint format demo clean-venv

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	bash tools/misc/install.sh $(VENV)
	touch $@

$(LINT_STAMP): requirements/lint.txt | $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lint.txt
	touch $@

test: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# Everything but the subprocess runs (`slow`: tools and trainings started as
# a user would). One OpenMP thread: the models are tiny, and on a small or
# shared CPU idle threads spinning cost up to 10x.
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -m "not slow and not cuda" $(PYTEST_ARGS)

lint: $(LINT_STAMP)
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)
	$(PY) -m yapf -r -d $(LINT_PATHS)

format: $(LINT_STAMP)
	$(PY) -m isort $(LINT_PATHS)
	$(PY) -m yapf -r -i $(LINT_PATHS)

demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
