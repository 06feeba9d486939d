# Two commands for a fresh machine: `make demo` runs the flights pipeline locally, `make test` runs the tests.
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
HOROVOD := $(VENV)/.horovod

.PHONY: demo test compile services bench images clean horovod

VERSION = $(shell python3 -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
REGISTRY ?= ghcr.io/dmlops

$(INSTALLED): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(INSTALLED)

# horovod has no wheel that builds against torch 2.13 on PyPI: built once per machine, then cached.
$(HOROVOD): $(INSTALLED) scripts/build_horovod.sh
	bash scripts/build_horovod.sh $(PYTHON)
	touch $(HOROVOD)

horovod: $(HOROVOD)

demo: $(INSTALLED)
	$(VENV)/bin/dmlops run flights

test: $(INSTALLED) $(HOROVOD) services
	$(VENV)/bin/python -m pytest

compile: $(INSTALLED)
	$(VENV)/bin/dmlops compile

services:
	bash scripts/services.sh

bench: $(INSTALLED) services
	$(PYTHON) -m pip install -q -e '.[all,bench]'
	for script in bench/*.py; do $(PYTHON) $$script || exit 1; done

# base, torch-horovod (CPU), tf-horovod and serve, tagged $(REGISTRY)/<name>:$(VERSION); the CUDA variant is
# built where a GPU build is wanted: docker build -f containers/torch-horovod/Dockerfile.cuda ...
images:
	REGISTRY=$(REGISTRY) bash scripts/images.sh

clean:
	rm -rf $(VENV) local_outputs
