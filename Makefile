# The two quickstart commands: `make run` (train the small preset on the bundled Beauty data if no
# bundle exists, then serve it on :8000) and `make test`.
PYTHON ?= python3
BUNDLE ?= bundles/beauty-small
PRESET ?= small
STAMP := .install.stamp

.PHONY: install run train serve test lint typecheck check

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[train,serve,dev]"
	touch $(STAMP)

install: $(STAMP)

train: install
	@test -f $(BUNDLE)/config.json || $(PYTHON) -m training train --data data/beauty --preset $(PRESET) --out $(BUNDLE)

serve: install
	ELMREC_MODEL_DIR=$(BUNDLE) $(PYTHON) -m service

run: train serve

test: install
	$(PYTHON) -m pytest

lint: install
	$(PYTHON) -m ruff check .

typecheck: install
	$(PYTHON) -m mypy

check: lint typecheck test
