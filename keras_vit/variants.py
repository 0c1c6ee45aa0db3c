"""The paper's model variants (Table 1, plus Ti/S from the AugReg follow-up and the hybrid).

Each constructor is `ViT(...)` with the architecture fixed and the `keras.applications`
arguments free, e.g. `ViTB16(include_top=False, pooling="token", input_shape=(384, 384, 3))`.
"""

import os

from keras_vit.architectures import VARIANTS  # noqa: F401  (this module's interface)
from keras_vit.model import ViT
from keras_vit.weights.loading import looks_like_path
from keras_vit.weights.registry import get_weights_entry, is_weights_name


def _variant(variant_name, doc_name):
    def constructor(
        include_top=True,
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
        architecture = dict(VARIANTS[variant_name])
        patch_size = kwargs.pop("patch_size", architecture["patch_size"])
        if patch_size != architecture["patch_size"]:
            # FlexiViT's use: this variant's weights at another patch size (the patch embedding
            # resampled by `patch_embed_resample`). A registry name is this variant's: it is
            # passed on as its entry, since under the new patch size the architecture would
            # name another variant's weights (B/16 at /8 is B/8's size).
            architecture["patch_size"] = patch_size
            # As `resolve` reads a name: a registry name wins over a same-named file or folder;
            # another name that is no path is refused with this variant's valid names.
            if isinstance(weights, str) and not looks_like_path(weights) and (
                    is_weights_name(variant_name, weights) or not os.path.exists(weights)):
                weights = get_weights_entry(variant_name, weights)
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
            **kwargs,
        )

    constructor.__name__ = constructor.__qualname__ = variant_name
    constructor.__doc__ = f"""Instantiates {doc_name}.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, image_size, name: as in `keras_vit.ViT`.
            `weights` takes the names of `keras_vit.list_weights("{variant_name}")` (e.g.
            `"imagenet"`, `"imagenet21k"`) or a checkpoint path; without `image_size` /
            `input_shape` a checkpoint is used at its native resolution.
        **kwargs: other `ViT` options that do not change the architecture's size
            (`classifier`, `representation_size`, `dropout_rate`, `gelu_approximate`,
            `head`, `pos_embed_resample`, ...), and `patch_size` with
            `patch_embed_resample="pi"`: the weights at another patch size (FlexiViT).

    Returns:
        A `keras.Model`.
    """
    return constructor


ViTTi16 = _variant("ViTTi16", "ViT-Ti/16")
ViTS16 = _variant("ViTS16", "ViT-S/16")
ViTS32 = _variant("ViTS32", "ViT-S/32")
ViTB8 = _variant("ViTB8", "ViT-B/8")
ViTB16 = _variant("ViTB16", "ViT-B/16")
ViTB32 = _variant("ViTB32", "ViT-B/32")
ViTL16 = _variant("ViTL16", "ViT-L/16")
ViTL32 = _variant("ViTL32", "ViT-L/32")
ViTH14 = _variant("ViTH14", "ViT-H/14")
ViTR50B16 = _variant("ViTR50B16", "R50+ViT-B/16 (hybrid)")
