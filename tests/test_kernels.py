"""Every implementation in `keras_vit.kernels` against the portable reference (`reference.py`):
values and gradients, float32 and bfloat16, eagerly and in the backend's compiled train step
(TensorFlow: graph without XLA, as large models train on CPUs, and XLA; JAX: jit; PyTorch's
train step is eager), and in inference (no gradient: PyTorch's in-place GELU, TensorFlow's
inference forms). Also the probes of private APIs and their public fallbacks, PyTorch's measured
product choice, and JAX's padded cuDNN attention math (checked on the CPU with XLA)."""

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from keras_vit import kernels
from keras_vit.kernels import reference

MODES = {"tensorflow": ("eager", "graph", "xla"), "jax": ("eager", "jit"),
         "torch": ("eager",)}[BACKEND] if BACKEND in ("tensorflow", "jax", "torch") else ("eager",)
# |implementation - reference| <= TOLERANCE * max |reference|, per dtype.
TOLERANCE = {"float32": 2e-5, "bfloat16": 4e-2}


def numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")), dtype=np.float64)


def tensor(x, dtype):
    return ops.convert_to_tensor(np.asarray(x, "float32"), dtype=dtype)


def value_and_gradients(fn, args, upstream, mode):
    """fn(*args) and the gradients of sum(fn(*args) * upstream) for each arg, in `mode`."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def run(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                y = fn(*args)
            return y, tape.gradient(y, list(args), output_gradients=upstream)

        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return run(*args)
    if BACKEND == "jax":
        import jax

        def run(*args):
            y, pullback = jax.vjp(fn, *args)
            return y, list(pullback(upstream))

        return (jax.jit(run) if mode == "jit" else run)(*args)
    import torch

    args = [a.detach().clone().requires_grad_(True) for a in args]
    y = fn(*args)
    y.backward(upstream)
    return y.detach(), [a.grad for a in args]


def value(fn, args, mode):
    """fn(*args) without gradients (inference), in `mode`."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return fn(*args) if mode == "eager" else tf.function(fn, jit_compile=mode == "xla")(*args)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)(*args) if mode == "jit" else fn(*args)
    import torch

    with torch.no_grad():
        return fn(*(a.clone() for a in args))  # fresh inputs: GELU may overwrite them


def relative_error(actual, expected):
    actual, expected = numpy(actual), numpy(expected)
    assert actual.shape == expected.shape
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-6)


def assert_close(actual, expected, dtype, what, truth=None):
    """float32: within `TOLERANCE` of the reference. bfloat16: within `TOLERANCE` of it, or no
    further from the float32 `truth` than three times the bfloat16 reference is (two
    bfloat16 forms of one function differ by their roundings)."""
    error = relative_error(actual, expected)
    if error <= TOLERANCE[dtype]:
        return
    assert truth is not None, f"{what}: relative error {error:.2e}"
    ours, theirs = relative_error(actual, truth), relative_error(expected, truth)
    assert ours <= max(3 * theirs, 1e-2), (
        f"{what}: {ours:.2e} from float32, the bfloat16 reference {theirs:.2e}")


def check(implementation, definition, arrays, dtype, mode, dtypes=None):
    """`implementation` against `definition` on `arrays` (cast to `dtype`, or per-array
    `dtypes`): inference values, and training values and gradients."""
    rng = np.random.default_rng(1)
    dtypes = dtypes or [dtype] * len(arrays)
    args = [tensor(a, d) for a, d in zip(arrays, dtypes)]
    args32 = [tensor(a, "float32") for a in arrays]
    expected_infer = definition(*args, False)
    truth_infer = definition(*args32, False)
    assert_close(value(lambda *a: implementation(*a, False), args, mode), expected_infer, dtype,
                 "inference value", truth_infer)
    upstream = np.asarray(rng.standard_normal(tuple(expected_infer.shape)), "float32")
    expected, expected_grads = value_and_gradients(lambda *a: definition(*a, True), args,
                                                   tensor(upstream, dtype), "eager")
    truth, truth_grads = value_and_gradients(lambda *a: definition(*a, True), args32,
                                             tensor(upstream, "float32"), "eager")
    y, grads = value_and_gradients(lambda *a: implementation(*a, True), args,
                                   tensor(upstream, dtype), mode)
    assert_close(y, expected, dtype, "training value", truth)
    for i, (g, e, t) in enumerate(zip(grads, expected_grads, truth_grads)):
        assert_close(g, e, dtype, f"gradient of argument {i}", t)


