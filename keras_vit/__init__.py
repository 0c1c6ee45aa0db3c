"""keras-vit: the Vision Transformer (Dosovitskiy et al., ICLR 2021) for Keras 3.

Runs unchanged on TensorFlow, JAX and PyTorch (`KERAS_BACKEND`).
"""

from keras_vit.layers import (
    LayerScale,
    MlpBlock,
    MultiHeadDotProductAttention,
    MultiheadAttentionPooling,
    PatchEncoder,
    Patches,
    RegisterTokens,
    ResidualUnit,
    StdConv2D,
    TokenPooling,
    TransformerBlock,
)
from keras_vit import distribution, evaluation, optimizers, resolution
from keras_vit.distribution import layout_map
from keras_vit.features import TokensToSpatial, feature_extractor
from keras_vit.masked_patch_prediction import MaskedPatchPrediction
from keras_vit.model import ViT, VisionTransformer
from keras_vit.preprocessing import preprocess_input
from keras_vit.remat import RematTransformerBlock
from keras_vit.schedules import WarmupDecay
from keras_vit.variants import (
    VARIANTS,
    ViTB8,
    ViTB16,
    ViTB32,
    ViTH14,
    ViTL16,
    ViTL32,
    ViTR50B16,
    ViTS16,
    ViTS32,
    ViTTi16,
)
from keras_vit.families import (
    DeiT3B16,
    DeiT3L16,
    DeiT3S16,
    DINOv2B14,
    DINOv2B14Reg4,
    DINOv2L14,
    DINOv2L14Reg4,
    DINOv2S14,
    DINOv2S14Reg4,
    MAEB16,
    MAEH14,
    MAEL16,
    SigLIPB16,
    SigLIPSo400m14,
)
from keras_vit.architectures import FAMILY_VARIANTS
from keras_vit.imagenet import decode_predictions
from keras_vit.weights import (
    download_weights,
    get_weights_entry,
    list_weights,
    load_weights,
    pi_resize_patch_embedding,
)

__version__ = "0.1.0"
