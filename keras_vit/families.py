"""The plain ViTs people fine-tune and extract features from after the ViT paper, by name:
DINOv2 (with and without registers), SigLIP's image tower, MAE and DeiT-III, in the
`keras.applications` style.

Each is `keras_vit.ViT` with the family's options (`keras_vit.architectures.FAMILY_VARIANTS`)
and loads the family's published weights by name (`keras_vit.list_weights("DINOv2S14")`) or
from a file in its HF, timm or original layout:

| family | constructors | options | input |
|---|---|---|---|
| DINOv2 (Oquab et al. 2023) | `DINOv2S14`, `DINOv2B14`, `DINOv2L14` | LayerScale | ImageNet mean/std |
| DINOv2 + registers (Darcet et al. 2024) | `DINOv2S14Reg4`, `DINOv2B14Reg4`, `DINOv2L14Reg4` | + 4 registers | ImageNet mean/std |
| SigLIP (Zhai et al. 2023) | `SigLIPB16`, `SigLIPSo400m14` | no class token, MAP head, tanh GELU | [-1, 1] |
| MAE (He et al. 2022) | `MAEB16`, `MAEL16`, `MAEH14` | fixed 2-D sin-cos positions | ImageNet mean/std |
| DeiT-III (Touvron et al. 2022) | `DeiT3S16`, `DeiT3B16`, `DeiT3L16` | LayerScale, patch-only positions | ImageNet mean/std |

DINOv2-g/14 (SwiGLU MLP) is not provided.
"""

import os

from keras_vit.architectures import FAMILY_VARIANTS
from keras_vit.model import ViT
from keras_vit.weights.loading import looks_like_path
from keras_vit.weights.registry import get_weights_entry, is_weights_name

# Backbones (no published classifier) default to include_top=False; DINOv2 to 224 px, the
# crop its image processors feed (its checkpoints' 37 x 37 table is resampled as DINOv2 does).
_BACKBONES = ("DINOv2", "SigLIP", "MAE")
_DEFAULT_SIZE = {"DINOv2": 224}

_DOCS = {
    "DINOv2": "DINOv2 (Oquab et al., *DINOv2: Learning Robust Visual Features without "
              "Supervision*, 2023): a self-distilled ViT with LayerScale, patch 14",
    "DINOv2Reg4": "DINOv2 with 4 registers (Darcet et al., *Vision Transformers Need "
                  "Registers*, ICLR 2024)",
    "SigLIP": "SigLIP's image tower (Zhai et al., *Sigmoid Loss for Language Image "
              "Pre-Training*, ICCV 2023): no class token, multi-head attention pooling",
    "MAE": "the MAE encoder (He et al., *Masked Autoencoders Are Scalable Vision Learners*, "
           "CVPR 2022): fixed 2-D sin-cos position embedding",
    "DeiT3": "DeiT-III (Touvron et al., *DeiT III: Revenge of the ViT*, ECCV 2022): LayerScale "
             "and a position embedding on the patches only",
}


def _family(name):
    for family in ("DINOv2", "SigLIP", "MAE", "DeiT3"):
        if name.startswith(family):
            return family
    raise AssertionError(name)  # pragma: no cover


def _constructor(variant_name):
    family = _family(variant_name)
    backbone = family in _BACKBONES

    def constructor(
        include_top=not backbone,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        include_preprocessing=True,
        image_size=None,
        name=None,
        **kwargs,
    ):
        architecture = dict(FAMILY_VARIANTS[variant_name])
        architecture.update(kwargs)  # the family's options may be overridden, sizes too
        # A registry name is this variant's (its entry carries the file's facts); a path is
        # read as it is.
        if isinstance(weights, str) and not looks_like_path(weights) and (
                is_weights_name(variant_name, weights) or not os.path.exists(weights)):
            weights = get_weights_entry(variant_name, weights)
        if image_size is None and input_shape is None and input_tensor is None:
            image_size = _DEFAULT_SIZE.get(family)
        return ViT(
            image_size=image_size,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing,
            name=name or variant_name.lower(),
            **architecture,
        )

    doc_key = "DINOv2Reg4" if variant_name.endswith("Reg4") else family
    constructor.__name__ = constructor.__qualname__ = variant_name
    constructor.__doc__ = f"""Instantiates {variant_name}: {_DOCS[doc_key]}.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, image_size, name: as in
            `keras_vit.ViT`. `include_top` defaults to {not backbone}{
            " (the published weights are backbones without a classifier: pass "
            "include_top=True, head='new', classes=K to fine-tune one)" if backbone else ""}.
            `weights` takes the names of `keras_vit.list_weights("{variant_name}")` or a
            checkpoint path (HF, timm or the original layout).{
            " `image_size` defaults to 224; the checkpoints' 518 px (37 x 37) position "
            "table is resampled as the weights' own code does (pass 518 for the native grid)."
            if family == "DINOv2" else
            " Without `image_size` / `input_shape` a checkpoint is used at its resolution."}
        **kwargs: other `ViT` arguments (`dropout_rate`, `head`, `pos_embed_resample`,
            `last_block_class_token_only`, ...), and the family's options
            ({", ".join(f"`{k}={v!r}`" for k, v in FAMILY_VARIANTS[variant_name].items()
                        if k not in ("patch_size", "hidden_size", "num_layers", "num_heads",
                                     "mlp_dim"))}) to override.

    Returns:
        A `keras.Model`.
    """
    return constructor


DINOv2S14 = _constructor("DINOv2S14")
DINOv2B14 = _constructor("DINOv2B14")
DINOv2L14 = _constructor("DINOv2L14")
DINOv2S14Reg4 = _constructor("DINOv2S14Reg4")
DINOv2B14Reg4 = _constructor("DINOv2B14Reg4")
DINOv2L14Reg4 = _constructor("DINOv2L14Reg4")
SigLIPB16 = _constructor("SigLIPB16")
SigLIPSo400m14 = _constructor("SigLIPSo400m14")
MAEB16 = _constructor("MAEB16")
MAEL16 = _constructor("MAEL16")
MAEH14 = _constructor("MAEH14")
DeiT3S16 = _constructor("DeiT3S16")
DeiT3B16 = _constructor("DeiT3B16")
DeiT3L16 = _constructor("DeiT3L16")
