"""`LayerNorm`: the paper's LN (Sec. 3.1, applied before every block), over the last axis.

The same weights (`gamma`, `beta`) and the same function as `keras.layers.LayerNormalization`,
arranged as (x - mean) * rsqrt(var + eps) * gamma + beta (the official flax code's output form),
with the variance taken from that centred x. Keras computes x * inv + (beta - mean * inv) with a
second mean inside `var`; under XLA on CPUs that form's backward pass fuses into long chains that
are recomputed for every transposed weight-gradient operand (JAX, ViT-S/16 train step at batch
16: gradient 11.9 -> 8.2 s; benchmarks/RESULTS.md). PyTorch keeps Keras' call, its fused native
kernel.
"""

import keras
from keras import ops


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

    def call(self, inputs):
        last_axis = list(self.axis) in ([-1], [len(inputs.shape) - 1])  # build() made it a list
        if keras.backend.backend() == "torch" or self.rms_scaling or not last_axis:
            return super().call(inputs)
        # Statistics in float32 even under mixed precision, as Keras does.
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        centred = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
        y = centred * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            y = y * ops.cast(self.gamma, dtype)
        if self.center:
            y = y + ops.cast(self.beta, dtype)
        return ops.cast(y, self.compute_dtype)
