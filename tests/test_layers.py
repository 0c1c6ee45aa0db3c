"""Each layer against hand-computed values, and its config / .keras round trip."""

import numpy as np
import pytest

import keras
from keras import ops

import keras_vit
from conftest import BACKEND
from numpy_vit import layer_norm as numpy_layer_norm
from keras_vit.layers import (
    Dense,
    LayerNorm,
    MlpBlock,
    MultiHeadDotProductAttention,
    PatchEncoder,
    Patches,
    ResidualUnit,
    StdConv2D,
    TokenPooling,
    TransformerBlock,
)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_patches_are_row_major_with_pixel_channel_order():
    image = np.arange(4 * 6 * 2, dtype="float32").reshape(1, 4, 6, 2)
    patches = numpy(Patches((2, 3))(image))
    assert patches.shape == (1, 4, 2 * 3 * 2)
    # patch 1 is the top row's second patch: rows 0-1, columns 3-5, flattened (row, col, ch).
    np.testing.assert_array_equal(patches[0, 1], image[0, 0:2, 3:6, :].reshape(-1))
    # patch 2 starts the second row of patches.
    np.testing.assert_array_equal(patches[0, 2], image[0, 2:4, 0:3, :].reshape(-1))


def test_patch_projection_equals_the_official_strided_convolution(rng):
    images = rng.standard_normal((2, 8, 12, 3)).astype("float32")
    encoder = PatchEncoder(5, patch_size=4, grid_size=(2, 3), use_class_token=False,
                           position_embedding="none")
    tokens = numpy(encoder(Patches(4)(images)))
    kernel, bias = numpy(encoder.kernel), numpy(encoder.bias)
    expected = np.stack([
        np.einsum("bijc,ijcd->bd", images[:, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4], kernel) + bias
        for r in range(2) for c in range(3)
    ], axis=1)
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-5)


def test_class_token_and_learned_1d_position(rng):
    encoder = PatchEncoder(4, patch_size=1, grid_size=(1, 2))
    patches = rng.standard_normal((1, 2, 3)).astype("float32")
    encoder.build(patches.shape)
    encoder.cls.assign(np.full((1, 1, 4), 7.0))
    encoder.bias.assign(np.zeros(4))
    encoder.pos_embedding.assign(np.arange(12, dtype="float32").reshape(1, 3, 4))
    out = numpy(encoder(patches))
    kernel = numpy(encoder.kernel).reshape(3, 4)
    np.testing.assert_allclose(out[0, 0], 7.0 + np.arange(4), rtol=1e-6)
    np.testing.assert_allclose(out[0, 1:], patches[0] @ kernel + np.arange(4, 12).reshape(2, 4),
                               rtol=1e-5, atol=1e-6)


def test_learned_2d_position_concatenates_row_and_column_tables():
    encoder = PatchEncoder(4, patch_size=1, grid_size=(2, 3), use_class_token=True,
                           position_embedding="learned_2d")
    patches = np.zeros((1, 6, 1), "float32")
    encoder.build(patches.shape)
    encoder.bias.assign(np.zeros(4))
    encoder.pos_embedding_row.assign(np.array([[1, 2], [3, 4]], "float32"))
    encoder.pos_embedding_col.assign(np.array([[10, 20], [30, 40], [50, 60]], "float32"))
    out = numpy(encoder(patches))[0]
    np.testing.assert_array_equal(out[0], np.zeros(4))  # class token (zero-init), no position
    np.testing.assert_array_equal(out[1 + 1 * 3 + 2], [3, 4, 50, 60])  # row 1, column 2


def _numpy_attention(layer, x):
    """The layer's multi-head self-attention in NumPy from its official-layout weights, in
    x's dtype: outputs (B, T, D) and probabilities (B, H, T, T)."""
    w = {n: numpy(getattr(layer, f"{n}_kernel")) for n in ("query", "key", "value", "out")}
    b = {n: numpy(getattr(layer, f"{n}_bias")) for n in ("query", "key", "value", "out")}
    q, k, v = (np.einsum("btd,dhk->bthk", x, w[n]) + b[n] for n in ("query", "key", "value"))
    logits = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(layer.head_dim)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    out = np.einsum("bqhk,hkd->bqd", np.einsum("bhqt,bthk->bqhk", probs, v), w["out"]) + b["out"]
    return out, probs


