"""`LayerNorm`: the paper's LN (Sec. 3.1, applied before every block), over the last axis.

    LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta

The same weights (`gamma`, `beta`) and the same function as `keras.layers.LayerNormalization`,
with the statistics in at least float32 under mixed precision; computed by
`keras_vit.kernels.layer_norm` (the official flax form, the variance from the centred x, or a
backend's fused kernel).
"""

import keras
from keras import ops

from keras_vit import kernels


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
        `keras_vit.layers.dense.fold_scale_and_offset`) is this layer's fastest form: where
        `keras_vit.kernels.layer_norm_folds_into_next_product` says so, for a float32 layer
        norm over the last axis with both `gamma` and `beta`. The same function either way."""
        return (
            self.scale and self.center and not self.rms_scaling
            and list(self.axis) == [-1]
            and self.compute_dtype == "float32" and self.variable_dtype == "float32"
            and kernels.layer_norm_folds_into_next_product()
        )

    def normalise(self, inputs, training=None):
        """(x - mean) * rsqrt(var + eps) over the last axis, without `gamma` and `beta`: the
        form for `folds_into_next_product`, which applies them in the next product."""
        return kernels.normalise(inputs, self.epsilon, training)

    def call(self, inputs, training=None):
        last_axis = list(self.axis) in ([-1], [len(inputs.shape) - 1])  # build() made it a list
        if self.rms_scaling or not last_axis:
            return super().call(inputs)
        y = kernels.layer_norm(inputs, self.gamma if self.scale else None,
                               self.beta if self.center else None, self.epsilon, training)
        return ops.cast(y, self.compute_dtype)
