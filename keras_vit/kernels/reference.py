"""The portable contract of every primitive, in `keras.ops`.

Each function here is the definition that the backend modules (`tensorflow.py`, `torch.py`,
`jax.py`) implement faster; tests/test_kernels.py checks every implementation against these,
values and gradients. A backend without a module of its own (NumPy, OpenVINO) runs these.

Shapes: B batch, T tokens, H heads, D/H head width, D = H * D/H.
"""

import math

import keras
from keras import ops

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def affine(x, kernel, bias, training=None):
    """`x @ kernel + bias` over the last axis of `x` (any rank).

    Args:
        x: (..., D_in).
        kernel: (D_in, D_out), in `x`'s dtype.
        bias: (D_out,), in `x`'s dtype.
        training: whether gradients follow (implementations may pick another kernel then;
            the function is the same).

    Returns:
        (..., D_out), in `x`'s dtype.
    """
    return ops.matmul(x, kernel) + bias


def gelu(x, approximate, training=None):
    """GELU of fresh activations `x` (the paper's MLP, Sec. 3.1); nothing else may hold `x`
    (an implementation may overwrite it when no gradient is recorded).

        exact:  GELU(z) = z/2 (1 + erf(z / sqrt 2))
        tanh:   GELU(z) ~ z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))

    The exact form is written with erf, as PyTorch's kernel computes it: JAX and TensorFlow
    write x/2 erfc(-x / sqrt 2), whose erfc XLA evaluates more slowly than erf on CPUs
    (benchmarks/RESULTS.md); the two differ by float rounding (at most 6e-7).
    """
    if approximate:
        return ops.gelu(x, approximate=True)
    return 0.5 * x * (1.0 + ops.erf(x * ops.cast(_SQRT_HALF, x.dtype)))


def normalise(x, epsilon, training=None):
    """(x - mean) * rsqrt(var + eps) over the last axis, in `x`'s dtype, the variance from the
    centred x (the official flax form)."""
    return normalised_and_inverse(x, epsilon)[0]


def normalised_and_inverse(x, epsilon):
    """`normalise(x)` and its rsqrt(var + eps), (..., 1)."""
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    inv = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)
    return centred * inv, inv


def layer_norm(x, gamma, beta, epsilon, training=None):
    """The paper's LN over the last axis: normalise(x) * gamma + beta, statistics in at least
    float32 (as Keras computes them under mixed precision), the result in `x`'s dtype.

    Args:
        x: (..., D).
        gamma, beta: (D,) or None (no scale, no offset).
        epsilon: added to the variance.
        training: whether gradients follow.
    """
    dtype = _statistics_dtype(x)
    y = normalise(ops.cast(x, dtype), epsilon)
    if gamma is not None:
        y = y * ops.cast(gamma, dtype)
    if beta is not None:
        y = y + ops.cast(beta, dtype)
    return ops.cast(y, x.dtype)


def layer_norm_folds_into_next_product():
    """Whether `normalise` followed by a product that takes gamma and beta into its kernel
    (`keras_vit.layers.dense.fold_scale_and_offset`) is faster than `layer_norm` here, for a
    float32 layer norm over the last axis with both gamma and beta. The same function either
    way; no compiler in the portable path needs it."""
    return False


def attention(qkv, num_queries=None, logit_bias=None, return_probabilities=False,
              dropout=None, training=None):
    """The attention core of multi-head self-attention (Appendix A, Eq. 5-8): per head,
    softmax(q k^T + bias) v, the softmax in float32.

    Args:
        qkv: (B, T, 3, H, D/H), the queries, keys and values as one projection lays them out;
            the queries already multiplied by 1/sqrt(D/H) (the layer folds the scale into the
            query kernel).
        num_queries: Q, only the first Q tokens ask queries (None: all T). Keys and values
            still come from all T tokens.
        logit_bias: None, or a function of the queries (B, H, Q, D/H) returning logits
            (B, H, Q, T) to add before the softmax (relative position attention).
        return_probabilities: also return the softmax probabilities (B, H, Q, T).
        dropout: None, or a function applied to the probabilities before they weigh the
            values (attention dropout in training); implementations then take this form.
        training: whether gradients follow.

    Returns:
        (attended (B, Q, H, D/H) in `qkv`'s dtype, probabilities (B, H, Q, T) in `qkv`'s dtype
        or None when not asked for).
    """
    query, key, value = heads(qkv, num_queries)
    logits = ops.matmul(query, ops.swapaxes(key, -1, -2))
    return weigh_values(logits, query, value, logit_bias, dropout, return_probabilities)


def heads(qkv, num_queries=None):
    """Queries (B, H, Q, D/H), keys and values (B, H, T, D/H) from the packed
    (B, T, 3, H, D/H). `unstack`, not three slices: without XLA, TensorFlow computes the
    gradients of slices as three zero-filled scatters into the whole tensor."""
    query, key, value = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
    if num_queries is not None and num_queries != qkv.shape[1]:
        # Only when it selects: without XLA, TensorFlow runs even a whole-range slice and its
        # gradient as copies.
        query = query[:, :, :num_queries]
    return query, key, value


def weigh_values(logits, query, value, logit_bias=None, dropout=None,
                 return_probabilities=False):
    """softmax(logits + bias) @ value in float32 softmax, normalised before the product;
    (attended (B, Q, H, D/H), probabilities or None)."""
    if logit_bias is not None:
        logits = logits + logit_bias(query)
    probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), value.dtype)
    attended = ops.matmul(probs if dropout is None else dropout(probs), value)
    return ops.transpose(attended, (0, 2, 1, 3)), probs if return_probabilities else None


def softmax_then_values(logits, value):
    """softmax(logits) @ value, normalised after the product: exp(l - max) @ v / sum exp(l - max),
    with (B, H, Q, T) float32 logits; (B, H, Q, D/H).

    The same function as normalising the (B, H, Q, T) probabilities first, with the division
    moved to the (B, H, Q, D/H) result: T / (D/H) times fewer divisions (3x at 197 tokens and
    64-wide heads) and no normalised-probabilities pass. A portable rewrite that pays off
    where XLA compiles for a CPU (benchmarks/RESULTS.md, session 13).
    """
    shifted = logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    weights = ops.exp(shifted)
    total = ops.sum(weights, axis=-1, keepdims=True)
    attended = ops.matmul(ops.cast(weights, value.dtype), value)
    # The division in float32 (a no-op for float32 values): in bfloat16 the gradients of the
    # product and of the sum, which cancel, were each rounded, 5-10x the error of the
    # normalise-first form in the queries' and keys' gradients (tests/test_kernels.py).
    return ops.cast(ops.cast(attended, logits.dtype) / total, value.dtype)


def _statistics_dtype(x):
    return keras.backend.result_type(x.dtype, "float32")


def device():
    """The portable definitions choose nothing by device."""
    return "cpu"


def describe():
    """Which implementation each primitive takes here: these, the portable definitions."""
    return {
        "affine": "reference: keras.ops.matmul + bias",
        "gelu": "reference: keras.ops (erf form / tanh approximation)",
        "layer_norm": "reference: keras.ops, statistics in float32",
        "normalise": "reference: keras.ops",
        "layer_norm_folds_into_next_product": "no",
        "attention": "reference: batched matmuls, float32 softmax",
    }
