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
ONCE_BACKEND = os.environ.get("KERAS_VIT_ONCE_BACKEND") or BACKEND


def once_on(backend):
    """Runs a test on one leg per `make test`, `backend`'s (run alone, a leg runs it itself).
    `once` is the program logic above; `once_on` also serves scripts whose every call is plain
    Keras (tested in-process on every backend), run in a new process on one backend each,
    spreading such runs over the legs."""
    return pytest.mark.skipif(not is_once_leg(backend),
                              reason=f"runs once per make test, on {_chosen(backend)}")


def _chosen(backend):
    return backend if os.environ.get("KERAS_VIT_ONCE_BACKEND") else BACKEND


def is_once_leg(backend):
    """Whether this leg runs what `once_on(backend)` marks: for the part of a test that runs
    once per make test."""
    return BACKEND == _chosen(backend)


once = once_on(ONCE_BACKEND)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
