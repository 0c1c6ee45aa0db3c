"""Shared test settings. The suite runs once per backend (KERAS_BACKEND), each in its own process."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the NumPy reference (numpy_vit.py)

import keras  # noqa: E402

BACKEND = keras.backend.backend()

# Program-level tests whose logic does not depend on the backend (the orchestration of
# `keras-vit ablate` and `pretrain`, a single process's --resume bookkeeping) run once per
# `make test`, in the leg that KERAS_VIT_ONCE_BACKEND names (the Makefile: torch, which compiles
# tiny models fastest). Run alone (`make test-jax`, plain pytest), a leg runs them itself. Each
# engine's own training and resume paths are tested on every backend elsewhere
# (test_applications, test_masked_patch_prediction, test_distributed_multiprocess).
BACKENDS = ("tensorflow", "jax", "torch")


def _known(backend, where):
    # A misspelt name would match no leg, and the test would silently never run.
    if backend not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {backend!r}; expected one of "
                         f"{', '.join(BACKENDS)}.")
    return backend


ONCE_BACKEND = _known(os.environ.get("KERAS_VIT_ONCE_BACKEND") or BACKEND,
                      "KERAS_VIT_ONCE_BACKEND")


def once_on(backend):
    """Runs a test on one leg per `make test`, `backend`'s (run alone, a leg runs it itself).
    `once` is the program logic above; `once_on` also serves scripts whose every call is plain
    Keras (tested in-process on every backend), run in a new process on one backend each,
    spreading such runs over the legs. An unknown backend name raises ValueError."""
    _known(backend, "once_on")
    return pytest.mark.skipif(not is_once_leg(backend),
                              reason=f"runs once per make test, on {_chosen(backend)}")


def _chosen(backend):
    return backend if os.environ.get("KERAS_VIT_ONCE_BACKEND") else BACKEND


def is_once_leg(backend):
    """Whether this leg runs what `once_on(backend)` marks: for the part of a test that runs
    once per make test."""
    _known(backend, "is_once_leg")
    return BACKEND == _chosen(backend)


once = once_on(ONCE_BACKEND)

# Under `make test` (the Makefile sets it) the test dependencies must be installed: a broken
# install fails the leg instead of skipping whole modules while `make test` passes.
REQUIRE_TEST_DEPS = os.environ.get("KERAS_VIT_REQUIRE_TEST_DEPS") == "1"


def require(module):
    """`pytest.importorskip(module)`, except under `make test` (KERAS_VIT_REQUIRE_TEST_DEPS=1),
    where a missing or broken test dependency is an error."""
    if REQUIRE_TEST_DEPS:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
