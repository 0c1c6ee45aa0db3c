"""TensorFlow implementations of the primitives (contracts: `keras_vit.kernels.reference`).

On CPUs, larger models run as TensorFlow graphs without XLA (`VisionTransformer`'s
`jit_compile="auto"`): TensorFlow's graph optimizer then fuses only the op patterns it knows
(a 2-D `MatMul` with its `BiasAdd` and GELU into one oneDNN kernel) and runs every other op as a
pass over memory, and autodiff's gradients are not fused at all. The forms below are shaped for
that; under XLA (detected at trace time, `in_xla_graph`) and eagerly the portable forms are as
fast. Measurements: benchmarks/RESULTS.md, sessions 17-19.

The one private API, `tensorflow.python.ops.control_flow_util` (whether the graph being traced
is compiled by XLA), is probed once; a TensorFlow without it makes `in_xla_graph` answer True
in every graph, which selects the portable forms: slower without XLA, the same function.
"""

import functools

import tensorflow as tf
from keras import ops

from keras_vit.kernels import reference


# --------------------------------------------------------------------------- the compiler


@functools.cache
def _xla_context_probe():
    """`GraphOrParentsInXlaContext(graph)` from TensorFlow's internals, or None where this
    TensorFlow has no such helper (or it fails on the default graph)."""
    try:
        from tensorflow.python.ops import control_flow_util  # noqa: PLC0415 (private)

        probe = control_flow_util.GraphOrParentsInXlaContext
        with tf.Graph().as_default() as graph:
            bool(probe(graph))
    except Exception:  # noqa: BLE001 (any failure: the public fallback)
        return None
    return probe


def in_xla_graph():
    """Whether TensorFlow is tracing code that XLA will compile (`jit_compile=True`). False
    eagerly; True in every graph when the private probe is missing (the portable forms)."""
    if tf.executing_eagerly():
        return False
    probe = _xla_context_probe()
    if probe is None:
        return True
    return bool(probe(tf.compat.v1.get_default_graph()))


def _in_plain_graph():
    """A graph that TensorFlow's own executor runs (no XLA): where the forms below pay."""
    return not tf.executing_eagerly() and not in_xla_graph()


@functools.cache
def _on_gpu():
    """The one place TensorFlow's kernels (and `VisionTransformer`'s XLA choice) read the device
    (tests force it)."""
    return bool(tf.config.list_logical_devices("GPU"))


def device():
    return "gpu" if _on_gpu() else "cpu"


# --------------------------------------------------------------------------- affine


def affine(x, kernel, bias, training=None):
    """A 2-D `MatMul` and a `BiasAdd`, the pair that TF's graph optimizer fuses into one oneDNN
    kernel when XLA is off. Keras' `matmul` of a (B, T, D) tensor by a kernel is a broadcast
    batched product, whose kernel gradient is a product per example summed over the batch, and
    `+ bias` a broadcast add whose gradient is a general reduction; here the kernel's gradient
    is one product and the bias's a `BiasAddGrad` (train steps without XLA take
    `_affine_for_training`'s gradients). Under XLA both forms compile to the same code."""
    x = tf.convert_to_tensor(x)
    # Rows already: no reshapes between the product and what follows.
    rows = x if x.shape.rank == 2 else tf.reshape(x, (-1, x.shape[-1]))
    if training and not in_xla_graph():
        rows = _affine_for_training()(
            rows, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))
    else:
        rows = tf.nn.bias_add(tf.matmul(rows, kernel), bias)
    if x.shape.rank == 2:
        return rows
    return tf.reshape(rows, tf.concat([tf.shape(x)[:-1], [kernel.shape[-1]]], axis=0))


@functools.cache
def _affine_for_training():
    """rows (N, D_in) @ kernel + bias with hand-written gradients, for train steps without XLA.

    Autodiff takes the input gradient as `MatMul(upstream, kernel, transpose_b=True)`, and
    oneDNN runs that transposed-operand product up to ~15% slower than the same product on a
    row-major (D_out, D_in) matrix; a transposed copy of the kernel costs one pass over the
    small kernel (figures: benchmarks/RESULTS.md, session 19).
    The weight gradient (`transpose_a`, no slower) is autodiff's product; the bias gradient is
    a product too (see below).
    """

    @tf.custom_gradient
    def affine_rows(rows, kernel, bias):
        def gradient(upstream):
            d_in, d_out = kernel.shape
            # (D_out, D_in) through a 3-D transpose and a reshape, a pattern that the graph
            # optimizer leaves alone (a 2-D `Transpose` feeding the product it folds away;
            # `einsum` is as fast for the product but oneDNN's einsum costs ~0.4 ms a call).
            kernel_t = tf.reshape(tf.transpose(kernel[:, :, None], (1, 0, 2)), (d_out, d_in))
            # The bias gradient, the column sums, as a product with a ones vector: oneDNN
            # reads the gradient once, where `BiasAddGrad` took twice as long.
            ones = tf.ones((tf.shape(upstream)[0], 1), upstream.dtype)
            return (tf.matmul(upstream, kernel_t),
                    tf.matmul(rows, upstream, transpose_a=True),
                    tf.reshape(tf.matmul(upstream, ones, transpose_a=True), (d_out,)))

        return tf.nn.bias_add(tf.matmul(rows, kernel), bias), gradient

    return affine_rows


