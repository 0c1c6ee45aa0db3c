# keras-vit: the two commands a newcomer needs are `make train` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch
# Three pytest workers (pytest-xdist) on the 2-core machine: many tests wait on one core (XLA
# compiles, the imports of new processes). Measured once, PyTorch's leg took 597 s with two and
# 526 s with three (1.96 cores busy); whole fresh-clone runs do not settle it (JAX's leg 666 s
# with two, 665 s with three, with other test changes between them). Two were 33% faster than
# one for TensorFlow's leg. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
PYTEST_ARGS ?=
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
# Python caches compiled modules unless PYTHONDONTWRITEBYTECODE is set, as it is on some
# machines (this one's sandbox). Then every new process compiles the ~4,000-5,000 modules of
# TensorFlow, JAX or PyTorch it imports from source: 17 s of CPU to import keras_vit, tf_data
# and the programs on JAX instead of 7 s here, paid again by each of the suite's many
# processes. The install is --no-compile; each module is compiled once, when first imported.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install test train docs $(addprefix test-,$(BACKENDS)) clean

# (Re)install when the venv is missing or the project's requirements changed.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# --no-compile: pip byte-compiles every module of TensorFlow, PyTorch and JAX (53 s instead
	# of 214 s for this install here); Python compiles the few that are imported, once.
	# This project was distributed as keras-vit before it became keras3-vit: drop the old name.
	@$(PY) -m pip uninstall -q -y keras-vit 2>/dev/null || true
	$(PY) -m pip install -q --no-compile -c constraints.txt -e ".[test]"
	# keras-cv (the cv extra, tested here) without its dependencies: its pins predate Keras 3.15.
	$(PY) -m pip install -q --no-compile --no-deps -c constraints.txt keras-cv
	@touch $(STAMP)

install: $(STAMP)

# Under make test the test dependencies (transformers, safetensors, keras-cv, mkdocs) must
# import: a broken install fails instead of skipping whole modules (tests/conftest.py: require).
export KERAS_VIT_REQUIRE_TEST_DEPS := 1

# One process per backend: Keras reads KERAS_BACKEND once, at import.
test: $(STAMP)
	@failed=""; \
	for b in $(BACKENDS); do \
	  echo "=== pytest, KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b KERAS_VIT_ONCE_BACKEND=torch $(PYTEST) tests || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED on:$$failed"; exit 1; fi; \
	echo "all backends passed"

# A static pattern rule: make skips implicit-rule search for .PHONY targets.
$(addprefix test-,$(BACKENDS)): test-%: $(STAMP)
	KERAS_BACKEND=$* $(PYTEST) tests

# Trains a small ViT on the embedded digits data (no download): the digits preset plus MixUp and
# a weight EMA, on JAX (it compiles this model's train step in half TensorFlow's time; choose
# another with TRAIN_BACKEND=...). JAX runs each 19-step epoch as one call (--steps-per-execution),
# saving its per-step dispatch; TensorFlow's in-graph loop costs more to compile than it saves.
# Measured figures: benchmarks/RESULTS.md.
TRAIN_BACKEND ?= jax
STEPS_PER_EXECUTION_jax := 19
TRAIN_ARGS ?= --mixup 0.2 --ema 0.998 --epochs 120 \
  --steps-per-execution $(or $(STEPS_PER_EXECUTION_$(TRAIN_BACKEND)),1)
train: $(STAMP)
	KERAS_BACKEND=$(TRAIN_BACKEND) $(VENV)/bin/keras-vit train --dataset digits $(TRAIN_ARGS) \
	  --output runs/digits

# The API reference (docs/api.md, generated from the docstrings) and the guides, into site/.
# make test builds it once more, in strict mode (tests/test_docs.py).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs .pytest_cache site
