"""`TokenPooling`: the image representation y taken from the encoder's output (Eq. 4)."""

import keras
from keras import ops

POOLINGS = ("token", "avg", "max")


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Reduces tokens (B, T, D) to (B, D).

    Args:
        method: `"token"`: the class token's row (z_L^0 in Eq. 4); `"avg"`: the mean over all
            tokens (the paper's global average pooling, "gap"); `"max"`: the maximum.
        num_prefix_tokens: leading tokens that `"avg"` and `"max"` leave out (register
            tokens, and the class token of a model that keeps one but pools its patches, as
            MAE's fine-tuning and timm do); 0 pools every token.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> tuple(TokenPooling("avg")(np.ones((2, 5, 8), "float32")).shape)
    (2, 8)
    """

    def __init__(self, method="token", num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        if method not in POOLINGS:
            raise ValueError(f"Unknown pooling {method!r}; expected one of {', '.join(POOLINGS)}.")
        self.method = method
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, x):
        if self.method == "token":
            return x[:, 0]
        if self.num_prefix_tokens:
            x = x[:, self.num_prefix_tokens:]
        if self.method == "avg":
            return ops.mean(x, axis=1)
        return ops.max(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"method": self.method, "num_prefix_tokens": self.num_prefix_tokens})
        return config
