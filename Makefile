# The two quickstart commands: `make run` (train the small preset on the bundled Beauty data if no
# bundle exists, then serve it on :8000) and `make test`.
PYTHON ?= python3
BUNDLE ?= bundles/beauty-small
PRESET ?= small
STAMP := .install.stamp

.PHONY: install run train serve test test-reliability lint typecheck check

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[train,serve,dev,onnx]"
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
	lint-imports

typecheck: install
	$(PYTHON) -m mypy

# the slow reliability tests (load, overload, SIGTERM, long fuzz, repeated Redis kills, a replica killed
# behind nginx past its fail_timeout, killed training): docs/RELIABILITY.md, docs/DEPLOYMENT.md
test-reliability: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -m slow -p no:cacheprovider tests/service/test_reliability_fuzz.py \
		tests/service/test_reliability_redis_faults.py tests/service/test_reliability_shutdown.py \
		tests/service/test_reliability_load.py tests/service/test_reliability_overload.py \
		tests/service/test_reliability_replicas_proxy.py \
		tests/training/test_robustness.py

check: lint typecheck test
