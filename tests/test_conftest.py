"""The suite's own helpers (tests/conftest.py): a misspelt backend must not silently turn a test
off on every leg, and test dependencies are required under make test."""

import pytest

import conftest
from conftest import once, once_on


def test_once_on_rejects_an_unknown_backend():
    for name in ("pytorch", "tf", "Jax", ""):
        with pytest.raises(ValueError, match=r"unknown backend .*tensorflow, jax, torch"):
            once_on(name)
        with pytest.raises(ValueError, match="unknown backend"):
            conftest.is_once_leg(name)
    with pytest.raises(ValueError, match="KERAS_VIT_ONCE_BACKEND: unknown backend 'torchh'"):
        conftest._known("torchh", "KERAS_VIT_ONCE_BACKEND")


def test_once_on_runs_on_exactly_one_leg(monkeypatch):
    """Under make test (KERAS_VIT_ONCE_BACKEND set) each backend's mark runs on its own leg."""
    monkeypatch.setenv("KERAS_VIT_ONCE_BACKEND", "torch")
    for backend in conftest.BACKENDS:
        skipped = once_on(backend).args[0]
        assert skipped == (backend != conftest.BACKEND), backend
    assert once.mark.name == "skipif"


def test_require_fails_instead_of_skipping_under_make_test(monkeypatch):
    monkeypatch.setattr(conftest, "REQUIRE_TEST_DEPS", True)
    with pytest.raises(ModuleNotFoundError):
        conftest.require("no_such_test_dependency")
    assert conftest.require("numpy").__name__ == "numpy"
    monkeypatch.setattr(conftest, "REQUIRE_TEST_DEPS", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.require("no_such_test_dependency")