def _central_differences(loss, arrays, step):
    """{name: d loss / d arrays[name]} by central differences; `loss` takes the dict."""
    grads = {}
    for name, value in arrays.items():
        grads[name] = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = dict(arrays), dict(arrays)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][index] += step
            minus[name][index] -= step
            grads[name][index] = (loss(plus) - loss(minus)) / (2 * step)
    return grads


def test_attention_probabilities_and_output_match_numpy(rng):
    x = rng.standard_normal((2, 5, 8)).astype("float32")
    layer = MultiHeadDotProductAttention(num_heads=2)
    out, probs = layer(x, return_attention_scores=True)
    out, probs = numpy(out), numpy(probs)
    expected, expected_probs = _numpy_attention(layer, x)  # head_dim 4: logits / 2
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # The fused path (no probabilities) gives the same output.
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's graph and XLA forms")
@pytest.mark.parametrize("training", [False, True])
def test_attention_is_the_same_function_in_every_tensorflow_form(training, rng):
    """TensorFlow attention picks its softmax form by compiler (`_normalises_before_values`)
    and folds the 1/sqrt(D/H) scale into the query kernel: eagerly, in a graph and under
    XLA it computes the same outputs and input gradients as NumPy, here with 6-wide heads,
    whose scale is not a power of two."""
    import tensorflow as tf

    from keras_vit.kernels.tensorflow import in_xla_graph as in_xla_tensorflow_graph

    x = rng.standard_normal((2, 5, 12)).astype("float32")
    upstream = rng.standard_normal((2, 5, 12)).astype("float32")
    layer = MultiHeadDotProductAttention(num_heads=2)
    layer.build(x.shape)
    expected, _ = _numpy_attention(layer, x.astype("float64"))
    expected_grad = _central_differences(
        lambda p: (_numpy_attention(layer, p["x"])[0] * upstream).sum(),
        {"x": x.astype("float64")}, step=1e-3)["x"]

    def output_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=training)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, x), tf.constant(in_xla_tensorflow_graph())

    forms = {
        "eager": output_and_gradient,
        "graph": tf.function(output_and_gradient),
        "xla": tf.function(output_and_gradient, jit_compile=True),
    }
    for name, form in forms.items():
        out, grad, in_xla = form(tf.constant(x))
        assert bool(in_xla) == (name == "xla"), name
        np.testing.assert_allclose(numpy(out), expected, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(numpy(grad), expected_grad, rtol=1e-3, atol=1e-4, err_msg=name)


def test_relative_attention_adds_offset_logits_before_softmax(rng):
    t, d = 4, 6
    x = rng.standard_normal((1, t, d)).astype("float32")
    layer = MultiHeadDotProductAttention(num_heads=1, relative_position=True)
    layer.build(x.shape)
    table = rng.standard_normal((2 * t - 1, 1, d)).astype("float32")
    layer.relative_embedding.assign(table)
    out, probs = layer(x, return_attention_scores=True)
    # The fused path (PyTorch SDPA with the relative bias) computes the same output.
    np.testing.assert_allclose(numpy(layer(x)), numpy(out), rtol=1e-5, atol=1e-6)
    q = (np.einsum("btd,dhk->bthk", x, numpy(layer.query_kernel)) + numpy(layer.query_bias))[0, :, 0]
    k = (np.einsum("btd,dhk->bthk", x, numpy(layer.key_kernel)) + numpy(layer.key_bias))[0, :, 0]
    q = q / np.sqrt(d)
    logits = np.array([[q[i] @ k[j] + q[i] @ table[i - j + t - 1, 0] for j in range(t)] for i in range(t)])
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(numpy(probs)[0, 0], expected, rtol=1e-4, atol=1e-6)


def test_transformer_block_is_pre_ln_with_residuals(rng):
    from numpy_vit import gelu as numpy_gelu

    x = rng.standard_normal((2, 3, 8)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16)
    block.build(x.shape)
    w = {}
    for weight in block.weights:  # informative values everywhere, kept by checkpoint name
        value = rng.standard_normal(weight.shape) * 0.5 + (1.0 if weight.path.endswith("gamma") else 0.0)
        weight.assign(value.astype("float32"))
        w[weight.path.split("/", 1)[1]] = value.astype("float32").astype("float64")
    y, probs = block(x, return_attention_scores=True)
    # Eq. 2-3 in float64 NumPy: x + MSA(LN(x)), then + MLP(LN(.)), LN eps 1e-6, tanh GELU.
    a, m = "MultiHeadDotProductAttention_1/", "MlpBlock_3/"
    h = numpy_layer_norm(x.astype("float64"), w["LayerNorm_0/gamma"], w["LayerNorm_0/beta"], eps=1e-6)
    q, k, v = (np.einsum("btd,dhk->bhtk", h, w[f"{a}{n}_kernel"]) + w[f"{a}{n}_bias"][:, None]
               for n in ("query", "key", "value"))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(4)
    expected_probs = np.exp(logits - logits.max(-1, keepdims=True))
    expected_probs /= expected_probs.sum(-1, keepdims=True)
    z = x + np.einsum("bhtk,hkd->btd", expected_probs @ v, w[a + "out_kernel"]) + w[a + "out_bias"]
    h = numpy_layer_norm(z, w["LayerNorm_2/gamma"], w["LayerNorm_2/beta"], eps=1e-6)
    h = numpy_gelu(h @ w[m + "Dense_0/kernel"] + w[m + "Dense_0/bias"], approximate=True)
    z = z + h @ w[m + "Dense_1/kernel"] + w[m + "Dense_1/bias"]
    np.testing.assert_allclose(numpy(y), z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(numpy(probs), expected_probs, rtol=1e-4, atol=1e-5)
    assert block.layer_norm_0.epsilon == 1e-6


@pytest.mark.parametrize("relative_position", [False, True])
def test_num_queries_computes_exactly_the_first_rows(relative_position, rng):
    x = rng.standard_normal((2, 5, 8)).astype("float32")
    attention = MultiHeadDotProductAttention(num_heads=2, relative_position=relative_position)
    block = TransformerBlock(num_heads=2, mlp_dim=16, relative_position=relative_position)
    for layer in (attention, block):
        layer.build(x.shape)
        for weight in layer.weights:  # non-zero biases and tables, so every term shows
            weight.assign(rng.standard_normal(weight.shape).astype("float32") * 0.5)
        full, full_probs = layer(x, return_attention_scores=True)
        out, probs = layer(x, return_attention_scores=True, num_queries=2)
        assert tuple(out.shape) == (2, 2, 8) and tuple(probs.shape) == (2, 2, 2, 5)
        np.testing.assert_allclose(numpy(out), numpy(full)[:, :2], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(numpy(probs), numpy(full_probs)[:, :, :2], rtol=1e-5, atol=1e-6)
        # The path without probabilities (fused on PyTorch) agrees too.
        np.testing.assert_allclose(numpy(layer(x, num_queries=1)), numpy(full)[:, :1], rtol=1e-5, atol=1e-5)
        symbolic = layer(keras.Input((5, 8)), num_queries=1, return_attention_scores=True)
        assert [tuple(t.shape) for t in symbolic] == [(None, 1, 8), (None, 2, 1, 5)]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's in-place GELU")
def test_mlp_block_without_gradient_recording_matches_and_keeps_its_input(rng):
    import torch

    x = (3 * rng.standard_normal((2, 3, 8))).astype("float32")
    for approximate in (True, False):
        mlp = MlpBlock(16, gelu_approximate=approximate)
        recorded = numpy(mlp(x))
        tokens = torch.from_numpy(x.copy())
        with torch.no_grad():
            np.testing.assert_array_equal(numpy(mlp(tokens)), recorded)
        np.testing.assert_array_equal(tokens.numpy(), x)


@pytest.mark.parametrize("approximate", [True, False])
def test_mlp_block_uses_the_chosen_gelu(approximate, rng):
    from scipy.special import erf

    x = (3 * rng.standard_normal((2, 3, 8))).astype("float32")
    mlp = MlpBlock(16, gelu_approximate=approximate)
    y = numpy(mlp(x))
    w0, b0 = numpy(mlp.dense_0.kernel), numpy(mlp.dense_0.bias)
    w1, b1 = numpy(mlp.dense_1.kernel), numpy(mlp.dense_1.bias)
    h = x.astype(np.float64) @ w0 + b0
    tanh_gelu = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    erf_gelu = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    wanted, other = (tanh_gelu, erf_gelu) if approximate else (erf_gelu, tanh_gelu)
    np.testing.assert_allclose(y, wanted @ w1 + b1, rtol=1e-5, atol=1e-5)
    assert np.abs(y - (other @ w1 + b1)).max() > 1e-4  # the flavours are distinguishable


def _value_and_vjp(fn, x, upstream, graph=False):
    """fn(x) and upstream . d fn / dx on the active backend (TensorFlow: eagerly, or inside a
    `tf.function` without XLA when `graph`)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def run(x, upstream):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return y, tape.gradient(y, x, output_gradients=upstream)

        run = tf.function(run, jit_compile=False) if graph else run
        y, grad = run(tf.constant(x), tf.constant(upstream))
    elif BACKEND == "jax":
        import jax

        y, vjp = jax.vjp(fn, x)
        (grad,) = vjp(upstream)
    else:
        import torch

        xt = torch.tensor(x, requires_grad=True)
        y = fn(xt)
        y.backward(torch.tensor(upstream))
        y, grad = y.detach(), xt.grad
    return numpy(y), numpy(grad)


@pytest.mark.parametrize("approximate", [True, False], ids=["tanh", "erf"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_gelu_and_its_gradient_match_the_float64_closed_forms(approximate, training, rng):
    """Values and gradients against float64 closed forms, for both flavours, on every path:
    TensorFlow's training path has a gradient of its own (two XLA-compiled functions), checked
    eagerly and inside a graph-mode step, as large models train on CPUs."""
    from scipy.special import erf

    from keras_vit.layers.activations import gelu

    x = np.concatenate([np.linspace(-6, 6, 61), 3 * rng.standard_normal(64)]).astype("float32")
    upstream = rng.standard_normal(x.shape).astype("float32")
    z = x.astype(np.float64)
    if approximate:
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (z + 0.044715 * z**3))
        value = 0.5 * z * (1 + t)
        slope = 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * c * (1 + 3 * 0.044715 * z**2)
    else:
        value = 0.5 * z * (1 + erf(z / np.sqrt(2)))
        slope = 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
    for graph in (False, True) if BACKEND == "tensorflow" else (False,):
        y, grad = _value_and_vjp(lambda v: gelu(v, approximate, training), x, upstream, graph)
        # atol: float32's 1 + tanh(u) (or 1 + erf) cancels for z << 0, a few 1e-6 off there.
        np.testing.assert_allclose(y, value, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad, upstream * slope, rtol=1e-5, atol=1e-5)


def test_layer_norm_matches_float64_and_keras(rng):
    # Tokens far from zero (mean 300, std 0.5), where a careless variance loses its digits.
    x = (300.0 + 0.5 * rng.standard_normal((3, 7, 16))).astype("float32")
    layer = LayerNorm(epsilon=1e-6)
    layer.build(x.shape)
    gamma = rng.standard_normal(16).astype("float32")
    beta = rng.standard_normal(16).astype("float32")
    layer.set_weights([gamma, beta])
    expected = numpy_layer_norm(x.astype("float64"), gamma, beta, eps=1e-6)
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=0, atol=1e-3)
    # On well-centred data it is Keras' LayerNormalization, with the same weights.
    z = rng.standard_normal((3, 7, 16)).astype("float32")
    reference = keras.layers.LayerNormalization(epsilon=1e-6)
    reference.build(z.shape)
    reference.set_weights([gamma, beta])
    np.testing.assert_allclose(numpy(layer(z)), numpy(reference(z)), rtol=1e-5, atol=1e-5)
    assert [w.path.split("/")[-1] for w in layer.weights] == ["gamma", "beta"]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's closed-form training gradient")
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_layer_norm_training_gradients_match_float64_differences(graph, rng):
    """`_tf_layer_norm_for_training`: the gradients for x, gamma and beta equal central
    differences of the float64 layer norm, and the values the inference path's."""
    import tensorflow as tf

    x = (rng.standard_normal((2, 3, 8)) * 3 + 1).astype("float32")
    upstream = rng.standard_normal((2, 3, 8)).astype("float32")
    layer = LayerNorm(epsilon=1e-6)
    layer.build(x.shape)
    layer.gamma.assign(rng.standard_normal(8).astype("float32"))
    layer.beta.assign(rng.standard_normal(8).astype("float32"))
    params = {"x": x.astype("float64"), "gamma": numpy(layer.gamma).astype("float64"),
              "beta": numpy(layer.beta).astype("float64")}

    expected = _central_differences(
        lambda p: (numpy_layer_norm(p["x"], p["gamma"], p["beta"], eps=1e-6) * upstream).sum(),
        params, step=1e-4)

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

    run = tf.function(run) if graph else run
    y, grads = run(tf.constant(x))
    np.testing.assert_allclose(numpy(y), numpy(layer(x, training=False)), rtol=1e-6, atol=1e-6)
    for name, grad in zip(("x", "gamma", "beta"), grads):
        np.testing.assert_allclose(numpy(grad), expected[name], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's closed-form training gradient")
def test_layer_norm_normalise_gradient_matches_float64_differences(rng):
    """`LayerNorm.normalise` in a train step: x^ = (x - mean) * rsqrt(var + eps) and its
    gradient against central differences of the float64 form (gamma 1, beta 0)."""
    import tensorflow as tf

    x = (rng.standard_normal((2, 3, 8)) * 3 + 1).astype("float32")
    upstream = rng.standard_normal((2, 3, 8)).astype("float32")
    layer = LayerNorm(epsilon=1e-6)
    layer.build(x.shape)
    ones, zeros = np.ones(8), np.zeros(8)
    expected = _central_differences(
        lambda p: (numpy_layer_norm(p["x"], ones, zeros, eps=1e-6) * upstream).sum(),
        {"x": x.astype("float64")}, step=1e-4)

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer.normalise(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, x)

    y, grad = run(tf.constant(x))
    np.testing.assert_allclose(numpy(y), numpy_layer_norm(x.astype("float64"), ones, zeros,
                                                          eps=1e-6), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy(grad), expected["x"], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the fold applies to TensorFlow train steps")
def test_block_with_layer_norms_folded_into_products_trains_the_same(rng, monkeypatch):
    """A train step of `TransformerBlock` in a TensorFlow graph, with its layer norms' gamma
    and beta folded into the q/k/v and first MLP products: the same outputs and gradients
    (x and every weight) as with the layer norms applied on their own."""
    import tensorflow as tf

    x = rng.standard_normal((2, 5, 16)).astype("float32")
    upstream = rng.standard_normal((2, 5, 16)).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=32)
    block.build(x.shape)
    for weight in block.weights:  # non-trivial gamma and beta, as after training
        weight.assign(rng.standard_normal(weight.shape).astype("float32") * 0.5)

    folds = []

    def step():
        @tf.function
        def run(x):
            folds.append(block.layer_norm_0.folds_into_next_product())
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = block(x, training=True)
                loss = tf.reduce_sum(y * upstream)
            return y, tape.gradient(loss, [x] + block.trainable_weights)

        return run(tf.constant(x))

    folded = step()
    with monkeypatch.context() as patch:
        patch.setattr(LayerNorm, "folds_into_next_product", lambda self: False)
        plain = step()
    assert folds == [True, False]  # traced once folded, once plain
    np.testing.assert_allclose(numpy(folded[0]), numpy(plain[0]), rtol=1e-5, atol=1e-5)
    names = ["x"] + [w.path for w in block.trainable_weights]
    for name, a, b in zip(names, folded[1], plain[1]):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-4, atol=1e-4, err_msg=name)
    # Inference: a graph folds, eager calls do not; the same values. Also with an int8 MLP,
    # whose quantized kernel takes gamma and beta on its input instead.
    eager = block(x, training=False)
    np.testing.assert_allclose(numpy(eager), numpy(plain[0]), rtol=1e-5, atol=1e-5)
    infer = tf.function(lambda x: block(x, training=False))
    np.testing.assert_allclose(numpy(infer(tf.constant(x))), numpy(eager), rtol=1e-5, atol=1e-5)
    block.mlp.dense_0.quantize("int8")
    infer = tf.function(lambda x: block(x, training=False))
    np.testing.assert_allclose(numpy(infer(tf.constant(x))), numpy(block(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_layer_norm_statistics_stay_float32_under_mixed_precision(rng):
    # A large mean (about 300) over a small spread (even steps of 2 up to +-8), every value
    # exact in bf16: with float32 statistics the output is the float64 layer norm rounded once
    # to bf16 (relative error <= 2**-8). bf16 statistics lose the mean (sums of 300s round to
    # 4-16): off by 0.35 with the statistics' float32 cast removed (TensorFlow and JAX; PyTorch's
    # native layer norm widens bf16 itself). The input is bf16, as inside a mixed model: Keras
    # does not autocast a layer norm's input, and float32 input gave float32 statistics anyway.
    x = (300 + 2 * rng.integers(-4, 5, (2, 5, 8))).astype("float32")
    layer = LayerNorm(epsilon=1e-6, dtype="mixed_bfloat16")
    y = layer(ops.cast(x, "bfloat16"))  # as the previous bf16 layer hands it over
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    expected = numpy_layer_norm(x.astype("float64"), 1.0, 0.0, eps=1e-6)
    assert np.abs(expected).max() > 1.0  # informative values, not a constant row
    np.testing.assert_allclose(numpy(ops.cast(y, "float32")), expected, rtol=1.02 * 2.0**-8, atol=1e-4)


def test_stochastic_depth_drops_whole_branches_only_in_training():
    block = TransformerBlock(num_heads=2, mlp_dim=16, stochastic_depth_rate=0.25)
    branch = ops.ones((4000, 3, 8))
    np.testing.assert_array_equal(numpy(block._drop_path(branch, training=False)), numpy(branch))
    kept = numpy(block._drop_path(branch, training=True))
    per_example = kept.reshape(4000, -1)
    # Whole branches: each example is all zeros or all 1 / keep (so the expectation is kept).
    assert set(np.unique(per_example.min(-1))) <= {0.0, np.float32(1 / 0.75)}
    np.testing.assert_array_equal(per_example.min(-1), per_example.max(-1))
    assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.03


def test_std_conv_standardises_its_kernel(rng):
    x = rng.standard_normal((1, 5, 5, 2)).astype("float32")
    conv = StdConv2D(3, 3, padding="same", use_bias=False)
    y = numpy(conv(x))
    kernel = numpy(conv.kernel).astype(np.float64)
    kernel = (kernel - kernel.mean((0, 1, 2))) / (kernel.std((0, 1, 2)) + 1e-5)
    reference = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)
    reference.build(x.shape)
    reference.kernel.assign(kernel.astype("float32"))
    np.testing.assert_allclose(y, numpy(reference(x)), rtol=1e-4, atol=1e-5)


def test_affine_and_dense_match_numpy_on_any_rank(rng):
    from keras_vit.layers.dense import affine

    x = rng.standard_normal((2, 3, 5)).astype("float32")
    w = rng.standard_normal((5, 4)).astype("float32")
    b = rng.standard_normal(4).astype("float32")
    expected = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(numpy(affine(x, w, b)), expected, rtol=1e-5, atol=1e-5)
    # Our Dense (bias fused into the product) against Keras' Dense with the same weights.
    ours, theirs = Dense(4, activation="gelu"), keras.layers.Dense(4, activation="gelu")
    ours.build(x.shape)
    theirs.build(x.shape)
    for layer in (ours, theirs):
        layer.kernel.assign(w)
        layer.bias.assign(b)
    np.testing.assert_allclose(numpy(ours(x)), numpy(theirs(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(numpy(ours(x[0])), numpy(theirs(x[0])), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's training-step gradient")
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("rank", [2, 3])
def test_affine_training_gradients_match_numpy(graph, rank, rng):
    """`_tf_affine_for_training` (input gradient through a transposed kernel copy): values
    and the gradients of sum(y * c) for x, kernel and bias are NumPy's."""
    import tensorflow as tf

    from keras_vit.layers.dense import affine

    shape = (2, 7, 6) if rank == 3 else (14, 6)
    x = rng.standard_normal(shape).astype("float32")
    w = rng.standard_normal((6, 10)).astype("float32")
    b = rng.standard_normal(10).astype("float32")
    c = rng.standard_normal((*shape[:-1], 10))

    def run(x, w, b):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            y = affine(x, w, b, training=True)
            loss = tf.reduce_sum(y * tf.constant(c, tf.float32))
        return y, tape.gradient(loss, [x, w, b])

    run = tf.function(run) if graph else run
    y, (d_x, d_w, d_b) = run(*(tf.constant(t) for t in (x, w, b)))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(numpy(y), x64 @ w64 + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy(d_x), c @ w64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy(d_w), x64.reshape(-1, 6).T @ c.reshape(-1, 10), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(numpy(d_b), c.reshape(-1, 10).sum(0), rtol=1e-5, atol=1e-5)


def test_dropout_acts_only_in_training(rng):
    x = rng.standard_normal((2, 50, 8)).astype("float32")
    mlp = MlpBlock(16, dropout_rate=0.5)
    no_dropout = MlpBlock(16)
    no_dropout.build(x.shape)
    mlp.build(x.shape)
    for a, b in zip(no_dropout.weights, mlp.weights):
        a.assign(b)
    inference = numpy(mlp(x, training=False))
    np.testing.assert_allclose(inference, numpy(no_dropout(x, training=True)), rtol=1e-6, atol=1e-6)
    trained = numpy(mlp(x, training=True))
    # Half the outputs are zeroed by the final dropout, the rest scaled; none left as they were.
    assert 0.3 < np.mean(trained == 0) < 0.7
    assert not np.allclose(trained, inference)


def test_token_pooling():
    x = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    np.testing.assert_array_equal(numpy(TokenPooling("token")(x)), x[:, 0])
    np.testing.assert_allclose(numpy(TokenPooling("avg")(x)), x.mean(1))
    np.testing.assert_array_equal(numpy(TokenPooling("max")(x)), x.max(1))


LAYERS = {
    "Patches": (lambda: Patches((2, 4)), (2, 8, 8, 3)),
    "PatchEncoder": (lambda: PatchEncoder(8, 2, grid_size=(2, 2), position_embedding="learned_2d"), (2, 4, 12)),
    "MultiHeadDotProductAttention": (lambda: MultiHeadDotProductAttention(2, relative_position=True), (2, 5, 8)),
    "MlpBlock": (lambda: MlpBlock(16, dropout_rate=0.1, gelu_approximate=False), (2, 5, 8)),
    "TransformerBlock": (lambda: TransformerBlock(2, 16, dropout_rate=0.1, relative_position=True), (2, 5, 8)),
    "ResidualUnit": (lambda: ResidualUnit(32, strides=2), (2, 8, 8, 64)),
    "StdConv2D": (lambda: StdConv2D(4, 3, padding="same"), (2, 6, 6, 3)),
    "TokenPooling": (lambda: TokenPooling("max"), (2, 5, 8)),
    "LayerNorm": (lambda: LayerNorm(epsilon=1e-6), (2, 5, 8)),
    "Dense": (lambda: Dense(3, activation="relu"), (2, 5, 8)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_config_and_keras_file_round_trip(name, tmp_path, rng):
    make, shape = LAYERS[name]
    layer = make()
    x = rng.standard_normal(shape).astype("float32")
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    # Inside a model, saved and loaded from .keras, with weights.
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, make()(inputs))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on: no Lambda layers
    assert type(loaded.layers[1]).__name__ == name
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), rtol=1e-5, atol=1e-6)
