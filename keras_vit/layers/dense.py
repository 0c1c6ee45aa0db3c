"""`Dense` and `fold_scale_and_offset`: the encoder's projections, x W + b over the last axis.

Every projection in the encoder (patch embedding, q/k/v, attention output, the MLP's two layers)
is a matrix product followed by a bias: `keras_vit.kernels.affine`, whose implementation per
backend (the bias inside the product, oneDNN where it measured faster, TensorFlow's fused
`MatMul + BiasAdd`) lives in `keras_vit.kernels`.
"""

import keras
from keras import ops

from keras_vit.kernels import affine

__all__ = ["Dense", "affine", "fold_scale_and_offset"]


def fold_scale_and_offset(kernel, bias, scale, offset):
    """The kernel and bias of `(x * scale + offset) @ kernel + bias` as a product of x:
    `(scale[:, None] * kernel, offset @ kernel + bias)`.

    A layer norm's `gamma` and `beta` (`LayerNorm.folds_into_next_product`) applied by the
    product after it: work on the (D_in, D_out) kernel instead of the (tokens, D_in)
    activation, and the same function (float rounding aside).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> k, b = fold_scale_and_offset(np.ones((2, 3), "float32"), np.zeros(3, "float32"),
    ...                              np.array([2.0, 3.0], "float32"), np.ones(2, "float32"))
    >>> keras.ops.convert_to_numpy(k)[:, 0].tolist(), keras.ops.convert_to_numpy(b).tolist()
    ([2.0, 3.0], [2.0, 2.0, 2.0])
    """
    kernel_scaled = ops.expand_dims(scale, -1) * kernel
    return kernel_scaled, ops.squeeze(ops.matmul(ops.expand_dims(offset, 0), kernel), 0) + bias


@keras.saving.register_keras_serializable(package="keras_vit")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose bias add is fused into the product (see `affine`).

    Same arguments, weights and results as `keras.layers.Dense`. A bias-free layer takes Keras'
    own call, and so does a quantized one (Keras routes it to `quantized_call`); LoRA is kept,
    since `self.kernel` already includes the low-rank update.

    Example:

    >>> import numpy as np
    >>> tuple(Dense(3, kernel_initializer="ones")(np.ones((1, 2), "float32")).shape)
    (1, 3)
    """

    def call(self, inputs, training=None):
        if self.bias is None:
            return super().call(inputs, training=training)
        return self.activation(affine(inputs, self.kernel, self.bias, training))

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras' type check refuses subclasses of Dense; this one changes only the float call,
        # so Keras' quantized kernels apply as they are.
        super().quantize(mode, type_check=False, config=config)
