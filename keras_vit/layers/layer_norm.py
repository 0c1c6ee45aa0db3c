"""`LayerNorm`: the paper's LN (Sec. 3.1, applied before every block), over the last axis.

The same weights (`gamma`, `beta`) and the same function as `keras.layers.LayerNormalization`,
arranged as (x - mean) * rsqrt(var + eps) * gamma + beta (the official flax code's output form),
with the variance taken from that centred x. Keras computes x * inv + (beta - mean * inv) with a
second mean inside `var`; under XLA on CPUs that form's backward pass fuses into long chains that
are recomputed for every transposed weight-gradient operand (JAX, ViT-S/16 train step at batch
16: gradient 11.9 -> 8.2 s; benchmarks/RESULTS.md). PyTorch keeps Keras' call, its fused native
kernel.

TensorFlow train steps take the gradient in closed form (`_tf_layer_norm_for_training`), with
x^ = (x - mean) * inv and g = upstream * gamma:

    dx = inv (g - mean(g) - x^ mean(g x^)),   dgamma = sum(upstream x^),   dbeta = sum(upstream)

about ten passes over the (tokens, D) activation where TensorFlow's autodiff of the forward ops
takes some fifteen, none fused without XLA. ViT-S/16 train step at batch 16, interleaved:
3037 -> 2967 and 2970 -> 2821 ms median (benchmarks/RESULTS.md, session 18).
"""

import functools

import keras
from keras import ops

from keras_vit.layers.utils import in_xla_tensorflow_graph


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerNorm(keras.layers.LayerNormalization):
    """Layer normalisation over the last axis, statistics in at least float32.

    Takes the arguments of `keras.layers.LayerNormalization`; `axis` other than the last one
    and `rms_scaling` fall back to Keras' implementation.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> y = LayerNorm(epsilon=1e-6)(np.array([[1.0, 2.0, 3.0]], "float32"))
    >>> np.round(keras.ops.convert_to_numpy(y).astype("float64"), 4).tolist()
    [[-1.2247, 0.0, 1.2247]]
    """

    def folds_into_next_product(self):
        """Whether `normalise` followed by a product that folds in `gamma` and `beta` (see
        `keras_vit.layers.dense.fold_scale_and_offset`) is this layer's fastest form: in
        TensorFlow graphs without XLA (how larger models run on CPUs, `VisionTransformer`), for
        a float32 layer norm over the last axis with both `gamma` and `beta`.

        The folded form computes the same function without the two passes that apply `gamma`
        and `beta` to the (tokens, D) activation and, in train steps, the two in their
        gradient that multiply by gamma and form upstream * x^: the product's own gradients
        carry them, and gamma's and beta's come from the (D, D_out) kernel's. ViT-S/16 train
        step at batch 16: 1.013x and 1.016x, ViT-Ti/16 inference at batch 32: 1.021x and
        1.029x (median ratios of interleaved steps; benchmarks/RESULTS.md, session 19). Eager
        calls keep the plain form, where the fold's small ops would cost more than they save.
        """
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

        return (
            not tf.executing_eagerly() and not in_xla_tensorflow_graph()
            and self.scale and self.center and not self.rms_scaling
            and list(self.axis) == [-1]
            and self.compute_dtype == "float32" and self.variable_dtype == "float32"
        )

    def normalise(self, inputs, training=None):
        """(x - mean) * rsqrt(var + eps) over the last axis, without `gamma` and `beta`: the
        form for `folds_into_next_product`, which applies them in the next product."""
        if training and keras.backend.backend() == "tensorflow":
            return _tf_normalise_for_training(self.epsilon)(inputs)
        return _normalised(inputs, self.epsilon)[0]

    def call(self, inputs, training=None):
        last_axis = list(self.axis) in ([-1], [len(inputs.shape) - 1])  # build() made it a list
        if keras.backend.backend() == "torch" or self.rms_scaling or not last_axis:
            return super().call(inputs)
        # Statistics in float32 even under mixed precision, as Keras does.
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        if training and keras.backend.backend() == "tensorflow" and self.scale and self.center:
            y = _tf_layer_norm_for_training(self.epsilon)(
                x, ops.cast(self.gamma, dtype), ops.cast(self.beta, dtype))
            return ops.cast(y, self.compute_dtype)
        y, _ = _normalised(x, self.epsilon)
        if self.scale:
            y = y * ops.cast(self.gamma, dtype)
        if self.center:
            y = y + ops.cast(self.beta, dtype)
        return ops.cast(y, self.compute_dtype)


def _normalised(x, epsilon):
    """(x - mean) * rsqrt(var + eps) over the last axis, the variance from the centred x; and
    that rsqrt."""
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    inv = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)
    return centred * inv, inv


def _normalisation_gradient(d_normalised, normalised, inv):
    """The gradient through x^ = (x - mean) * inv for x, given x^'s gradient."""
    import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

    return inv * (d_normalised - tf.reduce_mean(d_normalised, axis=-1, keepdims=True)
                  - normalised * tf.reduce_mean(d_normalised * normalised, axis=-1,
                                                keepdims=True))


@functools.cache
def _tf_layer_norm_for_training(epsilon):
    """(x, gamma, beta) -> layer norm over the last axis, with the closed-form gradient of the
    module docstring; the same forward ops as `LayerNorm.call`."""
    import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

    @tf.custom_gradient
    def layer_norm(x, gamma, beta):
        normalised, inv = _normalised(x, epsilon)

        def gradient(upstream):
            rows = list(range(upstream.shape.rank - 1))
            d_x = _normalisation_gradient(upstream * gamma, normalised, inv)
            return d_x, tf.reduce_sum(upstream * normalised, rows), tf.reduce_sum(upstream, rows)

        return normalised * gamma + beta, gradient

    return layer_norm


@functools.cache
def _tf_normalise_for_training(epsilon):
    """x -> (x - mean) * rsqrt(var + eps) over the last axis, with the closed-form gradient."""
    import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

    @tf.custom_gradient
    def normalise(x):
        normalised, inv = _normalised(x, epsilon)
        return normalised, lambda upstream: _normalisation_gradient(upstream, normalised, inv)

    return normalise
