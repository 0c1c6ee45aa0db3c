"""`ViT(remat=True)`: rematerialised encoder blocks give the plain model's gradients.

Dropout and stochastic depth are on, so the recomputation must draw the forward pass's masks.
"""

import collections
import contextlib

import keras
import numpy as np
import pytest

import keras_vit
from conftest import BACKEND
from keras_vit.layers.transformer_block import TransformerBlock

ARCH = dict(image_size=16, patch_size=4, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64,
            classes=5, classifier_activation=None, dropout_rate=0.2, stochastic_depth_rate=0.2)


def _pair():
    plain = keras_vit.ViT(**ARCH)
    remat = keras_vit.ViT(remat=True, **ARCH)
    assert all(isinstance(b, keras_vit.RematTransformerBlock)
               for b in remat.layers if isinstance(b, keras_vit.TransformerBlock))
    remat.set_weights(plain.get_weights())
    for mine, theirs in zip(remat.non_trainable_variables, plain.non_trainable_variables):
        mine.assign(np.array(keras.ops.convert_to_numpy(theirs)))  # the same seed-generator states: the same dropout masks
    return plain, remat


@contextlib.contextmanager
def _block_calls():
    """Counts the calls of each encoder block's forward computation (`TransformerBlock.call`,
    which `RematTransformerBlock` runs inside `keras.remat`), by block name."""
    counts = collections.Counter()
    real = TransformerBlock.call

    def spy(self, *args, **kwargs):
        counts[self.name] += 1
        return real(self, *args, **kwargs)

    TransformerBlock.call = spy
    try:
        yield counts
    finally:
        TransformerBlock.call = real


def _gradients(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            return loss_fn(y, model.stateless_call(trainable, fixed, x, training=True)[0])

        return [np.asarray(g) for g in jax.jit(jax.grad(loss))(trainable)]
    if BACKEND == "torch":
        loss_fn(y, model(x, training=True)).backward()
        return [v.value.grad.cpu().numpy() for v in model.trainable_variables]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def test_gradients_equal_the_plain_models(rng):
    plain, remat = _pair()
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    keras.utils.set_random_seed(1)  # PyTorch's unseeded dropout draws from torch's own RNG
    with _block_calls() as plain_calls:
        expected = _gradients(plain, x, y)
    keras.utils.set_random_seed(1)
    with _block_calls() as remat_calls:
        got = _gradients(remat, x, y)
    # The recomputation: PyTorch and TensorFlow (eager) call each remat block's forward again
    # in the backward pass. JAX traces it once into the checkpoint (the recomputed products
    # are counted in its lowered step: test_jax_recomputation_reaches_the_compiler...).
    blocks = [f"encoderblock_{i}" for i in range(ARCH["num_layers"])]
    assert [plain_calls[b] for b in blocks] == [1] * len(blocks)
    assert [remat_calls[b] for b in blocks] == [1 if BACKEND == "jax" else 2] * len(blocks)
    scale = max(np.abs(g).max() for g in expected)
    error = max(np.abs(a - b).max() for a, b in zip(got, expected))
    print(f"\n[remat] {BACKEND}: max |gradient difference| {error:.1e} (largest gradient "
          f"{scale:.2f}), {len(expected)} arrays")
    assert scale > 0.01 and error <= 1e-6 * scale
    # The seeds advanced as in the plain model (the next step draws the same masks too).
    for a, b in zip(plain.non_trainable_variables, remat.non_trainable_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_compiled_training_steps_match_and_the_choice_is_saved(rng, tmp_path):
    plain, remat = _pair()
    x = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 5, 8)
    calls = {}
    for model in (plain, remat):
        keras.utils.set_random_seed(1)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        with _block_calls() as calls[model.name if model is plain else "remat"]:
            model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    # In `fit`'s own steps: PyTorch runs them eagerly (two steps: each remat block once more
    # per step); TensorFlow traces its step once, the remat blocks twice into it (forward and
    # recomputation); JAX traces the checkpoint once (its lowered step: the test below).
    extra = {"torch": 2, "tensorflow": 1, "jax": 0}[BACKEND]
    for i in range(ARCH["num_layers"]):
        name = f"encoderblock_{i}"
        assert calls["remat"][name] == calls[plain.name][name] + extra > 0, (name, calls)
    for a, b in zip(plain.get_weights(), remat.get_weights()):
        np.testing.assert_allclose(b, a, atol=1e-5)
    remat.save(tmp_path / "remat.keras")
    back = keras.saving.load_model(tmp_path / "remat.keras")
    assert sum(isinstance(l, keras_vit.RematTransformerBlock) for l in back.layers) == 3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x[:2])),
                               keras.ops.convert_to_numpy(remat(x[:2])), atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's per-shape kernel timing")
