# lors_det: `make demo` and `make test` work on a fresh machine (they install first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lors_det-installed
INSTALL_INPUTS := requirements.txt $(wildcard requirements/*.txt) setup.py tools/misc/install.sh

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	bash tools/misc/install.sh $(VENV)
	touch $@

test: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