# --------------------------------------------------------------------------- GELU


def gelu(x, approximate, training=None):
    """Training: `_gelu_for_training` (value and gradient, each one XLA-compiled function).
    Inference: the portable ops, which TensorFlow's graph optimizer fuses with the product
    and bias before them into one oneDNN kernel (`MlpBlock` works on 2-D rows so that it
    can); exported graphs (SavedModel, ONNX, LiteRT) stay free of XLA-only calls."""
    if training:
        return _gelu_for_training(approximate)(x)
    return reference.gelu(x, approximate)


def _gelu_derivative_times(z, upstream, approximate):
    """GELU'(z) * upstream, from the closed forms:

        exact: GELU'(z) = Phi(z) + z phi(z)
        tanh:  GELU'(z) ~ (1 + tanh u)/2 + z/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 z^2)
    """
    import math  # noqa: PLC0415

    sqrt_2_over_pi, cubic = math.sqrt(2.0 / math.pi), 0.044715
    if approximate:
        t = ops.tanh(sqrt_2_over_pi * (z + cubic * z * z * z))
        slope = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * sqrt_2_over_pi * (
            1.0 + 3.0 * cubic * z * z)
    else:
        slope = (0.5 * (1.0 + ops.erf(z * (1.0 / math.sqrt(2.0))))
                 + z * (1.0 / math.sqrt(2.0 * math.pi)) * ops.exp(-0.5 * z * z))
    return upstream * ops.cast(slope, upstream.dtype)


@functools.cache
def _gelu_for_training(approximate):
    """GELU with its gradient, each one XLA-compiled function, for train steps.

    Without XLA, TensorFlow runs GELU and the gradient its autodiff derives as about a dozen
    separate element-wise passes over the MLP's widest activation; compiled, each side is one
    pass (benchmarks/RESULTS.md, session 17). Under XLA (jit_compile=True) the calls are
    inlined into the step.
    """
    value = tf.function(functools.partial(reference.gelu, approximate=approximate),
                        jit_compile=True, autograph=False, reduce_retracing=True)
    derivative_times = tf.function(
        functools.partial(_gelu_derivative_times, approximate=approximate),
        jit_compile=True, autograph=False, reduce_retracing=True)

    @tf.custom_gradient
    def gelu_with_gradient(z):
        return value(z), lambda upstream: derivative_times(z, upstream)

    return gelu_with_gradient


# --------------------------------------------------------------------------- layer norm
#
# Train steps take the gradient in closed form, with x^ = (x - mean) * inv and
# g = upstream * gamma:
#
#     dx = inv (g - mean(g) - x^ mean(g x^)),   dgamma = sum(upstream x^),   dbeta = sum(upstream)
#
# about ten passes over the (tokens, D) activation where autodiff of the forward ops takes some
# fifteen, none fused without XLA (benchmarks/RESULTS.md, session 18).


def layer_norm(x, gamma, beta, epsilon, training=None):
    if not (training and gamma is not None and beta is not None):
        return reference.layer_norm(x, gamma, beta, epsilon)
    dtype = reference._statistics_dtype(x)
    y = _layer_norm_for_training(epsilon)(
        ops.cast(x, dtype), ops.cast(gamma, dtype), ops.cast(beta, dtype))
    return ops.cast(y, x.dtype)


def normalise(x, epsilon, training=None):
    if training:
        return _normalise_for_training(epsilon)(x)
    return reference.normalise(x, epsilon)


def layer_norm_folds_into_next_product():
    """In graphs without XLA. The folded form computes the same function without the two
    passes that apply gamma and beta to the (tokens, D) activation and, in train steps, the two
    in their gradient that multiply by gamma and form upstream * x^: the product's own
    gradients carry them (benchmarks/RESULTS.md, session 19). Eager calls keep the plain form,
    where the fold's small ops cost more than they save; XLA fuses either form."""
    return _in_plain_graph()


