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

from keras_vit import kernels
from keras_vit.layers.dense import affine, fold_scale_and_offset
from keras_vit.layers.utils import dropout


def _fan_preserving_glorot(fan_in, fan_out, seed=None):
    """Xavier-uniform over the 2-D fans of a multi-axis kernel (the official init)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


def _scaled(weight, scale):
    return weight if scale == 1.0 else weight * ops.cast(scale, weight.dtype)


def token_output_spec(layer, x, return_attention_scores, num_queries):
    """Symbolic outputs of a layer mapping tokens (B, T, D) to the first `num_queries` rows
    (all T when None), with (B, H, Q, T) probabilities when asked for them."""
    batch, tokens, width = x.shape
    queries = tokens if num_queries is None else num_queries
    out = keras.KerasTensor((batch, queries, width), dtype=layer.compute_dtype)
    if not return_attention_scores:
        return out
    probs = keras.KerasTensor((batch, layer.num_heads, queries, tokens), dtype=layer.compute_dtype)
    return out, probs


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
        num_queries: if set, only the first `num_queries` tokens ask queries (keys and values
            still come from all T tokens): the output is (B, num_queries, D) and equals the
            first rows of the full output, probabilities (B, H, num_queries, T). ViT uses 1 in
            its last block when only the class token is read.
        input_scale_and_offset: optional (scale, offset), each (D,): attend over
            `x * scale + offset` by folding both into the q/k/v product
            (`fold_scale_and_offset`); `TransformerBlock` passes its layer norm's gamma and beta
            when `LayerNorm.folds_into_next_product`.

    Example:

    >>> import numpy as np
    >>> tuple(MultiHeadDotProductAttention(num_heads=2)(np.zeros((1, 5, 8), "float32")).shape)
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

    def _qkv(self, x, query_scale=1.0, training=None, input_scale_and_offset=None):
        """Queries, keys and values (B, T, 3, H, D/H) from one matrix product, the queries
        times `query_scale`.

        The three official (D, H, D/H) kernels are laid side by side as one (D, 3D) matrix:
        one large product runs closer to the machine's peak than three small ones. The scale
        multiplies the query kernel and bias, (D, D) and (D,), rather than the (B, T, D)
        queries: the same numbers (exactly so for 64-wide heads, whose 1/8 is a power of two),
        and no pass over the queries, forward or backward, where no compiler fuses it in.
        """
        d = self.num_heads * self.head_dim
        names = ("query", "key", "value")
        scales = (query_scale, 1.0, 1.0)
        kernel = ops.concatenate(
            [_scaled(ops.reshape(getattr(self, f"{n}_kernel"), (d, d)), c)
             for n, c in zip(names, scales)], axis=1)
        bias = ops.concatenate(
            [_scaled(ops.reshape(getattr(self, f"{n}_bias"), (d,)), c)
             for n, c in zip(names, scales)])
        if input_scale_and_offset is not None:
            kernel, bias = fold_scale_and_offset(kernel, bias, *input_scale_and_offset)
        qkv = affine(x, ops.cast(kernel, x.dtype), ops.cast(bias, x.dtype), training)
        return ops.reshape(qkv, (-1, ops.shape(x)[1], 3, self.num_heads, self.head_dim))

    def _relative_bias(self, query):
        """Logits of the content queries (B, H, Q, D/H) (the first Q of the T tokens) against
        the offset embeddings, (B, H, Q, T)."""
        t = self.num_tokens
        logits = ops.einsum("bhqk,rhk->bhqr", query, ops.cast(self.relative_embedding, query.dtype))
        # offset index for (query i, key j) is i - j + T - 1, in [0, 2T - 2].
        index = ops.arange(query.shape[2])[:, None] - ops.arange(t)[None, :] + (t - 1)
        return ops.take_along_axis(logits, index[None, None, :, :], axis=-1)

    def call(self, x, training=None, return_attention_scores=False, num_queries=None,
             input_scale_and_offset=None):
        num_queries = x.shape[1] if num_queries is None else num_queries
        # Eq. 5-7: q, k, v = z U_qkv, the queries scaled by 1/sqrt(D_h) through their kernel;
        # A = softmax(q k^T / sqrt(D_h)) (+ relative logits, Appendix D.4); SA(z) = A v.
        qkv = self._qkv(x, query_scale=1.0 / math.sqrt(self.head_dim), training=training,
                        input_scale_and_offset=input_scale_and_offset)
        attention_dropout = None
        if training and self.attention_dropout_rate > 0:
            attention_dropout = lambda probs: dropout(self.dropout, probs, training)  # noqa: E731
        attended, probs = kernels.attention(
            qkv, num_queries=num_queries,
            logit_bias=self._relative_bias if self.relative_position else None,
            return_probabilities=return_attention_scores, dropout=attention_dropout,
            training=training)
        # Eq. 8: MSA(z) = [SA_1(z); ...; SA_k(z)] U_msa.
        d = self.num_heads * self.head_dim
        attended = ops.reshape(attended, (-1, ops.shape(attended)[1], d))  # Q: maybe unknown
        out = affine(attended, ops.cast(ops.reshape(self.out_kernel, (d, d)), x.dtype),
                     ops.cast(self.out_bias, x.dtype), training)
        if return_attention_scores:
            return out, probs
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x, training=None, return_attention_scores=False,
                            num_queries=None, input_scale_and_offset=None):
        return token_output_spec(self, x, return_attention_scores, num_queries)

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
