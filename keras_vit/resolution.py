"""Image sizes of a built model: fixed, or any size at run time.

`ViT(..., input_shape=(None, None, 3))` builds a model that takes images of any size whose sides
the patch divides (for a hybrid: whose ResNet feature map it divides), one size per batch: its
position embedding, stored at the grid of `image_size`, is resampled to each call's grid
(`keras_vit.layers.position_resample`). These helpers answer, for any keras-vit model, the
questions a program asks about its input: does it take any size (`takes_any_size`), at which
size was its embedding stored (`stored_image_size`), how many patches does an image of a given
size give (`patch_grid`), and which size keeps an image's aspect ratio (`aspect_size`).

Example:

>>> import keras_vit
>>> from keras_vit import resolution
>>> model = keras_vit.ViT(image_size=32, input_shape=(None, None, 3), patch_size=8,
...                       hidden_size=32, num_layers=1, num_heads=2, mlp_dim=32, classes=3)
>>> resolution.takes_any_size(model), resolution.stored_image_size(model)
(True, (32, 32))
>>> resolution.patch_grid(model, (48, 24))
(6, 3)
>>> resolution.aspect_size((300, 400), 32, multiple=8)     # shorter side 32, both sides /8
(32, 40)
"""

import math

from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.patches import Patches, grid_size
from keras_vit.layers.utils import to_pair

__all__ = ["aspect_size", "patch_grid", "patch_pixels", "stored_image_size", "takes_any_size"]


def _encoder(model):
    encoder = next((layer for layer in model.layers if isinstance(layer, PatchEncoder)), None)
    if encoder is None:
        raise ValueError(f"Model '{model.name}' was not built by keras_vit.ViT (it has no "
                         "PatchEncoder).")
    return encoder


def takes_any_size(model):
    """Whether `model` takes images of any size (built with None for its height or width)."""
    return None in tuple(model.input_shape[1:3])


def _stem_strides(model):
    """The strides of the (SAME-padded) layers before the patches: a hybrid's ResNet."""
    strides = []
    for layer in model.layers:
        if isinstance(layer, Patches):
            break
        stride = getattr(layer, "strides", None)
        if stride is not None:
            strides.append(to_pair(stride, "strides"))
    return strides


def _stem_output(model, size):
    height, width = size
    for sh, sw in _stem_strides(model):
        height, width = -(-height // sh), -(-width // sw)
    return height, width


def stored_image_size(model):
    """The (height, width) whose patch grid `model`'s position embedding is stored at: the
    input size of a fixed-size model, the `image_size` a model of any size was built with."""
    if not takes_any_size(model):
        return tuple(int(n) for n in model.input_shape[1:3])
    encoder = _encoder(model)
    stride = [1, 1]
    for sh, sw in _stem_strides(model):
        stride = [stride[0] * sh, stride[1] * sw]
    return tuple(g * p * s for g, p, s in zip(encoder.grid_size, encoder.patch_size, stride))


def patch_grid(model, image_size):
    """The (rows, cols) of patch tokens that `model` makes of images of `image_size`.

    Raises:
        ValueError: when `model` cannot take that size (a fixed-size model at another size, or
            sides that the patch does not divide), naming both.
    """
    size = to_pair(image_size, "image_size")
    encoder = _encoder(model)
    if not takes_any_size(model):
        fixed = stored_image_size(model)
        if tuple(size) != fixed:
            raise ValueError(f"Model '{model.name}' takes images of {fixed[0]}x{fixed[1]} "
                             f"only, not {size[0]}x{size[1]}; build it with "
                             "input_shape=(None, None, 3) for any size.")
        return tuple(encoder.grid_size)
    return grid_size(_stem_output(model, size), encoder.patch_size)


def patch_pixels(model):
    """The (height, width) in input pixels that one patch token covers (a hybrid's 1x1 patch
    on its 1/16 feature map covers 16x16)."""
    encoder = _encoder(model)
    ph, pw = encoder.patch_size
    for sh, sw in _stem_strides(model):
        ph, pw = ph * sh, pw * sw
    return ph, pw


def aspect_size(image_size, size, multiple=1):
    """The size that keeps an image's aspect ratio: its shorter side scaled to `size`, both
    sides rounded to the nearest multiple of `multiple` (at least one multiple).

    Args:
        image_size: the image's (height, width).
        size: the wanted shorter side (e.g. a model's trained size).
        multiple: int or (height, width): what both sides must be multiples of (the patch, in
            input pixels: `patch_pixels(model)`).
    """
    height, width = image_size
    mh, mw = to_pair(multiple, "multiple")
    scale = size / min(height, width)
    # Halves round up (floor(x + 0.5)), in Python as in the TensorFlow pipelines.
    return (max(mh, math.floor(height * scale / mh + 0.5) * mh),
            max(mw, math.floor(width * scale / mw + 0.5) * mw))