def _normalisation_gradient(d_normalised, normalised, inv):
    """The gradient through x^ = (x - mean) * inv for x, given x^'s gradient."""
    return inv * (d_normalised - tf.reduce_mean(d_normalised, axis=-1, keepdims=True)
                  - normalised * tf.reduce_mean(d_normalised * normalised, axis=-1,
                                                keepdims=True))


@functools.cache
def _layer_norm_for_training(epsilon):
    """(x, gamma, beta) -> layer norm over the last axis, with the closed-form gradient."""

    @tf.custom_gradient
    def layer_norm_rows(x, gamma, beta):
        normalised, inv = reference.normalised_and_inverse(x, epsilon)

        def gradient(upstream):
            rows = list(range(upstream.shape.rank - 1))
            d_x = _normalisation_gradient(upstream * gamma, normalised, inv)
            return d_x, tf.reduce_sum(upstream * normalised, rows), tf.reduce_sum(upstream, rows)

        return normalised * gamma + beta, gradient

    return layer_norm_rows


@functools.cache
def _normalise_for_training(epsilon):
    """x -> (x - mean) * rsqrt(var + eps) over the last axis, with the closed-form gradient."""

    @tf.custom_gradient
    def normalise_rows(x):
        normalised, inv = reference.normalised_and_inverse(x, epsilon)
        return normalised, lambda upstream: _normalisation_gradient(upstream, normalised, inv)

    return normalise_rows


# --------------------------------------------------------------------------- attention


def attention(qkv, num_queries=None, logit_bias=None, return_probabilities=False,
              dropout=None, training=None):
    """GPUs: the backend's fused kernel (`ops.dot_product_attention`). CPUs: batched
    (B, H, T, D/H) products, with

    - the logits as `matmul(query, key, adjoint_b=True)`: a separate transpose of the keys the
      graph optimizer folds into the product too, but not in the gradient, where the keys'
      gradient then comes out transposed and takes one more pass to turn back;
    - the softmax normalised before the values (TensorFlow's softmax is one kernel with a
      three-pass gradient, where `softmax_then_values` is four element-wise passes that only
      XLA fuses), except for inference under XLA, which takes `reference.softmax_then_values`
    (figures: benchmarks/RESULTS.md, sessions 18-19).
    """
    if _on_gpu() and not (return_probabilities or dropout is not None):
        return _fused(qkv, num_queries, logit_bias), None
    query, key, value = reference.heads(qkv, num_queries)
    logits = tf.matmul(query, key, adjoint_b=True)
    if return_probabilities or dropout is not None or training or not in_xla_graph():
        return reference.weigh_values(logits, query, value, logit_bias, dropout,
                                      return_probabilities)
    if logit_bias is not None:
        logits = logits + logit_bias(query)
    attended = reference.softmax_then_values(ops.cast(logits, "float32"), value)
    return ops.transpose(attended, (0, 2, 1, 3)), None


def _fused(qkv, num_queries, logit_bias):
    """`ops.dot_product_attention` on (B, T, H, D/H) views; the queries are pre-scaled."""
    query, key, value = ops.unstack(qkv, 3, axis=2)
    if num_queries is not None and num_queries != qkv.shape[1]:
        query = query[:, :num_queries]
    bias = None if logit_bias is None else logit_bias(ops.transpose(query, (0, 2, 1, 3)))
    return ops.dot_product_attention(query, key, value, bias=bias, scale=1.0)


def describe():
    gpu = _on_gpu()
    return {
        "affine": "tensorflow: 2-D MatMul + BiasAdd (oneDNN fuses them); training without "
                  "XLA: custom gradient (transposed kernel copy, bias gradient as a product)",
        "gelu": "tensorflow: training: XLA-compiled value and gradient; inference: keras.ops "
                "(fused into the product by the graph optimizer)",
        "layer_norm": "tensorflow: keras.ops; training: closed-form gradient",
        "normalise": "tensorflow: keras.ops; training: closed-form gradient",
        "layer_norm_folds_into_next_product": "in graphs without XLA",
        "attention": ("tensorflow: keras.ops.dot_product_attention (GPU)" if gpu else
                      "tensorflow: batched matmuls (keys via adjoint_b), softmax before the "
                      "values; inference under XLA: softmax after the values"),
        "xla_detection": ("private control_flow_util probe" if _xla_context_probe()
                          else "unavailable: every graph treated as XLA (portable forms)"),
    }
