# The README's two commands: `make demo` and `make test`. Both build .venv from requirements/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast test-all bench bench-full lint doctor image clean

venv: $(STAMP)

# Two phases: the pinned stack, then the OD API and TF Model Garden without their declared deps.
$(STAMP): requirements/runtime.txt requirements/nodeps.txt requirements/dev.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/runtime.txt -r requirements/dev.txt
	$(PIP) install -q --no-deps -r requirements/nodeps.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(BIN)/tfod-doctor --quiet
	touch $@

demo: venv
	$(BIN)/tfod-demo --output_dir demo_output

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit loop's tier (about 5 minutes): no slow, docker or multi-worker test. CI runs `make test`.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not docker and not multiworker" $(PYTEST_ARGS)

# Every benchmark but the full-size one (about 45 minutes on 2 cores): `make bench-full`.
bench: venv
	for b in $(filter-out bench/full_size.py,$(wildcard bench/*.py)); do \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Every stage on an RSNA-sized set through the console scripts (docs/full_size.md);
# BENCH_FULL_ARGS="--scale 0.05" for a quick run.
BENCH_FULL_ARGS ?=
bench-full: venv
	$(BIN)/python bench/full_size.py $(BENCH_FULL_ARGS)

lint: venv
	$(BIN)/ruff check tfod tools tests bench

doctor: venv
	$(BIN)/tfod-doctor

# The training image (docker/README.md): a debootstrap Debian base where none can be pulled,
# BASE_IMAGE=... for a TensorFlow GPU base; not rebuilt when its context is unchanged.
image:
	bash docker/build_image.sh

clean:
	rm -rf $(VENV) build *.egg-info
