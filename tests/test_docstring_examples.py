"""Every `Example:` in the library's docstrings runs, on every backend, and prints what it says."""

import doctest
import importlib
import pathlib
import pkgutil

import pytest

import keras_vit

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(keras_vit.__path__, "keras_vit.")
    if ">>>" in pathlib.Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8")
)


def test_the_examples_are_found():
    assert {"keras_vit.model", "keras_vit.layers.transformer_block"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    for test in tests:
        runner.run(test)
    assert sum(len(t.examples) for t in tests) > 0
    assert runner.failures == 0, f"{runner.failures} docstring example(s) of {name} failed (output above)"
