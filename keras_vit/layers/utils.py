"""Small argument helpers shared by the layers."""

import numpy as np


def to_pair(value, name):
    """`value` as a (height, width) tuple of ints; an int means a square."""
    if isinstance(value, int):
        return (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ValueError(f"`{name}` must be an int or a (height, width) pair, got {value!r}.")
    if len(pair) != 2:
        raise ValueError(f"`{name}` must be an int or a (height, width) pair, got {value!r}.")
    for v in pair:
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise ValueError(f"`{name}` must hold positive ints, got {value!r}.")
    return pair


def dtype_config(layer):
    """`layer`'s dtype policy for its config, remembering quantized sublayers.

    `model.quantize("int8")` changes the policy of the Dense layers nested inside our blocks,
    which the blocks re-create in `build()`. To come back quantized from a `.keras` file, the
    block's config carries a `DTypePolicyMap` of those sublayers' paths (KerasHub does the
    same); the block passes its policy down when it builds them.
    """
    import keras

    quantized = {
        sub.path: sub.dtype_policy
        for sub in layer._flatten_layers(include_self=False)
        if sub.quantization_mode is not None
    }
    policy = layer.dtype_policy
    if quantized:
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            policy = policy.default_policy
        policy = keras.dtype_policies.DTypePolicyMap(default_policy=policy, policy_map=quantized)
    return keras.dtype_policies.serialize(policy)


def dropout(layer, x, training):
    """`layer(x, training=training)` for a `keras.layers.Dropout`, skipped where it is the
    identity (inference, or rate 0 as in fine-tuning). Each Keras layer call costs a fraction of
    a millisecond of Python, which eager PyTorch pays on every step; a ViT-B/16 forward holds
    37 such calls."""
    if training and layer.rate > 0:
        return layer(x, training=training)
    return x


# torchvision's ImageNet statistics (RGB, for pixels in [0, 1]), as DINOv2, MAE, DeiT-III and
# timm use them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = (None, "imagenet")


def scale_and_offset(normalization=None):
    """(scale, offset) with which `x * scale + offset` normalises RGB in [0, 255]: the
    paper's [-1, 1] (None) as two floats, or per channel for `"imagenet"` ((x / 255 - mean)
    / std) or a (mean, std) pair of per-channel sequences for pixels in [0, 1]."""
    if normalization is None:
        return 1.0 / 127.5, -1.0
    if isinstance(normalization, str):
        if normalization != "imagenet":
            raise ValueError(f"Unknown input_normalization {normalization!r}; expected None "
                             "(the paper's [-1, 1]), 'imagenet' or a (mean, std) pair.")
        normalization = (IMAGENET_MEAN, IMAGENET_STD)
    try:
        mean, std = (np.asarray(v, dtype="float64").reshape(-1) for v in normalization)
    except (TypeError, ValueError):
        raise ValueError(f"input_normalization must be None, 'imagenet' or a (mean, std) pair "
                         f"of per-channel sequences, got {normalization!r}.") from None
    if mean.shape != std.shape or not np.all(std > 0):
        raise ValueError(f"input_normalization (mean, std) needs equal lengths and std > 0, got "
                         f"{normalization!r}.")
    return (1.0 / (255.0 * std)).tolist(), (-mean / std).tolist()