def test_first_step_times_kernels_outside_the_checkpoint(rng, monkeypatch):
    """The first forward of a shape times oneDNN against `addmm` (keras_vit.kernels.torch).
    Inside `torch.utils.checkpoint` that timing ran under the checkpoint's saved-tensor hooks
    and PyTorch refused the backward pass ("a different number of tensors was saved during the
    original forward and recomputation"): every ViT-B/16 or larger remat model on a CPU with
    oneDNN, at its first step. Here every product is timed, as ViT-B/16's are."""
    from keras_vit.kernels import torch as torch_kernels

    monkeypatch.setattr(torch_kernels, "PRODUCT_CHOICES", {})
    monkeypatch.setattr(torch_kernels, "TIMING_MIN_MULTIPLY_ADDS", 0)
    timed = []
    measure = torch_kernels._measure_product
    monkeypatch.setattr(torch_kernels, "_measure_product",
                        lambda *key, **kw: timed.append(key) or measure(*key, repeats=1))
    plain, remat = _pair()
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    keras.utils.set_random_seed(1)
    got = _gradients(remat, x, y)  # the first call: timings inside the checkpointed forward
    assert timed, "no product was timed: the test does not reach the timing"
    keras.utils.set_random_seed(1)
    expected = _gradients(plain, x, y)  # choices cached: the same kernels
    error = max(np.abs(a - b).max() for a, b in zip(got, expected))
    assert error <= 1e-6 * max(np.abs(g).max() for g in expected)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's lowering")
def test_jax_recomputation_reaches_the_compiler_behind_barriers(rng):
    """Each remat block's recomputation is in the lowered training step behind an optimization
    barrier (what keeps GPU and TPU compilers from merging it back); the plain model has
    none. On the CPU backend XLA removes them, and the block warns that it saves no memory."""
    import jax

    plain, remat = _pair()
    x = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")

    def lowered(model):
        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            return keras.ops.sum(model.stateless_call(trainable, fixed, x, training=True)[0])

        return jax.jit(jax.grad(loss)).lower(trainable).as_text()

    plain_text = lowered(plain)
    assert plain_text.count("optimization_barrier") == 0
    keras_vit.remat._warn_on_xla_cpu.cache_clear()  # it warns once a process
    if jax.default_backend() == "cpu":
        with pytest.warns(UserWarning, match="saves no memory on JAX's CPU backend"):
            text = lowered(remat)
    else:
        text = lowered(remat)
    assert text.count("optimization_barrier") == ARCH["num_layers"]
    # The recomputed products are in the step: each block's q/k/v, logits, values and MLP
    # products again (not its last product, whose output the backward pass does not need).
    recomputed = text.count("dot_general") - plain_text.count("dot_general")
    assert recomputed >= 4 * ARCH["num_layers"], recomputed


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's saved-tensor hooks")
def test_torch_keeps_only_block_inputs_for_the_backward_pass(rng):
    """The bytes PyTorch saves for the backward pass, counted with saved-tensor hooks (each
    storage once, weights excluded): the remat model keeps each block's input where the plain
    one keeps every activation."""
    import torch

    def saved_bytes(model):
        storages = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x, training=True)
        weights = {v.value.untyped_storage().data_ptr() for v in model.weights}
        return sum(n for pointer, n in storages.items() if pointer not in weights)

    plain, remat = _pair()
    x = torch.as_tensor(rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32"))
    plain_bytes, remat_bytes = saved_bytes(plain), saved_bytes(remat)
    print(f"\n[remat] torch: {plain_bytes:,} bytes saved for backward without remat, "
          f"{remat_bytes:,} with")
    block_input = 8 * 17 * ARCH["hidden_size"] * 4  # (B, T, D) float32
    assert remat_bytes < 0.4 * plain_bytes
    # A plain block keeps at least ten (B, T, D) arrays' worth: two LayerNorm outputs, q, k, v,
    # the attention output, the (B, T, 4D) MLP input to GELU (and more: probabilities, ...).
    assert plain_bytes - remat_bytes > ARCH["num_layers"] * 10 * block_input
