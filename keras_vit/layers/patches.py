"""`Patches`: split an image into a sequence of flattened patches (paper, Sec. 3.1).

The paper reshapes x in R^{H x W x C} into x_p in R^{N x (P^2 C)}, N = HW / P^2. We keep the
official row-major patch order (left to right, then top to bottom) and, inside each patch, the
(row, column, channel) order of the official convolution kernel, so that the projection
`E` stored as the checkpoint's `embedding/kernel` (P, P, C, D) becomes a plain reshape to
(P^2 C, D).
"""

import keras
from keras import ops

from keras_vit.layers.utils import to_pair


@keras.saving.register_keras_serializable(package="keras_vit")
class Patches(keras.layers.Layer):
    """Cuts images (B, H, W, C) into patches (B, N, P_h * P_w * C).

    Args:
        patch_size: int or (P_h, P_w). Must divide the image height and width.
        flatten: True: (B, N, P_h * P_w * C), the patches in row-major order; False: the grid
            (B, H / P_h, W / P_w, P_h * P_w * C), which keeps the grid's shape for a
            `PatchEncoder` that resamples its position embedding to each call's grid (images
            of any size, `keras_vit.layers.position_resample`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> x = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    >>> tuple(Patches(2)(x).shape)
    (2, 4, 12)
    """

    def __init__(self, patch_size, flatten=True, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = to_pair(patch_size, "patch_size")
        self.flatten = flatten

    def build(self, input_shape):
        # None: images of any size, the grid read from each call's images.
        self.grid_size = (None if None in tuple(input_shape[1:3])
                          else grid_size(input_shape[1:3], self.patch_size))
        self.built = True

    def call(self, images):
        ph, pw = self.patch_size
        gh, gw = self.grid_size or call_grid(ops.shape(images)[1:3], self.patch_size)
        channels = ops.shape(images)[-1]
        # (B, gh, ph, gw, pw, C) -> (B, gh, gw, ph, pw, C): rows of patches, then patch pixels.
        x = ops.reshape(images, (-1, gh, ph, gw, pw, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        if not self.flatten:
            return ops.reshape(x, (-1, gh, gw, ph * pw * channels))
        return ops.reshape(x, (-1, gh * gw, ph * pw * channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        ph, pw = self.patch_size
        if None in (height, width):
            gh, gw = (None if n is None else n // p for n, p in zip((height, width), (ph, pw)))
        else:
            gh, gw = grid_size((height, width), self.patch_size)
        if not self.flatten:
            return (batch, gh, gw, ph * pw * channels)
        return (batch, None if None in (gh, gw) else gh * gw, ph * pw * channels)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "flatten": self.flatten})
        return config


def grid_size(image_size, patch_size):
    """The (rows, columns) of the patch grid; a clear error if patches do not tile the image."""
    image_size = to_pair(image_size, "image_size")
    patch_size = to_pair(patch_size, "patch_size")
    if None in image_size:
        raise ValueError(
            f"ViT needs a fixed image size to lay out its position embedding; got {image_size}."
        )
    for axis, size, patch in zip(("height", "width"), image_size, patch_size):
        if size % patch:
            raise ValueError(
                f"Image {axis} {size} is not divisible by the patch size {patch} "
                f"(image size {tuple(image_size)}, patch size {tuple(patch_size)})."
            )
    return image_size[0] // patch_size[0], image_size[1] // patch_size[1]


def call_grid(size, patch_size):
    """The patch grid of one call's (height, width): checked like `grid_size` where the size is
    known while tracing (always on JAX and PyTorch), computed in the graph where it is not (a
    TensorFlow graph traced for images of any size)."""
    if all(isinstance(n, int) for n in size):
        try:
            return grid_size(tuple(size), patch_size)
        except ValueError as error:
            raise ValueError(f"{error} A model built for any image size takes heights and "
                             "widths that are multiples of the patch size.") from None
    return tuple(n // p for n, p in zip(size, patch_size))
