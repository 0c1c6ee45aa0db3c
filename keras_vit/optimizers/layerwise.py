"""Layer-wise learning-rate decay (BEiT, Bao et al. 2021; timm's `layer_decay`) from a model.

Fine-tuning a pre-trained ViT (MAE, BEiT, DINOv2, DeiT-III) changes the blocks near the input
less than those near the head: block i of L (counting from 0) learns at decay^(L - i) times the
base rate, the embeddings at decay^(L + 1), the final norm and the head at the full rate. These
are timm's scales (`param_groups_layer_decay` with ViT's `group_matcher`: the stem is layer 0,
block i layer i + 1, the final norm and head layer L + 1, scale decay^(L + 1 - layer)).
"""

from __future__ import annotations

import re

import keras

from keras_vit.layers.transformer_block import TransformerBlock

_BLOCK_NAME = re.compile(r"encoderblock_\d+")


def _flat_layers(model):
    """The model's layers in order, sub-models' layers in their place."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _is_block(layer):
    return isinstance(layer, TransformerBlock) or bool(_BLOCK_NAME.fullmatch(layer.name))


def layer_decay(model, decay):
    """Learning-rate multipliers by variable path for `keras_vit.optimizers.GroupedOptimizer`.

    Args:
        model: a model with encoder blocks (`TransformerBlock` layers, or layers named
            `encoderblock_<i>`), in order: a `keras_vit.ViT`, a variant, a backbone inside
            another functional model, a loaded `.keras` file.
        decay: the factor per block, in (0, 1]; 0.65-0.75 in the MAE/BEiT recipes.

    Returns:
        {variable path: multiplier} for every variable of the model: the L encoder blocks'
        `decay ** (L - i)` for block i (from 0), layers before the first block (patch and
        position embeddings, class token, a hybrid's ResNet) `decay ** (L + 1)`, layers after
        the last (final LayerNorm, pre_logits, head) 1.

    Raises:
        ValueError: for a decay outside (0, 1] or a model without encoder blocks.

    Example:

    >>> import keras_vit
    >>> vit = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=64, num_layers=2,
    ...                     num_heads=4, mlp_dim=128, classes=10)
    >>> scales = layer_decay(vit, 0.5)
    >>> [scales[p] for p in ("embedding/pos_embedding", "encoderblock_0/LayerNorm_0/gamma",
    ...                      "encoderblock_1/LayerNorm_0/gamma", "head/kernel")]
    [0.125, 0.25, 0.5, 1.0]
    """
    decay = float(decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"Layer decay {decay} is invalid; must be in (0, 1] (e.g. 0.75).")
    layers = list(_flat_layers(model))
    blocks = [i for i, layer in enumerate(layers) if _is_block(layer)]
    if not blocks:
        raise ValueError(f"Model '{model.name}' has no encoder blocks (TransformerBlock layers "
                         "or layers named encoderblock_<i>): layer decay has nothing to count.")
    depth = len(blocks)
    multipliers = {}
    seen_block = -1
    for position, layer in enumerate(layers):
        if _is_block(layer):
            seen_block += 1
        if seen_block < 0:
            scale = decay ** (depth + 1)
        elif position > blocks[-1]:
            scale = 1.0
        else:
            scale = decay ** (depth - seen_block)
        for variable in layer.weights:
            multipliers.setdefault(variable.path, scale)
    return multipliers
