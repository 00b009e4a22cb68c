# lors_det: `make demo` and `make test` work on a fresh machine (they install first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lors_det-installed
INSTALL_INPUTS := requirements.txt $(wildcard requirements/*.txt) setup.py tools/misc/install.sh

.PHONY: install test test-fast demo clean-venv

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	bash tools/misc/install.sh $(VENV)
	touch $@

test: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# The core in about a minute: the LORS library, the mmdet modules and every
# shipped config, no subprocess trainings. One OpenMP thread: the models are
# tiny, and on a small or shared CPU idle threads spinning cost up to 10x.
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/lors tests/models tests/configs -q $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
