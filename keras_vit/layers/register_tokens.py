"""`RegisterTokens`: learned extra tokens the encoder may use as scratch space (Darcet et al.,
*Vision Transformers Need Registers*, ICLR 2024).

Registers are inserted after the class token and before the patches, after the position
embedding (they carry none), and are discarded at the output: DINOv2 with registers
(`dinov2/models/vision_transformer.py`, HF `Dinov2WithRegistersModel`, timm `reg_tokens`).
Not in the ViT paper: `ViT(num_register_tokens=R)` adds this layer after the `PatchEncoder`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class RegisterTokens(keras.layers.Layer):
    """Inserts `num_tokens` learned tokens after the first `num_leading_tokens` tokens.

    Args:
        num_tokens: R, the number of registers (4 in the DINOv2 checkpoints). The name is HF's
            and KerasHub's (`num_register_tokens`).
        num_leading_tokens: tokens kept in front of the registers: 1 for the class token
            (the registers then sit between it and the patches, as in DINOv2), 0 without one.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> tokens = np.arange(2 * 5 * 4, dtype="float32").reshape(2, 5, 4)  # class + 4 patches
    >>> y = keras.ops.convert_to_numpy(RegisterTokens(3)(tokens))
    >>> y.shape
    (2, 8, 4)
    >>> bool((y[:, 4:] == tokens[:, 1:]).all())   # the patches follow the registers
    True
    """

    def __init__(self, num_tokens, num_leading_tokens=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}.")
        self.num_tokens = num_tokens
        self.num_leading_tokens = int(num_leading_tokens)

    def build(self, input_shape):
        # DINOv2's initialisation (normal, std 1e-6).
        self.registers = self.add_weight(
            name="registers", shape=(1, self.num_tokens, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=1e-6))
        self.built = True

    def call(self, x):
        width = x.shape[-1]
        registers = ops.broadcast_to(ops.cast(self.registers, x.dtype),
                                     (ops.shape(x)[0], self.num_tokens, width))
        lead = self.num_leading_tokens
        return ops.concatenate([x[:, :lead], registers, x[:, lead:]], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + self.num_tokens
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"num_tokens": self.num_tokens,
                       "num_leading_tokens": self.num_leading_tokens})
        return config
