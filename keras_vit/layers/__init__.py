"""The paper's building blocks as Keras layers, one module per concept."""

from keras_vit.layers.attention import MultiHeadDotProductAttention
from keras_vit.layers.attention_pooling import MultiheadAttentionPooling
from keras_vit.layers.dense import Dense
from keras_vit.layers.layer_norm import LayerNorm
from keras_vit.layers.layer_scale import LayerScale
from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.patches import Patches
from keras_vit.layers.pooling import TokenPooling
from keras_vit.layers.register_tokens import RegisterTokens
from keras_vit.layers.resnet import ResidualUnit, StdConv2D
from keras_vit.layers.transformer_block import MlpBlock, TransformerBlock
