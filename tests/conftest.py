"""Shared test settings. The suite runs once per backend (KERAS_BACKEND), each in its own process."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # the NumPy reference (numpy_vit.py)

import keras  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
