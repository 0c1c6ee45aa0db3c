"""Pretrained weights: the registry of published checkpoints, verified downloads, loading.

    keras_vit.list_weights("ViTB16")          # names for weights=
    keras_vit.ViTB16(weights="imagenet")      # 384 px AugReg ImageNet-1k classifier
    keras_vit.ViTB16(weights="imagenet21k", include_top=True, head="new", classes=10)
    keras_vit.load_weights(model, "path/to/hf_dir_or_timm.safetensors_or.npz")

See `docs/pretrained_weights.md`.
"""

from keras_vit.weights.download import (
    WeightsDownloadError,
    WeightsIntegrityError,
    download_weights,
)
from keras_vit.weights.loading import load_weights, plan_weights
from keras_vit.patch_resize import pi_resize_patch_embedding
from keras_vit.weights.registry import (
    ALIASES,
    REGISTRY,
    WeightsEntry,
    get_weights_entry,
    list_weights,
)

__all__ = [
    "ALIASES",
    "REGISTRY",
    "WeightsDownloadError",
    "WeightsEntry",
    "WeightsIntegrityError",
    "download_weights",
    "get_weights_entry",
    "list_weights",
    "load_weights",
    "pi_resize_patch_embedding",
    "plan_weights",
]
