"""The GPU branches of `keras_vit.kernels`, run on the CPU by forcing each backend's one device
seam (JAX `_platform`, TensorFlow `_on_gpu`, PyTorch `_on_cuda`): which kernel each branch
asks for, with which padded shapes and masks, its fallbacks, and that the values and gradients
of what it computes equal the reference.

The fast kernels themselves need a GPU (the prepared GPU call of benchmarks/gpu/ checks them);
here the calls they would get run on the CPU where they can: JAX's cuDNN attention is a stand-in
for `jax.nn.dot_product_attention` that refuses the lengths cuDNN refuses (raising at trace time,
as cuDNN does) and computes the lengths it accepts with XLA's implementation from the very same
arguments (padding, sequence lengths, bias); TensorFlow's and Keras' fused attention and
PyTorch's SDPA run their CPU kernels on the operands the GPU would get.
"""

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from keras_vit import kernels
from keras_vit.kernels import reference

B, T, H, DH = 2, 13, 2, 8
# max |ours - float32 reference| / max |reference|
TOLERANCE = {"float32": 2e-5, "bfloat16": 3e-2}
CASES = ["plain", "one_query", "bias"]

jax_only = pytest.mark.skipif(BACKEND != "jax", reason="JAX's attention dispatch")
tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's dispatch")
torch_only = pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's dispatch")


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")), np.float64)


def _assert_close(actual, expected, dtype, what):
    actual, expected = _numpy(actual), _numpy(expected)
    assert actual.shape == expected.shape, what
    error = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-6)
    assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.2e} ({dtype})"


def _problem(case, rng):
    """(qkv (B, T, 3, H, D/H), num_queries, logit bias function or None) for a case."""
    qkv = rng.standard_normal((B, T, 3, H, DH)).astype("float32")
    table = (rng.standard_normal((T, H, DH)) * 0.3).astype("float32")

    def bias(query):  # a relative-position-like bias from the queries: (B, H, Q, T)
        return ops.einsum("bhqk,thk->bhqt", query, ops.cast(table, query.dtype))

    return qkv, (1 if case == "one_query" else None), (bias if case == "bias" else None)


def _grads(fn, qkv, upstream, compiled=True):
    """fn(qkv) and d sum(fn(qkv) * upstream) / d qkv; `compiled` as the backend compiles
    train steps (jax.jit; TensorFlow: XLA, as `VisionTransformer` trains on GPUs)."""
    if BACKEND == "jax":
        import jax

        def run(q):
            y, pullback = jax.vjp(fn, q)
            return y, pullback(upstream.astype(y.dtype))[0]

        return (jax.jit(run) if compiled else run)(qkv)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def run(q):
            with tf.GradientTape() as tape:
                tape.watch(q)
                y = fn(q)
            return y, tape.gradient(y, q, output_gradients=tf.cast(upstream, y.dtype))

        return (tf.function(run, jit_compile=True) if compiled else run)(qkv)
    import torch

    q = qkv.detach().clone().requires_grad_(True)
    y = fn(q)
    y.backward(torch.as_tensor(upstream).to(y.dtype))
    return y.detach(), q.grad


def _check_against_reference(case, dtype, rng, training=True):
    """kernels.attention against the float32 reference: values and gradients."""
    qkv, num_queries, bias = _problem(case, rng)
    ours = lambda q: kernels.attention(q, num_queries, bias, training=training)[0]  # noqa: E731
    truth = lambda q: reference.attention(q, num_queries, bias)[0]  # noqa: E731
    upstream = rng.standard_normal((B, num_queries or T, H, DH)).astype("float32")
    y, grad = _grads(ours, ops.convert_to_tensor(qkv, dtype), upstream)
    y_ref, grad_ref = _grads(truth, ops.convert_to_tensor(qkv, "float32"), upstream,
                             compiled=False)
    _assert_close(y, y_ref, dtype, "value")
    _assert_close(grad, grad_ref, dtype, "gradient")


# --------------------------------------------------------------------------- JAX


