# Two commands for a fresh machine: `make demo` runs the flights pipeline locally, `make test` runs the tests.
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test compile services bench clean

$(INSTALLED): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/dmlops run flights

test: $(INSTALLED) services
	$(VENV)/bin/python -m pytest

compile: $(INSTALLED)
	$(VENV)/bin/dmlops compile

services:
	bash scripts/services.sh

bench: $(INSTALLED)
	for script in bench/*.py; do $(PYTHON) $$script || exit 1; done

clean:
	rm -rf $(VENV) local_outputs
