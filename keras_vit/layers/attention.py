"""`MultiHeadDotProductAttention`: the paper's MSA (Appendix A, Eq. 5-8).

Kernels are stored in the official layout so checkpoints map 1:1: query/key/value kernels
(D, H, D/H) with biases (H, D/H), output kernel (H, D/H, D) with bias (D,).

Optionally adds the paper's relative attention (Appendix D.4): a learned embedding per
query-key offset; the content query attends to those embeddings, and the resulting logits are
added as a bias to the main attention logits before the softmax.
"""

import math

import keras
from keras import ops


def _fan_preserving_glorot(fan_in, fan_out, seed=None):
    """Xavier-uniform over the 2-D fans of a multi-axis kernel (the official init)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadDotProductAttention(keras.layers.Layer):
    """Multi-head self-attention with the official checkpoint layout.

    Args:
        num_heads: H. Must divide the hidden size D (the input's last axis).
        attention_dropout_rate: dropout on the attention probabilities (0 in the paper).
        relative_position: add the paper's learned relative-position attention bias. The
            offsets are 1-D, between token indices of the sequence (class token included), as
            in the paper's Appendix D.4; the table has one (H, D/H) embedding per offset.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        x: tokens (B, T, D).
        training: whether dropout is active.
        return_attention_scores: also return the softmax probabilities (B, H, T, T).

    Example:

    >>> import numpy as np
    >>> MultiHeadDotProductAttention(num_heads=2)(np.zeros((1, 5, 8), "float32")).shape
    (1, 5, 8)
    """

    def __init__(self, num_heads, attention_dropout_rate=0.0, relative_position=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.relative_position = relative_position

    def build(self, input_shape):
        num_tokens, d = input_shape[1], input_shape[-1]
        if d % self.num_heads:
            raise ValueError(
                f"hidden_size {d} is not divisible by num_heads {self.num_heads}."
            )
        h, dh = self.num_heads, d // self.num_heads
        self.head_dim = dh
        for name in ("query", "key", "value"):
            kernel = self.add_weight(
                name=f"{name}_kernel", shape=(d, h, dh), initializer=_fan_preserving_glorot(d, d)
            )
            bias = self.add_weight(name=f"{name}_bias", shape=(h, dh), initializer="zeros")
            setattr(self, f"{name}_kernel", kernel)
            setattr(self, f"{name}_bias", bias)
        self.out_kernel = self.add_weight(
            name="out_kernel", shape=(h, dh, d), initializer=_fan_preserving_glorot(d, d)
        )
        self.out_bias = self.add_weight(name="out_bias", shape=(d,), initializer="zeros")
        if self.relative_position:
            if num_tokens is None:
                raise ValueError("Relative attention needs a fixed number of tokens.")
            self.num_tokens = num_tokens
            self.relative_embedding = self.add_weight(
                name="relative_embedding",
                shape=(2 * num_tokens - 1, h, dh),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        self.dropout = keras.layers.Dropout(self.attention_dropout_rate, name="dropout")
        self.built = True

    def _project(self, x, name):
        kernel = getattr(self, f"{name}_kernel")
        return ops.einsum("btd,dhk->bthk", x, kernel) + getattr(self, f"{name}_bias")

    def _relative_bias(self, query):
        """Logits of the content query against the offset embeddings, gathered to (B,H,T,T)."""
        t = self.num_tokens
        logits = ops.einsum("bqhk,rhk->bhqr", query, ops.cast(self.relative_embedding, query.dtype))
        # offset index for (query i, key j) is i - j + T - 1, in [0, 2T - 2].
        positions = ops.arange(t)
        index = positions[:, None] - positions[None, :] + (t - 1)
        return ops.take_along_axis(logits, index[None, None, :, :], axis=-1)

    def call(self, x, training=None, return_attention_scores=False):
        scale = 1.0 / math.sqrt(self.head_dim)
        query = self._project(x, "query") * ops.cast(scale, x.dtype)
        key = self._project(x, "key")
        value = self._project(x, "value")
        bias = self._relative_bias(query) if self.relative_position else None

        need_probs = return_attention_scores or (training and self.attention_dropout_rate > 0)
        if need_probs:
            logits = ops.einsum("bqhk,bthk->bhqt", query, key)
            if bias is not None:
                logits = logits + bias
            # Softmax in float32 even under mixed precision.
            probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), x.dtype)
            attended = ops.einsum("bhqt,bthk->bqhk", self.dropout(probs, training=training), value)
        else:
            # Fused kernels where the backend has them; the query is already scaled.
            attended = ops.dot_product_attention(query, key, value, bias=bias, scale=1.0)
            probs = None
        out = ops.einsum("bqhk,hkd->bqd", attended, self.out_kernel) + self.out_bias
        if return_attention_scores:
            return out, probs
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "attention_dropout_rate": self.attention_dropout_rate,
                "relative_position": self.relative_position,
            }
        )
        return config