class FakeCudnnAttention:
    """`jax.nn.dot_product_attention` as on a GPU whose cuDNN takes only query and key lengths
    that are multiples of `accepts` (None: no length): it raises for the others, as cuDNN does
    at trace time, and computes the accepted calls with XLA's implementation from the same
    arguments. Every call is recorded."""

    def __init__(self, original, accepts):
        self.original, self.accepts, self.calls = original, accepts, []

    def __call__(self, query, key, value, bias=None, mask=None, *, implementation=None,
                 query_seq_lengths=None, key_value_seq_lengths=None, **kwargs):
        self.calls.append(dict(
            implementation=implementation, q_len=query.shape[1], t_len=key.shape[1],
            bias=None if bias is None else tuple(bias.shape),
            lengths=None if query_seq_lengths is None else
            (tuple(query_seq_lengths.shape), tuple(key_value_seq_lengths.shape))))
        if implementation == "cudnn":
            if self.accepts is None or query.shape[1] % self.accepts or key.shape[1] % self.accepts:
                raise RuntimeError(f"Unsupported sequence length Q {query.shape[1]}, "
                                   f"KV {key.shape[1]}")
            implementation = "xla"
        return self.original(query, key, value, bias, mask, implementation=implementation,
                             query_seq_lengths=query_seq_lengths,
                             key_value_seq_lengths=key_value_seq_lengths, **kwargs)


@pytest.fixture
def jax_gpu(monkeypatch):
    """A function that forces JAX's kernels to "gpu" with a `FakeCudnnAttention` that accepts
    multiples of its argument, and returns the fake."""
    import jax

    from keras_vit.kernels import jax as jax_kernels

    monkeypatch.setattr(jax_kernels, "CUDNN_CHOICES", {})
    original = jax.nn.dot_product_attention

    def install(accepts):
        monkeypatch.setattr(jax_kernels, "_platform", lambda: "gpu")
        fake = FakeCudnnAttention(original, accepts)
        monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
        return fake

    return install


def _trace(case, dtype, rng):
    """Traces kernels.attention (training) without compiling it: the calls are made at trace
    time."""
    import jax

    qkv, num_queries, bias = _problem(case, rng)
    jax.eval_shape(lambda q: kernels.attention(q, num_queries, bias, training=True)[0],
                   ops.convert_to_tensor(qkv, dtype))


