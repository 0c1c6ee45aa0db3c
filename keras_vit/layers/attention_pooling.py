"""`MultiheadAttentionPooling`: a learned query attends over the tokens (big_vision's `MAPHead`,
the pooled output of SigLIP's vision tower; Lee et al., *Set Transformer*, ICML 2019, "PMA").

    a = MHA(probe, z_L)            one learned query, keys and values from the L tokens
    y = a + MLP(LN(a))             a pre-LN residual MLP, as in an encoder block

Not in the ViT paper: `ViT(classifier="map")` reads the image representation y this way
instead of from the class token (Eq. 4) or a global average; the final LayerNorm comes first,
as in big_vision and HF's `SiglipVisionModel` (`post_layernorm`, then `head`).
Weights keep big_vision's names (`probe`, `MultiHeadDotProductAttention_0/{query,key,value,
out}`, `LayerNorm_0`, `MlpBlock_0/Dense_{0,1}`) in the official (D, H, D/H) layouts.
"""

import math

import keras
from keras import ops

from keras_vit.layers.attention import _fan_preserving_glorot
from keras_vit.layers.layer_norm import LayerNorm
from keras_vit.layers.transformer_block import LAYER_NORM_EPSILON, MlpBlock
from keras_vit.layers.utils import dtype_config


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiheadAttentionPooling(keras.layers.Layer):
    """Pools tokens (B, T, D) to (B, D) with one learned query ("MAP" head).

    Args:
        num_heads: attention heads H; must divide D.
        mlp_dim: hidden width of the MLP (default 4 D; SigLIP uses the encoder's `mlp_dim`).
        gelu_approximate: tanh-approximate GELU in the MLP (big_vision, SigLIP) or exact erf.
        layer_norm_epsilon: epsilon of the LayerNorm before the MLP.
        num_prefix_tokens: leading tokens left out of the pooling (class and register tokens,
            as timm's `pool_include_prefix=False`); 0 for SigLIP, which has none.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> pool = MultiheadAttentionPooling(num_heads=2, mlp_dim=16)
    >>> tuple(pool(np.zeros((3, 5, 8), "float32")).shape)
    (3, 8)
    """

    def __init__(self, num_heads, mlp_dim=None, gelu_approximate=True,
                 layer_norm_epsilon=LAYER_NORM_EPSILON, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.gelu_approximate = gelu_approximate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_prefix_tokens = int(num_prefix_tokens)

    def build(self, input_shape):
        d = input_shape[-1]
        if d % self.num_heads:
            raise ValueError(f"hidden_size {d} is not divisible by num_heads {self.num_heads}.")
        h, dh = self.num_heads, d // self.num_heads
        self.head_dim = dh
        # big_vision: Xavier-uniform probe and kernels, zero biases.
        self.probe = self.add_weight(name="probe", shape=(1, 1, d), initializer="glorot_uniform")
        for name in ("query", "key", "value"):
            setattr(self, f"{name}_kernel", self.add_weight(
                name=f"{name}_kernel", shape=(d, h, dh), initializer=_fan_preserving_glorot(d, d)))
            setattr(self, f"{name}_bias", self.add_weight(
                name=f"{name}_bias", shape=(h, dh), initializer="zeros"))
        self.out_kernel = self.add_weight(name="out_kernel", shape=(h, dh, d),
                                          initializer=_fan_preserving_glorot(d, d))
        self.out_bias = self.add_weight(name="out_bias", shape=(d,), initializer="zeros")
        policy = self.dtype_policy
        self.layer_norm = LayerNorm(epsilon=self.layer_norm_epsilon, dtype=policy,
                                    name="LayerNorm_0")
        self.mlp = MlpBlock(self.mlp_dim or 4 * d, gelu_approximate=self.gelu_approximate,
                            dtype=policy, name="MlpBlock_0")
        self.layer_norm.build((None, 1, d))
        self.mlp.build((None, 1, d))
        self.built = True

    def call(self, x, training=None):
        x = x[:, self.num_prefix_tokens:]
        dtype = x.dtype
        cast = lambda w: ops.cast(w, dtype)  # noqa: E731
        probe = cast(self.probe)[0, 0]
        # q from the probe (the same for every image), scaled by 1/sqrt(D/H); k, v from tokens.
        query = (ops.einsum("d,dhk->hk", probe, cast(self.query_kernel)) + cast(self.query_bias)) \
            * ops.cast(1.0 / math.sqrt(self.head_dim), dtype)
        key = ops.einsum("btd,dhk->bthk", x, cast(self.key_kernel)) + cast(self.key_bias)
        value = ops.einsum("btd,dhk->bthk", x, cast(self.value_kernel)) + cast(self.value_bias)
        logits = ops.einsum("hk,bthk->bht", query, key)
        probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), dtype)
        attended = ops.einsum("bht,bthk->bhk", probs, value)
        pooled = ops.einsum("bhk,hkd->bd", attended, cast(self.out_kernel)) + cast(self.out_bias)
        pooled = pooled[:, None, :]
        pooled = pooled + self.mlp(self.layer_norm(pooled), training=training)
        return pooled[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def official_variables(self):
        """{big_vision key under `MAPHead_0/`: variable} (see `keras_vit.checkpoint`)."""
        mha = "MultiHeadDotProductAttention_0/"
        variables = {"probe": self.probe,
                     "LayerNorm_0/scale": self.layer_norm.gamma,
                     "LayerNorm_0/bias": self.layer_norm.beta}
        for name in ("query", "key", "value", "out"):
            variables[f"{mha}{name}/kernel"] = getattr(self, f"{name}_kernel")
            variables[f"{mha}{name}/bias"] = getattr(self, f"{name}_bias")
        for i, dense in enumerate((self.mlp.dense_0, self.mlp.dense_1)):
            variables[f"MlpBlock_0/Dense_{i}/kernel"] = dense.kernel
            variables[f"MlpBlock_0/Dense_{i}/bias"] = dense.bias
        return variables

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "gelu_approximate": self.gelu_approximate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "num_prefix_tokens": self.num_prefix_tokens,
            "dtype": dtype_config(self),
        })
        return config
