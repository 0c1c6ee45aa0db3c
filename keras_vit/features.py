"""Intermediate features: the outputs of chosen encoder blocks, for detection and segmentation.

`feature_extractor(model, blocks=..., output="tokens"|"spatial", norm=...)` turns any ViT of
this library (any variant, hybrid, GAP or class token, loaded weights or not) into a
`keras.Model` with the same input whose outputs are the chosen blocks' outputs z_l (Eq. 2-3),
the counterpart of timm's `forward_intermediates`, kimm's `feature_extractor=True` and HF's
`output_hidden_states=True` (its `hidden_states[l]` is block l - 1's output here, block indices
counting from 0).

The extractor shares the model's layers and weights (training one trains the other). Its blocks
always compute every token: where `ViT` let the last block compute only the class token's row
(`last_block_class_token_only`), the extractor calls that block again on all tokens.
"""

import keras
from keras import ops

from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.register_tokens import RegisterTokens
from keras_vit.layers.transformer_block import TransformerBlock

OUTPUTS = ("tokens", "spatial")


@keras.saving.register_keras_serializable(package="keras_vit")
class TokensToSpatial(keras.layers.Layer):
    """Tokens (B, prefix + h * w, D) -> a feature map (B, h, w, D), prefix tokens dropped.

    Args:
        grid_size: (h, w), the patch grid (row-major, as `Patches` orders the tokens); None for
            a model of any image size: the grid is then read from each call's second argument.
        num_prefix_tokens: leading tokens that are no patch (1 for the class token, else 0).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        tokens: (B, prefix + h * w, D).
        grid: with `grid_size=None`, a tensor whose axes 1 and 2 are the call's (h, w), such as
            the patch grid (B, h, w, P * P * C) of `Patches(flatten=False)`.

    Example:

    >>> import numpy as np
    >>> tokens = np.arange(2 * 7 * 4, dtype="float32").reshape(2, 7, 4)  # class + 2x3 patches
    >>> maps = TokensToSpatial((2, 3), num_prefix_tokens=1)(tokens)
    >>> tuple(maps.shape)
    (2, 2, 3, 4)
    >>> bool((np.asarray(maps)[:, 0, 1] == tokens[:, 2]).all())   # row 0, column 1 = patch 1
    True
    """

    def __init__(self, grid_size, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = None if grid_size is None else (int(grid_size[0]), int(grid_size[1]))
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, tokens, grid=None):
        rows, cols = self.grid_size or tuple(ops.shape(grid)[1:3])
        patches = tokens[:, self.num_prefix_tokens:]
        return ops.reshape(patches, (-1, rows, cols, tokens.shape[-1]))

    def compute_output_shape(self, input_shape, grid_shape=None):
        grid = self.grid_size or tuple(grid_shape[1:3])
        return (input_shape[0],) + tuple(grid) + (input_shape[-1],)

    def compute_output_spec(self, tokens, grid=None):
        shape = self.compute_output_shape(tokens.shape, None if grid is None else grid.shape)
        return keras.KerasTensor(shape, dtype=tokens.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"grid_size": self.grid_size, "num_prefix_tokens": self.num_prefix_tokens})
        return config


def feature_extractor(model, blocks=None, output="tokens", norm=False, name=None):
    """A `keras.Model` returning chosen encoder blocks' outputs of a keras-vit model.

    Args:
        model: a model built by `keras_vit.ViT` or a variant constructor (with or without top;
            a saved and reloaded one too).
        blocks: which encoder blocks, counting from 0 (negative: from the end, -1 is the last):
            None for all of them, a sequence of indices (a list of outputs in that order), or
            one index (a single output; a one-element sequence gives one too, as Keras returns
            the only output of a model without a list).
        output: `"tokens"`: (B, T, D), the class token (if any) and register tokens (if any)
            first, as the blocks compute them; `"spatial"`: (B, h, w, D) on the patch grid,
            without the class and register tokens (for a model of any image size, on each
            call's grid).
        norm: pass each output through the model's final LayerNorm (`encoder_norm`), as
            timm's `forward_intermediates(norm=True)`. HF's `last_hidden_state` is the last
            block's output with `norm=True`; its `hidden_states` are without.
        name: the new model's name (default: `{model.name}_features`).

    Returns:
        A `keras.Model` taking the model's inputs, sharing its layers and weights. It saves and
        loads as `.keras` with `import keras_vit` alone.

    Example:

    >>> import numpy as np
    >>> import keras_vit
    >>> vit = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=64, num_layers=4,
    ...                     num_heads=4, mlp_dim=128, classes=10)
    >>> features = keras_vit.feature_extractor(vit, blocks=[1, -1], output="spatial", norm=True)
    >>> [tuple(y.shape) for y in features(np.zeros((2, 32, 32, 3), "float32"))]
    [(2, 4, 4, 64), (2, 4, 4, 64)]
    >>> tokens = keras_vit.feature_extractor(vit, blocks=-1)     # the last block, all 17 tokens
    >>> tokens.output_shape
    (None, 17, 64)
    """
    if output not in OUTPUTS:
        raise ValueError(f"Unknown output {output!r}; expected one of {', '.join(OUTPUTS)}.")
    encoder = next((l for l in model.layers if isinstance(l, PatchEncoder)), None)
    encoder_blocks = [l for l in model.layers if isinstance(l, TransformerBlock)]
    if encoder is None or not encoder_blocks:
        raise ValueError(f"Model '{model.name}' was not built by keras_vit.ViT (it has no "
                         "PatchEncoder or TransformerBlock).")
    depth = len(encoder_blocks)
    single = blocks is not None and not isinstance(blocks, (list, tuple, range))
    wanted = range(depth) if blocks is None else ([blocks] if single else list(blocks))
    indices = []
    for index in wanted:
        if isinstance(index, bool) or not isinstance(index, int) or not -depth <= index < depth:
            raise ValueError(f"Block index {index!r} is out of range for a model with {depth} "
                             f"encoder blocks (use 0..{depth - 1} or -{depth}..-1).")
        indices.append(index % depth)
    if not indices:
        raise ValueError("`blocks` selects no encoder block.")
    layer_norm = None
    if norm:
        names = {layer.name for layer in model.layers}
        if "encoder_norm" not in names:
            raise ValueError(f"Model '{model.name}' has no final LayerNorm 'encoder_norm'.")
        layer_norm = model.get_layer("encoder_norm")

    # The blocks are called again from the patch encoder's output in the model's own graph:
    # full (B, T, D) outputs everywhere, even where the model's last block computed one row.
    x = encoder.output  # (its first call: the model's own)
    registers = next((l for l in model.layers if isinstance(l, RegisterTokens)), None)
    if registers is not None:  # the blocks read the tokens with the registers inserted
        x = registers.output
    prefix = int(encoder.use_class_token) + (registers.num_tokens if registers else 0)
    outputs = {}
    for i in range(max(indices) + 1):
        x = encoder_blocks[i](x)
        if i in indices:
            y = layer_norm(x) if layer_norm is not None else x
            if output == "spatial" and len(encoder.input.shape) == 4:
                # Any image size: the grid is the call's, read from the patch grid.
                y = TokensToSpatial(None, prefix, name=f"spatial_{i}")(y, encoder.input)
            elif output == "spatial":
                y = TokensToSpatial(encoder.grid_size, prefix, name=f"spatial_{i}")(y)
            outputs[i] = y
    result = [outputs[i] for i in indices]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, result[0] if single else result,
                       name=name or f"{model.name}_features")

