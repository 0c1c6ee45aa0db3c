"""PyTorch's compiled train step (`keras_vit/kernels/torch_step.py`): the same training as Keras'
uncompiled step, one traced graph per input signature, fresh dropout masks every step, Keras'
own step where the forward pass cannot be traced.

`torch.compile` is recorded and skipped here (the traced graph runs as it is): Dynamo's first
use costs half a minute on the 2-core test machine, and Inductor's C++ build minutes.
`python benchmarks/torch_compile.py --dry-run` runs the step through Dynamo and AOTAutograd
(no recompilation) and the benchmark through Inductor (benchmarks/RESULTS.md).
"""

import warnings

import numpy as np
import pytest

from conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's compiled train step")


@pytest.fixture
def compiled(monkeypatch):
    """The options of every `torch.compile` call, which returns the function itself."""
    import torch

    calls = []

    def record(fn, **options):
        calls.append(options)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    return calls


def _vit(**options):
    import keras

    from keras_vit import ViT

    keras.utils.set_random_seed(0)
    return ViT(image_size=16, patch_size=8, hidden_size=16, num_layers=2, num_heads=2,
               mlp_dim=32, classes=5, classifier_activation=None, **options)


def _compile(model, jit_compile, learning_rate=0.01):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _data(rng, n=8):
    return (rng.uniform(0, 255, (n, 16, 16, 3)).astype("float32"),
            rng.integers(0, 5, n).astype("int64"))


def test_compiled_step_trains_as_keras_uncompiled_step(compiled, rng):
    """Two steps: the same losses, accuracy and weights as Keras' eager step (float32
    rounding apart), from one traced graph compiled whole."""
    from keras_vit.kernels.torch_step import CompiledTrainStep

    x, y = _data(rng)
    ours, theirs = _compile(_vit(), True), _compile(_vit(), False)
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    start = [w.numpy() for w in ours.trainable_weights]
    history = ours.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    expected = theirs.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    assert isinstance(ours.train_function, CompiledTrainStep)
    assert len(ours.train_function.compiled) == 1  # one signature, one graph
    assert compiled == [dict(fullgraph=True, dynamic=False)]
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)
    assert history["accuracy"] == expected["accuracy"]
    moved = 0
    for a, b, before in zip(ours.trainable_weights, theirs.trainable_weights, start):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
        moved += not np.array_equal(a.numpy(), before)
    assert moved == len(ours.trainable_weights)  # every weight trained
    # A batch of another size: a second graph, as jax.jit traces again.
    ours.train_on_batch(x[:3], y[:3])
    assert len(ours.train_function.compiled) == 2 and len(compiled) == 2


def test_dropout_draws_new_masks_at_every_step(compiled, rng):
    """Dropout traces (PyTorch's own generator, drawn inside the compiled graph): the same
    batch and weights (learning rate 0) give a different loss at every step."""
    x, y = _data(rng, 4)
    model = _compile(_vit(dropout_rate=0.5), True, learning_rate=0.0)
    head = model.get_layer("head").kernel  # zero-initialised: logits would not see dropout
    head.assign(rng.standard_normal(tuple(head.shape)).astype("float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        losses = [float(model.train_on_batch(x, y)[0]) for _ in range(3)]
    assert len(set(losses)) == 3, losses
    assert len(model.train_function.compiled) == 1 and len(compiled) == 1


def test_untraceable_forward_pass_takes_keras_step_and_says_why(compiled, rng):
    """Stochastic depth draws from a seeded SeedGenerator, whose seed Keras' PyTorch backend
    reads as a Python int: no trace. A warning, then Keras' own step (its torch.compile
    skipped here), whose training equals the uncompiled model's."""
    x, y = _data(rng, 4)
    ours = _compile(_vit(stochastic_depth_rate=0.5), True)
    theirs = _compile(_vit(stochastic_depth_rate=0.5), False)
    with pytest.warns(UserWarning, match="could not be traced as a function of the weights"):
        ours.train_on_batch(x, y)
    assert ours.train_function.fallback is not None and compiled == [{}]  # Keras' call
    theirs.train_on_batch(x, y)
    for a, b in zip(ours.trainable_weights, theirs.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.path)


def test_custom_train_step_and_uncompiled_models_keep_keras_step(compiled):
    from keras_vit.kernels.torch_step import CompiledTrainStep
    from keras_vit.model import VisionTransformer

    class Custom(VisionTransformer):
        def train_step(self, data):
            return super().train_step(data)

    vit = _compile(_vit(), False)
    vit.make_train_function()
    assert not isinstance(vit.train_function, CompiledTrainStep) and compiled == []
    custom = _compile(Custom(vit.inputs, vit.outputs), True)
    custom.make_train_function()
    assert not isinstance(custom.train_function, CompiledTrainStep) and compiled == [{}]
