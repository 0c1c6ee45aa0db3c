"""`gelu`: the MLP's activation (paper Sec. 3.1), exact (erf) or tanh-approximate, per backend.

    exact:  GELU(z) = z Phi(z) = z/2 (1 + erf(z / sqrt 2)),
            GELU'(z) = Phi(z) + z phi(z)
    tanh:   GELU(z) ~ z/2 (1 + tanh u),  u = sqrt(2/pi) (z + 0.044715 z^3),
            GELU'(z) ~ (1 + tanh u)/2 + z/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 z^2)

The exact form is written x/2 (1 + erf(x / sqrt 2)), as PyTorch's kernel computes it: JAX and
TensorFlow write it as x/2 erfc(-x / sqrt 2), whose erfc XLA evaluates more slowly than erf
(JAX on CPU, (6304, 768): 5.9 vs 3.5 ms); the two differ by float rounding (at most 6e-7).
"""

import functools
import math

import keras
from keras import ops

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_CUBIC = 0.044715


def gelu(x, approximate, training=None):
    """GELU of the MLP's fresh hidden activations `x` (nothing else may hold them).

    Args:
        x: the first MLP layer's output.
        approximate: the tanh approximation when True, the exact erf form when False.
        training: whether this is a training step (gradients follow).

    PyTorch keeps its fused kernel, in place when no gradient is recorded: the widest
    activation of the model then needs no second buffer (eager PyTorch allocates, and on a CPU
    often page-faults, a fresh one per call). TensorFlow trains with `_tf_gelu_for_training`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> y = gelu(np.array([-1.0, 0.0, 1.0], "float32"), approximate=False)
    >>> np.round(keras.ops.convert_to_numpy(y).astype("float64"), 4).tolist()
    [-0.1587, 0.0, 0.8413]
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch  # noqa: PLC0415 (the torch backend only)

        if not torch.is_grad_enabled():
            return torch.ops.aten.gelu_(x, approximate="tanh" if approximate else "none")
        return ops.gelu(x, approximate=approximate)
    if backend == "tensorflow" and training:
        return _tf_gelu_for_training(approximate)(x)
    return _gelu_value(x, approximate)


def _gelu_value(z, approximate):
    if approximate:
        return ops.gelu(z, approximate=True)
    return 0.5 * z * (1.0 + ops.erf(z * ops.cast(_SQRT_HALF, z.dtype)))


def _gelu_derivative_times(z, upstream, approximate):
    """GELU'(z) * upstream, from the closed forms in the module docstring."""
    if approximate:
        t = ops.tanh(_SQRT_2_OVER_PI * (z + _TANH_CUBIC * z * z * z))
        slope = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (
            1.0 + 3.0 * _TANH_CUBIC * z * z)
    else:
        slope = 0.5 * (1.0 + ops.erf(z * _SQRT_HALF)) + z * _INV_SQRT_2PI * ops.exp(-0.5 * z * z)
    return upstream * ops.cast(slope, upstream.dtype)


@functools.cache
def _tf_gelu_for_training(approximate):
    """GELU with its gradient, each one XLA-compiled function, for TensorFlow train steps.

    Without XLA (how large models train on CPUs, `VisionTransformer`), TensorFlow runs GELU
    and the gradient its autodiff derives as about a dozen separate element-wise passes over
    the MLP's widest activation; compiled, each side is one pass. ViT-S/16 train step, batch
    16: 2573 -> 2538 ms (median of 9, interleaved; benchmarks/RESULTS.md, session 17). Under
    XLA (jit_compile=True) the calls are inlined into the step as before.
    Inference keeps the plain ops: they need no gradient, TensorFlow's graph optimizer fuses
    them with the product and bias before them into one oneDNN kernel (`MlpBlock` works on
    2-D rows so that it can), and exported graphs (SavedModel, ONNX, LiteRT) stay free of
    XLA-only calls.
    """
    import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

    value = tf.function(functools.partial(_gelu_value, approximate=approximate),
                        jit_compile=True, autograph=False, reduce_retracing=True)
    derivative_times = tf.function(
        functools.partial(_gelu_derivative_times, approximate=approximate),
        jit_compile=True, autograph=False, reduce_retracing=True)

    @tf.custom_gradient
    def gelu_with_gradient(z):
        return value(z), lambda upstream: derivative_times(z, upstream)

    return gelu_with_gradient