def _padded(n, multiple):
    return -(-n // multiple) * multiple


@jax_only
@pytest.mark.parametrize("case, accepts", [("plain", 64), ("one_query", 2), ("bias", 2),
                                           ("bias", None)])
def test_jax_bf16_attention_asks_cudnn_for_padded_lengths(case, accepts, jax_gpu, rng):
    """bfloat16 on a GPU: cuDNN, tried at the length itself, then padded to even lengths, then
    to multiples of 64; each refusal falls through to the next, every refusal to XLA. The
    padded call carries zero-padded operands, the padded bias and the true lengths; the
    padded rows are cut off: values and gradients of the reference."""
    from keras_vit.kernels import jax as jax_kernels

    fake = jax_gpu(accepts)
    _check_against_reference(case, "bfloat16", rng)
    q_len = 1 if case == "one_query" else T
    tried = [(m, _padded(q_len, m), _padded(T, m)) for m in jax_kernels.CUDNN_PADDINGS]
    accepted = next((t for t in tried if accepts and t[0] % accepts == 0 and t[0] >= accepts),
                    None)
    expected = [dict(implementation="cudnn", q_len=q, t_len=t,
                     bias=(B, H, q, t) if case == "bias" else None,
                     lengths=None if (q, t) == (q_len, T) else ((B,), (B,)))
                for m, q, t in tried[:tried.index(accepted) + 1 if accepted else None]]
    if accepted is None:  # XLA, unpadded
        expected.append(dict(implementation="xla", q_len=q_len, t_len=T,
                             bias=(B, H, q_len, T) if case == "bias" else None, lengths=None))
    assert fake.calls == expected
    assert list(jax_kernels.CUDNN_CHOICES.values()) == [accepted[0] if accepted else "xla"]
    key = next(iter(jax_kernels.CUDNN_CHOICES))
    assert key[1:3] == (T, q_len) and key[6] == (case == "bias") and key[7] is True

    # The next trace of this shape asks for the remembered choice first: one call.
    fake.calls.clear()
    _trace(case, "bfloat16", rng)
    assert [c["implementation"] for c in fake.calls] == ["cudnn" if accepted else "xla"]
    assert fake.calls[0]["q_len"] == (accepted[1] if accepted else q_len)
    shown = kernels.describe()["attention"]
    assert (f"padded to a multiple of {accepted[0]}" if accepted else ": xla") in shown


@jax_only
def test_jax_remembered_padding_refused_later_tries_every_padding_again(jax_gpu, rng):
    """A choice remembered from a trace without gradients may be refused with them: every
    candidate again, and the new choice is remembered."""
    from keras_vit.kernels import jax as jax_kernels

    fake = jax_gpu(64)
    key = (B, T, T, H, DH, "bfloat16", False, True)
    jax_kernels.CUDNN_CHOICES[key] = 2
    _trace("plain", "bfloat16", rng)
    assert [(c["implementation"], c["q_len"]) for c in fake.calls] == [
        ("cudnn", 14), ("cudnn", 13), ("cudnn", 14), ("cudnn", 64)]
    assert jax_kernels.CUDNN_CHOICES == {key: 64}


@jax_only
@pytest.mark.parametrize("platform, dtype", [("gpu", "float32"), ("tpu", "bfloat16")])
def test_jax_float32_on_gpu_and_tpu_take_xla_attention(platform, dtype, jax_gpu, monkeypatch,
                                                        rng):
    """float32 on a GPU (cuDNN's fused kernel takes half precision only) and any dtype on a TPU:
    `keras.ops.dot_product_attention`, unpadded, no cuDNN request of ours."""
    from keras_vit.kernels import jax as jax_kernels

    fake = jax_gpu(1)
    monkeypatch.setattr(jax_kernels, "_platform", lambda: platform)
    _check_against_reference("bias", dtype, rng)
    assert [(c["implementation"], c["q_len"], c["lengths"]) for c in fake.calls] == [
        ("xla", T, None)]
    assert jax_kernels.CUDNN_CHOICES == {}


@jax_only
def test_jax_gpu_probabilities_and_dropout_take_the_reference_form(jax_gpu, rng):
    fake = jax_gpu(1)
    qkv, _, _ = _problem("plain", rng)
    qkv = ops.convert_to_tensor(qkv, "bfloat16")
    out, probs = kernels.attention(qkv, return_probabilities=True)
    expected, expected_probs = reference.attention(qkv, return_probabilities=True)
    np.testing.assert_array_equal(_numpy(out), _numpy(expected))
    np.testing.assert_array_equal(_numpy(probs), _numpy(expected_probs))
    kernels.attention(qkv, dropout=lambda p: p, training=True)
    assert fake.calls == []


@jax_only
def test_jax_encoder_blocks_on_a_gpu_pad_every_attention(jax_gpu, rng):
    """A bfloat16 encoder block as a ViT's last two (training forward pass, traced): on 17
    tokens, then as the class-row last block (Q = 1); cuDNN refuses both unpadded. Each
    attention asks cuDNN for 64-padded lengths, and the choice is remembered per shape."""
    import jax

    from keras_vit.kernels import jax as jax_kernels
    from keras_vit.layers.transformer_block import TransformerBlock

    block = TransformerBlock(num_heads=2, mlp_dim=32, dtype="mixed_bfloat16")
    block.build((2, 17, 16))  # one block twice: the traces are what count here
    fake = jax_gpu(64)
    tokens = rng.standard_normal((2, 17, 16)).astype("float32")
    out = jax.eval_shape(
        lambda x: block(block(x, training=True), training=True, num_queries=1), tokens)
    assert out.shape == (2, 1, 16) and out.dtype == "bfloat16"
    assert [(c["implementation"], c["q_len"], c["t_len"]) for c in fake.calls] == [
        ("cudnn", 17, 17), ("cudnn", 18, 18), ("cudnn", 64, 64),  # the full block
        ("cudnn", 1, 17), ("cudnn", 2, 18), ("cudnn", 64, 64)]  # the class row only
    assert sorted((k[1], k[2], v) for k, v in jax_kernels.CUDNN_CHOICES.items()) == [
        (17, 1, 64), (17, 17, 64)]


# --------------------------------------------------------------------------- TensorFlow


@pytest.fixture
def tf_gpu(monkeypatch):
    """TensorFlow's kernels forced to "gpu"; yields the recorded calls of the fused attention."""
    from keras_vit.kernels import tensorflow as tf_kernels

    monkeypatch.setattr(tf_kernels, "_on_gpu", lambda: True)
    calls, original = [], ops.dot_product_attention

    def fused(query, key, value, bias=None, **kwargs):
        calls.append(dict(query=tuple(query.shape), key=tuple(key.shape),
                          bias=None if bias is None else tuple(bias.shape), **kwargs))
        return original(query, key, value, bias=bias, **kwargs)

    monkeypatch.setattr(tf_kernels.ops, "dot_product_attention", fused)
    return calls


@tensorflow_only
@pytest.mark.parametrize("case, dtype", [("plain", "float32"), ("one_query", "bfloat16"),
                                         ("bias", "bfloat16")])
def test_tensorflow_gpu_attention_is_the_fused_kernel(case, dtype, tf_gpu, rng):
    """On a GPU: Keras' fused `dot_product_attention` on (B, T, H, D/H) views, the queries cut
    to Q, the bias (B, H, Q, T), scale 1 (the queries come scaled); under XLA, as GPU train
    steps compile: values and gradients of the reference."""
    _check_against_reference(case, dtype, rng)
    q_len = 1 if case == "one_query" else T
    assert tf_gpu == [dict(query=(B, q_len, H, DH), key=(B, T, H, DH),
                           bias=(B, H, q_len, T) if case == "bias" else None, scale=1.0)]


@tensorflow_only
def test_tensorflow_gpu_probabilities_take_the_explicit_form(tf_gpu, rng):
    qkv = ops.convert_to_tensor(_problem("plain", rng)[0])
    out, probs = kernels.attention(qkv, return_probabilities=True)
    np.testing.assert_allclose(_numpy(out), _numpy(reference.attention(qkv)[0]), atol=1e-6)
    assert probs is not None and tf_gpu == []


@tensorflow_only
def test_tensorflow_gpu_compiles_every_step_with_xla(tf_gpu, monkeypatch):
    """`jit_compile="auto"` skips XLA for large models on CPUs only: forced to a GPU, a model
    past the CPU threshold compiles."""
    from keras_vit import ViT
    from keras_vit.kernels import tensorflow as tf_kernels
    from keras_vit.model import VisionTransformer

    monkeypatch.setattr(VisionTransformer, "CPU_WITHOUT_XLA_MACS", 0)
    model = ViT(image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2,
                mlp_dim=32, classes=3)
    assert model._resolve_auto_jit_compile() is True
    assert kernels.device() == "gpu" and "GPU" in kernels.describe()["attention"]
    monkeypatch.setattr(tf_kernels, "_on_gpu", lambda: False)
    assert model._resolve_auto_jit_compile() is False and kernels.device() == "cpu"


# --------------------------------------------------------------------------- PyTorch


@pytest.fixture
def sdpa_calls(monkeypatch):
    """The recorded calls of `scaled_dot_product_attention` (it still runs)."""
    import torch.nn.functional as F

    calls, original = [], F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, **kwargs):
        calls.append(dict(query=query, key=key, value=value, attn_mask=attn_mask, **kwargs))
        return original(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    return calls


@torch_only
@pytest.mark.parametrize("case", CASES)
def test_torch_bf16_attention_is_sdpa_on_strided_views(case, sdpa_calls, monkeypatch, rng):
    """bfloat16 attention: one SDPA call on (B, H, Q, D/H) views of the packed product, bf16
    operands with unit stride along the head dimension (what CUDA's flash and memory-efficient
    kernels read), no mask but the bias (flash's case), scale 1: values and gradients of the
    reference."""
    import torch

    from keras_vit.kernels import torch as torch_kernels

    monkeypatch.setattr(torch_kernels, "_on_cuda", lambda: True)
    _check_against_reference(case, "bfloat16", rng)
    q_len = 1 if case == "one_query" else T
    [call] = sdpa_calls
    q, k, v, mask = call["query"], call["key"], call["value"], call["attn_mask"]
    assert [tuple(t.shape) for t in (q, k, v)] == [(B, H, q_len, DH), (B, H, T, DH),
                                                   (B, H, T, DH)]
    assert {t.dtype for t in (q, k, v)} == {torch.bfloat16}
    assert [t.stride(-1) for t in (q, k, v)] == [1, 1, 1]
    # views of the packed product, no copies: k starts H * D/H elements after q
    assert k.data_ptr() - q.data_ptr() == H * DH * q.element_size()
    assert call["scale"] == 1.0 and not call.get("is_causal", False)
    if case == "bias":
        assert tuple(mask.shape) == (B, H, q_len, T) and mask.dtype == torch.bfloat16
    else:
        assert mask is None
    assert kernels.device() == "gpu" and "CUDA" in kernels.describe()["attention"]


@torch_only
def test_torch_products_off_the_cpu_take_addmm_unmeasured(monkeypatch):
    """Products on another device than the CPU (here PyTorch's meta device, as CUDA would be)
    take `addmm` at once: nothing measured, nothing remembered."""
    import keras
    import torch

    from keras_vit.kernels import torch as torch_kernels

    def measure(*args):
        raise AssertionError("measured a product off the CPU")

    monkeypatch.setattr(torch_kernels, "_measure_on_own_thread", measure)
    monkeypatch.setattr(torch_kernels, "PRODUCT_CHOICES", {})
    rows = torch.empty(4096, 768, device="meta")
    kernel = torch.empty(768, 3072, device="meta")
    assert torch_kernels.product_choice(rows, kernel) == "addmm"
    with keras.device("meta"):  # Keras moves operands to its device: here the meta one
        out = kernels.affine(rows, kernel, torch.empty(3072, device="meta"))
    assert tuple(out.shape) == (4096, 3072) and out.device.type == "meta"
    assert torch_kernels.PRODUCT_CHOICES == {}