DTYPES = ["float32", "bfloat16"]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [2, 3])
def test_affine(rank, dtype, mode, rng):
    shape = (2, 37, 48) if rank == 3 else (74, 48)
    arrays = [rng.standard_normal(shape), rng.standard_normal((48, 40)) / 7,
              rng.standard_normal(40)]
    check(lambda x, w, b, t: kernels.affine(x, w, b, t),
          lambda x, w, b, t: reference.affine(x, w, b, t), arrays, dtype, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", [True, False], ids=["tanh", "erf"])
def test_gelu(approximate, dtype, mode, rng):
    arrays = [np.concatenate([np.linspace(-6, 6, 61), 3 * rng.standard_normal(67)]).reshape(2, 64)]
    check(lambda x, t: kernels.gelu(x, approximate, t),
          lambda x, t: reference.gelu(x, approximate, t), arrays, dtype, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine_part", ["gamma_and_beta", "none"])
def test_layer_norm(affine_part, dtype, mode, rng):
    x = rng.standard_normal((2, 5, 16)) * 3 + 1
    if affine_part == "none":
        check(lambda x, t: kernels.layer_norm(x, None, None, 1e-6, t),
              lambda x, t: reference.layer_norm(x, None, None, 1e-6, t), [x], dtype, mode)
        return
    # gamma and beta stay float32 under mixed precision (the layer's variables).
    check(lambda x, g, b, t: kernels.layer_norm(x, g, b, 1e-6, t),
          lambda x, g, b, t: reference.layer_norm(x, g, b, 1e-6, t),
          [x, rng.standard_normal(16), rng.standard_normal(16)], dtype, mode,
          dtypes=[dtype, "float32", "float32"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalise(dtype, mode, rng):
    x = rng.standard_normal((2, 5, 16)) * 3 + 1
    check(lambda x, t: kernels.normalise(x, 1e-6, t),
          lambda x, t: reference.normalise(x, 1e-6, t), [x], dtype, mode)


def _offset_bias(table):
    """A relative-position-like logit bias: queries (B, H, Q, D/H) against a (T, H, D/H)
    table of key embeddings, (B, H, Q, T)."""
    def bias(query):
        return ops.einsum("bhqk,thk->bhqt", query, ops.cast(table, query.dtype))
    return bias


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["plain", "one_query", "bias", "probabilities"])
@pytest.mark.parametrize("shape", [(2, 7, 2, 8), (2, 65, 2, 64)], ids=["tiny", "vit_heads"])
def test_attention(case, dtype, mode, rng, shape):
    # vit_heads: 64-wide heads and an odd token count, the shapes GPU kernels take (JAX's
    # cuDNN attention pads 65 to a length it accepts); tiny ones go to the fallbacks. A CPU
    # takes the same path at both sizes: there the large shape runs in two cases, compiled.
    if shape[1] > 7 and kernels.device() == "cpu" and (case in ("bias", "probabilities")
                                                     or mode != MODES[-1]):
        pytest.skip("the GPU kernels' shapes: all cases run on GPUs (benchmarks/gpu)")
    b, t, h, dh = shape
    qkv = rng.standard_normal((b, t, 3, h, dh))
    num_queries = 1 if case == "one_query" else None
    table = rng.standard_normal((t, h, dh)).astype("float32") * 0.3
    bias = _offset_bias(table) if case == "bias" else None
    probabilities = case == "probabilities"

    def run(attention):
        return lambda q, training: attention(q, num_queries, bias, probabilities, None,
                                             training)[0]

    check(run(kernels.attention), run(reference.attention), [qkv], dtype, mode)
    if probabilities:
        args = [tensor(qkv, dtype)]
        ours = value(lambda q: kernels.attention(q, return_probabilities=True)[1], args, mode)
        assert_close(ours, reference.attention(args[0], return_probabilities=True)[1], dtype,
                     "probabilities")


def test_attention_applies_dropout_to_the_probabilities(rng):
    """`dropout` acts on the probabilities before the values (attention dropout)."""
    qkv = tensor(rng.standard_normal((1, 5, 3, 2, 4)), "float32")
    out, probs = kernels.attention(qkv, return_probabilities=True, dropout=lambda p: p * 0.0,
                                   training=True)
    assert np.abs(numpy(out)).max() == 0.0
    np.testing.assert_allclose(numpy(probs).sum(-1), 1.0, atol=1e-5)


def test_describe_names_every_primitive():
    described = kernels.describe()
    assert described["backend"] == BACKEND
    for name in ("affine", "gelu", "layer_norm", "normalise", "attention",
                 "layer_norm_folds_into_next_product"):
        assert isinstance(described[name], str) and described[name], name


def test_dispatch_takes_this_backends_module():
    assert kernels.implementation.__name__ == (
        f"keras_vit.kernels.{BACKEND}" if BACKEND in ("tensorflow", "jax", "torch")
        else "keras_vit.kernels.reference")


# --------------------------------------------------------------------------- PyTorch products


torch_only = pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's choice of product kernel")


@torch_only
@pytest.mark.parametrize("choice", ["onednn", "addmm"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["training", "inference"])
def test_affine_on_either_torch_kernel(choice, dtype, mode, rng, monkeypatch):
    """Both product kernels, whatever this machine measured: values and gradients against
    the reference (oneDNN only for the dtypes it builds here)."""
    import torch

    from keras_vit.kernels import torch as torch_kernels

    if choice == "onednn" and not torch_kernels._onednn_linear_takes(getattr(torch, dtype)):
        pytest.skip(f"oneDNN's linear kernel takes no {dtype} on this CPU/PyTorch")
    monkeypatch.setattr(torch_kernels, "product_choice", lambda rows, kernel: choice)
    arrays = [rng.standard_normal((2, 197, 64)), rng.standard_normal((64, 96)) / 8,
              rng.standard_normal(96)]
    if mode == "inference":
        args = [tensor(a, dtype) for a in arrays]
        with torch.no_grad():
            assert_close(kernels.affine(*args), reference.affine(*args), dtype, choice)
        return
    check(lambda x, w, b, t: kernels.affine(x, w, b, t),
          lambda x, w, b, t: reference.affine(x, w, b, t), arrays, dtype, "eager")


@torch_only
def test_torch_product_choice_is_measured_once_per_shape_and_skips_tiny_products(monkeypatch):
    import torch

    from keras_vit.kernels import torch as torch_kernels

    monkeypatch.setattr(torch_kernels, "PRODUCT_CHOICES", {})
    calls = []

    def measure(*key):
        calls.append(key)
        return "addmm"

    monkeypatch.setattr(torch_kernels, "_measure_product", measure)
    monkeypatch.setattr(torch_kernels, "_onednn_linear_takes", lambda dtype: True)
    if torch_kernels._onednn_linear() is None:
        monkeypatch.setattr(torch_kernels, "_onednn_linear", lambda: object())
    tiny = torch.ones(4, 8)
    assert torch_kernels.product_choice(tiny, torch.ones(8, 8)) == "addmm"
    assert calls == []  # too small to time
    rows, kernel = torch.ones(512, 256), torch.ones(256, 256)
    for _ in range(3):
        assert torch_kernels.product_choice(rows, kernel) == "addmm"
    assert calls == [(512, 256, 256, torch.float32, False)]  # once, then cached
    assert "512x256->256 float32: addmm" in kernels.describe()["affine"]
    assert torch_kernels.product_choice(rows.half(), kernel.half()) == "addmm"  # no fp16 kernel


@torch_only
def test_torch_product_choice_falls_back_to_addmm(monkeypatch, rng):
    """A PyTorch without the private op, or whose op fails, takes the public `addmm`: the
    same values."""
    import torch

    from keras_vit.kernels import torch as torch_kernels

    monkeypatch.setattr(torch_kernels, "PRODUCT_CHOICES", {})
    monkeypatch.setattr(torch_kernels, "_onednn_linear", lambda: None)
    rows, kernel = torch.randn(512, 256), torch.randn(256, 256)
    assert torch_kernels.product_choice(rows, kernel) == "addmm"
    assert torch_kernels._onednn_linear_takes.__wrapped__(torch.float32) is False

    def broken(*args):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(torch_kernels, "_onednn_linear", lambda: broken)
    assert torch_kernels._onednn_linear_takes.__wrapped__(torch.float32) is False
    assert torch_kernels._measure_product(512, 256, 256, torch.float32, True) == "addmm"


@torch_only
def test_torch_measurement_returns_a_kernel_for_a_real_shape():
    import torch

    from keras_vit.kernels import torch as torch_kernels

    if not torch_kernels._onednn_linear_takes(torch.float32):
        pytest.skip("no oneDNN linear kernel here")
    for grad in (False, True):
        assert torch_kernels._measure_product(1576, 192, 576, torch.float32, grad,
                                              repeats=2) in ("onednn", "addmm")


# --------------------------------------------------------------------------- TensorFlow probes


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's XLA-context probe")
@pytest.mark.parametrize("probe", ["private", "missing"])
def test_tensorflow_without_the_private_xla_probe_computes_the_same(probe, rng, monkeypatch):
    """Without `control_flow_util` every graph counts as XLA (the portable forms): the same
    attention, affine and layer norm values and gradients in a graph."""
    import tensorflow as tf

    from keras_vit.kernels import tensorflow as tf_kernels

    if probe == "missing":
        monkeypatch.setattr(tf_kernels, "_xla_context_probe", lambda: None)
    else:
        assert tf_kernels._xla_context_probe() is not None  # this TensorFlow has it
    in_xla = tf.function(lambda: tf.constant(tf_kernels.in_xla_graph()))()
    assert bool(in_xla) == (probe == "missing")
    assert tf_kernels.in_xla_graph() is False  # eagerly
    qkv = rng.standard_normal((2, 7, 3, 2, 8))
    check(lambda q, t: kernels.attention(q, training=t)[0],
          lambda q, t: reference.attention(q, training=t)[0], [qkv], "float32", "graph")
    check(lambda x, g, b, t: kernels.layer_norm(x, g, b, 1e-6, t),
          lambda x, g, b, t: reference.layer_norm(x, g, b, 1e-6, t),
          [rng.standard_normal((3, 16)), rng.standard_normal(16), rng.standard_normal(16)],
          "float32", "graph")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's fold decision")
def test_tensorflow_folds_layer_norms_only_in_graphs_without_xla():
    import tensorflow as tf

    fold = kernels.layer_norm_folds_into_next_product
    assert fold() is False
    assert bool(tf.function(lambda: tf.constant(fold()))())
    assert not bool(tf.function(lambda: tf.constant(fold()), jit_compile=True)())


# --------------------------------------------------------------------------- JAX's cuDNN padding


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's padded cuDNN attention")
@pytest.mark.parametrize("multiple", [2, 64])
@pytest.mark.parametrize("case", ["plain", "one_query", "bias"])
def test_jax_padded_attention_is_the_unpadded_function(multiple, case, rng):
    """The padding that lets cuDNN take T = 197 (zeros, masked through the sequence lengths,
    padded query rows cut off), computed here by XLA's implementation on the CPU: values and
    gradients of the reference, at ViT's odd token counts."""
    import jax
    import jax.numpy as jnp

    from keras_vit.kernels.jax import padded_attention

    b, t, h, dh = 2, 13, 2, 8
    q_len = 1 if case == "one_query" else t
    qkv = jnp.asarray(rng.standard_normal((b, t, 3, h, dh)), jnp.float32)
    table = jnp.asarray(rng.standard_normal((t, h, dh)) * 0.3, jnp.float32)
    bias_fn = _offset_bias(table) if case == "bias" else None
    upstream = jnp.asarray(rng.standard_normal((b, q_len, h, dh)), jnp.float32)

    def padded(qkv):
        query, key, value = (qkv[:, :, i] for i in range(3))
        query = query[:, :q_len]
        bias = None if bias_fn is None else bias_fn(jnp.swapaxes(query, 1, 2))
        return padded_attention(query, key, value, bias, multiple, implementation="xla")

    def plain(qkv):
        return reference.attention(qkv, q_len, bias_fn)[0]

    for fn in (padded, jax.jit(padded)):
        y, pullback = jax.vjp(fn, qkv)
        y_ref, pullback_ref = jax.vjp(plain, qkv)
        np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(pullback(upstream)[0]),
                                   np.asarray(pullback_ref(upstream)[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's cuDNN fallback")
def test_jax_cudnn_attention_falls_back_to_xla_where_refused(rng, monkeypatch):
    """Where cuDNN refuses every padding (here: a CPU, which has no cuDNN), XLA's attention
    computes the same function, and the choice is remembered per shape."""
    import jax.numpy as jnp

    from keras_vit.kernels import jax as jax_kernels

    monkeypatch.setattr(jax_kernels, "CUDNN_CHOICES", {})
    qkv = jnp.asarray(rng.standard_normal((2, 9, 3, 2, 8)), jnp.float32)
    query, key, value = (qkv[:, :, i] for i in range(3))
    out = jax_kernels.cudnn_attention(query, key, value, None, training=True)
    expected = reference.attention(qkv)[0]
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert list(jax_kernels.CUDNN_CHOICES.values()) == ["xla"]


# ------------------------------------------------------------ against float64 NumPy (issue 34)
# The tests above compare each backend's implementation with the portable reference. Where a
# backend runs the reference itself (JAX's affine, gelu, layer_norm and normalise; PyTorch's
# normalise) they would compare the reference with itself: they are guards, and skip until that
# backend gets an implementation of its own. What checks every implementation, reference
# included, is below: float32 values and gradients against the primitives written in float64
# NumPy from their definitions, the gradients by central differences.

SELF_COMPARING = {"test_affine": "affine", "test_gelu": "gelu", "test_layer_norm": "layer_norm",
                  "test_normalise": "normalise"}


@pytest.fixture(autouse=True)
def _skip_self_comparisons(request):
    name = SELF_COMPARING.get(request.node.originalname)
    if name and getattr(kernels.implementation, name) is getattr(reference, name):
        pytest.skip(f"{BACKEND} runs reference.{name} itself: a guard for when it gets its "
                    "own implementation (the float64 NumPy tests check it)")


def np_gelu(x, approximate):
    from scipy.special import erf

    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_normalise(x, epsilon):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + epsilon)


def np_attention(qkv, num_queries=None, table=None, mask=None):
    """(attended (B, Q, H, D/H), probabilities (B, H, Q, T)) of the packed (B, T, 3, H, D/H)."""
    query, key, value = np.moveaxis(qkv, 2, 0).transpose(0, 1, 3, 2, 4)  # 3 x (B, H, T, D/H)
    query = query[:, :, :num_queries]
    logits = query @ np.swapaxes(key, -1, -2)
    if table is not None:
        logits = logits + np.einsum("bhqk,thk->bhqt", query, table)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    weights = probs if mask is None else probs * mask
    return (weights @ value).transpose(0, 2, 1, 3), probs


def numerical_gradients(fn, arrays, upstream, step=1e-6):
    """d sum(fn(*arrays) * upstream) / d array, for each array, by central differences."""
    grads = []
    for i, array in enumerate(arrays):
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            shifted = [a.copy() for a in arrays]
            shifted[i][index] += step
            plus = np.sum(fn(*shifted) * upstream)
            shifted[i][index] -= 2 * step
            grad[index] = (plus - np.sum(fn(*shifted) * upstream)) / (2 * step)
        grads.append(grad)
    return grads


def check_against_numpy(implementation, numpy_form, arrays, mode, tolerance=1e-5):
    """float32 `implementation(*tensors, training)` in `mode` against float64 `numpy_form`:
    inference and training values, and every argument's gradient."""
    arrays = [np.asarray(a, np.float64) for a in arrays]
    args = [tensor(a, "float32") for a in arrays]
    expected = numpy_form(*arrays)
    scale = np.abs(expected).max()
    inferred = numpy(value(lambda *a: implementation(*a, False), args, mode))
    assert np.abs(inferred - expected).max() <= tolerance * scale, "inference value"
    upstream = np.random.default_rng(2).standard_normal(expected.shape)
    y, grads = value_and_gradients(lambda *a: implementation(*a, True), args,
                                   tensor(upstream, "float32"), mode)
    assert np.abs(numpy(y) - expected).max() <= tolerance * scale, "training value"
    for i, (got, want) in enumerate(zip(grads, numerical_gradients(numpy_form, arrays,
                                                                   upstream))):
        error = np.abs(numpy(got) - want).max() / np.abs(want).max()
        assert error <= 10 * tolerance, f"gradient of argument {i}: relative error {error:.2e}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rank", [2, 3])
def test_affine_against_numpy(rank, mode, rng):
    shape = (2, 5, 12) if rank == 3 else (10, 12)
    check_against_numpy(kernels.affine, lambda x, w, b: x @ w + b,
                        [rng.standard_normal(shape), rng.standard_normal((12, 8)) / 3,
                         rng.standard_normal(8)], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("approximate", [True, False], ids=["tanh", "erf"])
def test_gelu_against_numpy(approximate, mode, rng):
    x = np.concatenate([np.linspace(-6, 6, 25), 3 * rng.standard_normal(23)]).reshape(2, 24)
    check_against_numpy(lambda x, t: kernels.gelu(x, approximate, t),
                        lambda x: np_gelu(x, approximate), [x], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("affine_part", ["gamma_and_beta", "none"])
def test_layer_norm_against_numpy(affine_part, mode, rng):
    x = rng.standard_normal((2, 3, 16)) * 3 + 1
    if affine_part == "none":
        check_against_numpy(lambda x, t: kernels.layer_norm(x, None, None, 1e-6, t),
                            lambda x: np_normalise(x, 1e-6), [x], mode)
        return
    check_against_numpy(lambda x, g, b, t: kernels.layer_norm(x, g, b, 1e-6, t),
                        lambda x, g, b: np_normalise(x, 1e-6) * g + b,
                        [x, rng.standard_normal(16), rng.standard_normal(16)], mode)


@pytest.mark.parametrize("mode", MODES)
def test_normalise_against_numpy(mode, rng):
    check_against_numpy(lambda x, t: kernels.normalise(x, 1e-6, t),
                        lambda x: np_normalise(x, 1e-6),
                        [rng.standard_normal((2, 3, 16)) * 3 + 1], mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["plain", "one_query", "bias", "probabilities"])
def test_attention_against_numpy(case, mode, rng):
    qkv = rng.standard_normal((2, 5, 3, 2, 4))
    num_queries = 1 if case == "one_query" else None
    table = rng.standard_normal((5, 2, 4)) * 0.3 if case == "bias" else None
    output = 1 if case == "probabilities" else 0

    def ours(q, training):
        bias = _offset_bias(tensor(table, "float32")) if table is not None else None
        return kernels.attention(q, num_queries, bias, output == 1, None, training)[output]

    check_against_numpy(ours, lambda q: np_attention(q, num_queries, table)[output], [qkv],
                        mode)


def test_attention_dropout_drops_one_key_before_the_values(rng):
    """`dropout` weighs the probabilities before the values: a mask dropping key 2 gives, per
    query, the sum over the other keys of p_k v_k (no renormalisation: the mask is the whole
    dropout here)."""
    qkv = rng.standard_normal((2, 5, 3, 2, 4))
    mask = np.ones(5)
    mask[2] = 0.0
    expected, probabilities = np_attention(qkv, mask=mask)
    out, probs = kernels.attention(tensor(qkv, "float32"), return_probabilities=True,
                                   dropout=lambda p: p * ops.cast(mask, p.dtype), training=True)
    np.testing.assert_allclose(numpy(out), expected, atol=1e-5)
    np.testing.assert_allclose(numpy(probs), probabilities, atol=1e-6)  # before the dropout
    kept = np_attention(qkv)[0]
    assert np.abs(kept - expected).max() > 0.05  # the dropped key mattered
