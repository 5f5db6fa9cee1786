# The README's two commands: `make demo` and `make test`. Both build .venv from requirements/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
PYTEST_ARGS ?=
# The stack for $(PYTHON) (tfod/stack.py, run as a plain script before anything is installed):
# its pins are in requirements/$(STACK)/. Empty for a Python no stack supports.
STACK := $(shell $(PYTHON) tfod/stack.py 2>/dev/null)
PRINT_VERSION := -c 'import sys; print("%d.%d" % sys.version_info[:2])'
PYTHON_VERSION := $(shell $(PYTHON) $(PRINT_VERSION) 2>/dev/null)
STAMP := $(VENV)/.installed-python$(PYTHON_VERSION)

.PHONY: venv demo test test-fast test-stack test-all bench bench-full lint doctor image clean

venv: $(STAMP)

# Two phases: the pinned stack, then the OD API and TF Model Garden without their declared deps.
# An unsupported Python stops at the first line, naming the supported ones; a .venv made by
# another Python is made again.
$(STAMP): $(wildcard requirements/$(STACK)/*.txt) requirements/dev.txt setup.py
	@$(PYTHON) tfod/stack.py >/dev/null
	test -x $(BIN)/python && test "$$($(BIN)/python $(PRINT_VERSION))" = "$(PYTHON_VERSION)" \
		|| { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PIP) install -q -r requirements/$(STACK)/runtime.txt -r requirements/dev.txt
	$(PIP) install -q --no-deps -r requirements/$(STACK)/nodeps.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(BIN)/tfod-doctor --quiet
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(BIN)/tfod-demo --output_dir demo_output

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit loop's tier (about 5 minutes): no slow, docker or multi-worker test. CI runs `make test`.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not docker and not multiworker" $(PYTEST_ARGS)

# The TF 2.21 stack's CI lane (README "Stacks"; `.ci/run` runs it on Python 3.12): each stage's
# tests but the slow (unless marked stack_lane: the demo end to end), docker and multi-worker
# ones, which the full suite runs on TF 2.15. The estimator-era references import only there.
STACK_LANE := tests/test_stacks.py tests/test_foundation.py tests/test_convert.py \
	tests/test_configs.py tests/test_pipeline.py tests/test_train.py tests/test_train_layer.py \
	tests/test_evaluator.py tests/test_export.py tests/test_predict.py tests/test_ensemble.py \
	tests/test_classify.py tests/test_campaign.py tests/test_quiet.py tests/test_tools.py
test-stack: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) $(STACK_LANE) tests/test_demo.py -m \
		"(stack_lane or not slow) and not estimator_reference and not docker and not multiworker"

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

# The training image (docker/README.md): a debootstrap Debian base where none can be pulled
# (SUITE=bookworm: Python 3.11, tf2.15, tfod:latest; SUITE=trixie: Python 3.13, tf2.21,
# tfod:trixie), BASE_IMAGE=... for a GPU base; not rebuilt when its context is unchanged.
SUITE ?= bookworm
image:
	SUITE=$(SUITE) bash docker/build_image.sh

clean:
	rm -rf $(VENV) build *.egg-info
