"""JAX implementations of the primitives (contracts: `keras_vit.kernels.reference`).

XLA fuses element-wise work into its neighbours, so the projections, GELU and layer norm take
the portable `keras.ops` forms. Attention is chosen per device:

- CPU: batched (B, H, T, D/H) products with the softmax normalised after the values
  (`reference.softmax_then_values`); XLA's own fused attention ran 1.4-2x slower there.
- GPU, bfloat16/float16: cuDNN's fused (flash) attention through
  `jax.nn.dot_product_attention(implementation="cudnn")`, softmax statistics in float32. cuDNN
  refuses some lengths in training (an H200 with T = 197: "Unsupported sequence length Q 197,
  KV 197"; this JAX asks for even lengths when a bias is given, others for multiples of 64),
  so `padded_attention` pads queries, keys and values with zeros to the next length in
  `CUDNN_PADDINGS` that it accepts and masks the padding through the sequence-length
  arguments: padded keys get no weight, padded query rows are cut off. The choice is made at
  trace time and remembered per shape (`CUDNN_CHOICES`, shown by `describe`); where cuDNN
  refuses every padding, XLA's attention.
- GPU float32, TPU: `keras.ops.dot_product_attention` (XLA's attention).
"""

import jax
import jax.numpy as jnp
from keras import ops

from keras_vit.kernels import reference

affine = reference.affine
gelu = reference.gelu
layer_norm = reference.layer_norm
normalise = reference.normalise
layer_norm_folds_into_next_product = reference.layer_norm_folds_into_next_product

# Candidate padded lengths for cuDNN, in order: the length itself, the next even length, the
# next multiple of 64.
CUDNN_PADDINGS = (1, 2, 64)
# (B, T, Q, H, D/H, dtype, bias, training) -> the padding multiple cuDNN accepted, or "xla".
CUDNN_CHOICES = {}


def _platform():
    """"cpu", "gpu" or "tpu": the one place this module reads the device (tests force it)."""
    return jax.default_backend()


def device():
    return _platform()


def attention(qkv, num_queries=None, logit_bias=None, return_probabilities=False,
              dropout=None, training=None):
    if return_probabilities or dropout is not None:
        return reference.attention(qkv, num_queries, logit_bias, return_probabilities, dropout)
    if _platform() == "cpu":
        query, key, value = reference.heads(qkv, num_queries)
        logits = ops.matmul(query, ops.swapaxes(key, -1, -2))
        if logit_bias is not None:
            logits = logits + logit_bias(query)
        attended = reference.softmax_then_values(ops.cast(logits, "float32"), value)
        return ops.transpose(attended, (0, 2, 1, 3)), None
    query, key, value = ops.unstack(qkv, 3, axis=2)  # (B, T, H, D/H) each
    if num_queries is not None and num_queries != qkv.shape[1]:
        query = query[:, :num_queries]
    bias = None if logit_bias is None else logit_bias(jnp.swapaxes(query, 1, 2))
    if _platform() == "gpu" and qkv.dtype in (jnp.bfloat16, jnp.float16):
        return cudnn_attention(query, key, value, bias, training), None
    return ops.dot_product_attention(query, key, value, bias=bias, scale=1.0), None


def cudnn_attention(query, key, value, bias=None, training=None):
    """cuDNN's fused attention on (B, T, H, D/H) operands, padded where it refuses the
    lengths (see the module docstring); XLA's attention where it refuses every padding."""
    key_ = (key.shape[0], key.shape[1], query.shape[1], key.shape[2], key.shape[3],
            str(query.dtype), bias is not None, bool(training))
    known = CUDNN_CHOICES.get(key_)
    # The remembered choice first; should it fail (a gradient traced where it was chosen
    # without one), every candidate again.
    candidates = CUDNN_PADDINGS if known is None else (known, *CUDNN_PADDINGS)
    for multiple in candidates:
        if multiple == "xla":
            break
        try:
            out = padded_attention(query, key, value, bias, multiple, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError, TypeError):
            continue
        CUDNN_CHOICES[key_] = multiple
        return out
    CUDNN_CHOICES[key_] = "xla"
    return jax.nn.dot_product_attention(query, key, value, bias=bias, scale=1.0,
                                        implementation="xla")


def padded_attention(query, key, value, bias, multiple, implementation=None):
    """softmax(q k^T + bias) v on (B, Q, H, D/H) queries and (B, T, H, D/H) keys and values,
    with Q and T padded by zeros to multiples of `multiple` and the padding masked: padded
    keys through `key_value_seq_lengths` (no weight), padded queries through
    `query_seq_lengths`, their rows cut off. The same function as the unpadded attention
    (tests/test_kernels.py checks it on the CPU with XLA's implementation)."""
    batch, q_len, t_len = query.shape[0], query.shape[1], key.shape[1]
    q_pad, t_pad = -q_len % multiple, -t_len % multiple
    lengths = {}
    if q_pad or t_pad:
        widths = lambda n: ((0, 0), (0, n), (0, 0), (0, 0))  # noqa: E731
        query = jnp.pad(query, widths(q_pad))
        key, value = jnp.pad(key, widths(t_pad)), jnp.pad(value, widths(t_pad))
        if bias is not None:
            bias = jnp.pad(bias, ((0, 0), (0, 0), (0, q_pad), (0, t_pad)))
        lengths = {"query_seq_lengths": jnp.full((batch,), q_len, jnp.int32),
                   "key_value_seq_lengths": jnp.full((batch,), t_len, jnp.int32)}
    out = jax.nn.dot_product_attention(query, key, value, bias=bias, scale=1.0,
                                       implementation=implementation, **lengths)
    return out[:, :q_len] if q_pad else out


def describe():
    platform = _platform()
    if platform == "cpu":
        attention_line = "jax: batched matmuls, softmax after the values (XLA on CPU)"
    elif platform == "gpu":
        seen = ", ".join(f"T={k[1]} Q={k[2]} {k[5]}{' +bias' if k[6] else ''}: "
                         + (f"cudnn, padded to a multiple of {v}" if v != "xla" else "xla")
                         for k, v in CUDNN_CHOICES.items())
        attention_line = ("jax: bf16/fp16: cuDNN fused attention, padded where refused "
                          f"({seen or 'no shape traced yet'}); float32: XLA attention")
    else:
        attention_line = f"jax: keras.ops.dot_product_attention ({platform})"
    return {
        "affine": "reference: keras.ops.matmul + bias (XLA fuses the bias)",
        "gelu": "reference: keras.ops",
        "layer_norm": "reference: keras.ops, statistics in float32",
        "normalise": "reference: keras.ops",
        "layer_norm_folds_into_next_product": "no",
        "attention": attention_line,
    }
