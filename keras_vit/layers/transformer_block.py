"""`TransformerBlock`: one pre-LN encoder layer, the paper's Eq. 2-3.

    z'_l = MSA(LN(z_{l-1})) + z_{l-1}      (Eq. 2)
    z_l  = MLP(LN(z'_l)) + z'_l             (Eq. 3)

Sublayer names follow the official checkpoint (`LayerNorm_0`, `MultiHeadDotProductAttention_1`,
`LayerNorm_2`, `MlpBlock_3` with `Dense_0`/`Dense_1`).
"""

import keras
from keras import ops

from keras_vit.layers.activations import gelu
from keras_vit.layers.attention import MultiHeadDotProductAttention, token_output_spec
from keras_vit.layers.dense import Dense, affine, fold_scale_and_offset
from keras_vit.layers.layer_norm import LayerNorm
from keras_vit.layers.layer_scale import LayerScale
from keras_vit.layers.utils import dropout, dtype_config

# The official LayerNorm epsilon (Keras defaults to 1e-3, PyTorch to 1e-5).
LAYER_NORM_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="keras_vit")
class MlpBlock(keras.layers.Layer):
    """Dense(mlp_dim) -> GELU -> Dropout -> Dense(D) -> Dropout.

    Args:
        mlp_dim: width of the hidden layer.
        dropout_rate: dropout after each dense layer, as in the paper.
        gelu_approximate: tanh-approximate GELU (the official checkpoints' training) when True,
            exact erf GELU (timm, HF transformers) when False.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        x: tokens (..., D).
        training: whether dropout is active.
        input_scale_and_offset: optional (scale, offset), each (D,): the MLP of
            `x * scale + offset`, both folded into the first product (see
            `MultiHeadDotProductAttention`).

    Example:

    >>> import numpy as np
    >>> tuple(MlpBlock(mlp_dim=16)(np.zeros((1, 3, 8), "float32")).shape)
    (1, 3, 8)
    """

    def __init__(self, mlp_dim, dropout_rate=0.0, gelu_approximate=True, **kwargs):
        super().__init__(**kwargs)
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.gelu_approximate = gelu_approximate

    def build(self, input_shape):
        # Official init: Xavier-uniform kernels, tiny normal biases.
        bias_init = keras.initializers.RandomNormal(stddev=1e-6)
        self.dense_0 = Dense(
            self.mlp_dim, kernel_initializer="glorot_uniform", bias_initializer=bias_init,
            dtype=self.dtype_policy, name="Dense_0",
        )
        self.dense_1 = Dense(
            input_shape[-1], kernel_initializer="glorot_uniform", bias_initializer=bias_init,
            dtype=self.dtype_policy, name="Dense_1",
        )
        self.dense_0.build(input_shape)
        self.dense_1.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.built = True

    def call(self, x, training=None, input_scale_and_offset=None):
        # Token by token, so on the (tokens, D) rows: without XLA, TensorFlow then fuses the
        # first product, its bias and GELU into one oneDNN kernel (a reshape between them
        # hides the pattern); other backends take the same products either way.
        rows = ops.reshape(x, (-1, x.shape[-1]))
        if input_scale_and_offset is None:
            y = self.dense_0(rows)
        elif self.dense_0.quantization_mode:  # quantized kernels take no fold
            scale, offset = input_scale_and_offset
            y = self.dense_0(rows * scale + offset)
        else:  # the MLP of x * scale + offset, both folded into the first product
            kernel, bias = fold_scale_and_offset(
                self.dense_0.kernel, self.dense_0.bias, *input_scale_and_offset)
            y = affine(rows, kernel, bias, training)
        y = gelu(y, self.gelu_approximate, training)
        y = dropout(self.dropout, y, training)
        y = dropout(self.dropout, self.dense_1(y), training)
        return ops.reshape(y, ops.shape(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mlp_dim": self.mlp_dim,
                "dropout_rate": self.dropout_rate,
                "gelu_approximate": self.gelu_approximate,
                "dtype": dtype_config(self),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """Pre-LN multi-head self-attention and MLP, each with a residual connection.

    Args:
        num_heads: attention heads H; must divide the hidden size.
        mlp_dim: width of the MLP's hidden layer.
        dropout_rate: dropout after the attention output and after each MLP dense layer.
        attention_dropout_rate: dropout on attention probabilities (0 in the paper).
        gelu_approximate: tanh-approximate GELU (official) or exact erf (`False`).
        stochastic_depth_rate: probability of dropping each residual branch per example during
            training (not in the paper; useful for from-scratch training on small data).
        layer_norm_epsilon: 1e-6, the official value.
        relative_position: use the paper's relative-position attention (see
            `MultiHeadDotProductAttention`).
        layer_scale_init_value: None (the paper's block) or a float: each residual branch is
            scaled per channel by a `LayerScale` (`LayerScale_1` after the attention,
            `LayerScale_3` after the MLP) initialised to this value, as in CaiT, DeiT-III
            and DINOv2. The name is `keras.applications.ConvNeXt`'s.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        x: tokens (B, T, D).
        training: whether dropout and stochastic depth are active.
        return_attention_scores: also return the attention probabilities (B, H, T, T).
        num_queries: if set, compute only the first `num_queries` output tokens, (B, Q, D):
            the same numbers as the first rows of the full output (the attention still reads
            keys and values from all T tokens; the MLP and residuals are row-wise), without
            the work for the other rows. `ViT` passes 1 to its last block when only the class
            token's row is read (Eq. 4), which saves nearly that block's whole cost.

    Example:

    >>> import numpy as np
    >>> block = TransformerBlock(num_heads=2, mlp_dim=16)
    >>> y, probs = block(np.zeros((1, 5, 8), "float32"), return_attention_scores=True)
    >>> tuple(y.shape), tuple(probs.shape)
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        gelu_approximate=True,
        stochastic_depth_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        relative_position=False,
        layer_scale_init_value=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.gelu_approximate = gelu_approximate
        self.stochastic_depth_rate = stochastic_depth_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.relative_position = relative_position
        self.layer_scale_init_value = layer_scale_init_value
        self.seed_generator = keras.random.SeedGenerator() if stochastic_depth_rate else None

    def build(self, input_shape):
        eps = self.layer_norm_epsilon
        policy = self.dtype_policy
        self.layer_norm_0 = LayerNorm(
            epsilon=eps, dtype=policy, name="LayerNorm_0")
        self.attention = MultiHeadDotProductAttention(
            self.num_heads,
            attention_dropout_rate=self.attention_dropout_rate,
            relative_position=self.relative_position,
            dtype=policy,
            name="MultiHeadDotProductAttention_1",
        )
        self.layer_norm_2 = LayerNorm(
            epsilon=eps, dtype=policy, name="LayerNorm_2")
        self.mlp = MlpBlock(
            self.mlp_dim,
            dropout_rate=self.dropout_rate,
            gelu_approximate=self.gelu_approximate,
            dtype=policy,
            name="MlpBlock_3",
        )
        for layer in (self.layer_norm_0, self.attention, self.layer_norm_2, self.mlp):
            layer.build(input_shape)
        if self.layer_scale_init_value is not None:
            self.layer_scale_1, self.layer_scale_3 = (
                LayerScale(self.layer_scale_init_value, dtype=policy, name=name)
                for name in ("LayerScale_1", "LayerScale_3"))
            self.layer_scale_1.build(input_shape)
            self.layer_scale_3.build(input_shape)
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.built = True

    def _drop_path(self, branch, training):
        """Stochastic depth: zero the whole residual branch for some examples, rescale the rest."""
        if not (training and self.stochastic_depth_rate):
            return branch
        keep = 1.0 - self.stochastic_depth_rate
        shape = (ops.shape(branch)[0], 1, 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return branch * ops.cast(mask / keep, branch.dtype)

    def _layer_norm(self, layer_norm, x, training):
        """LN(x) as (input, scale and offset for the next product): (LN(x), None), or, where
        `LayerNorm.folds_into_next_product`, the normalised x and (gamma, beta)."""
        if not layer_norm.folds_into_next_product():
            return layer_norm(x), None
        scale_and_offset = (ops.convert_to_tensor(layer_norm.gamma),
                            ops.convert_to_tensor(layer_norm.beta))
        return layer_norm.normalise(x, training), scale_and_offset

    def call(self, x, training=None, return_attention_scores=False, num_queries=None):
        y, scale_and_offset = self._layer_norm(self.layer_norm_0, x, training)
        attention_args = {"training": training, "num_queries": num_queries,
                          "input_scale_and_offset": scale_and_offset}
        if return_attention_scores:
            y, probs = self.attention(y, return_attention_scores=True, **attention_args)
        else:
            y = self.attention(y, **attention_args)
        if num_queries is not None:
            x = x[:, :num_queries]
        y = dropout(self.dropout, y, training)
        if self.layer_scale_init_value is not None:
            y = self.layer_scale_1(y)
        x = x + self._drop_path(y, training)  # Eq. 2
        y, scale_and_offset = self._layer_norm(self.layer_norm_2, x, training)
        y = self.mlp(y, training=training, input_scale_and_offset=scale_and_offset)
        if self.layer_scale_init_value is not None:
            y = self.layer_scale_3(y)
        x = x + self._drop_path(y, training)  # Eq. 3
        if return_attention_scores:
            return x, probs
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x, training=None, return_attention_scores=False,
                            num_queries=None):
        return token_output_spec(self, x, return_attention_scores, num_queries)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "gelu_approximate": self.gelu_approximate,
                "stochastic_depth_rate": self.stochastic_depth_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "relative_position": self.relative_position,
                "layer_scale_init_value": self.layer_scale_init_value,
                "dtype": dtype_config(self),
            }
        )
        return config
