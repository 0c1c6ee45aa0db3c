"""`--keep-aspect` of `keras-vit predict` / `evaluate`: each image at its own aspect ratio.

A model built for any image size (`input_shape=(None, None, 3)`) can see each image at its own
shape instead of squashed to a square: the shorter side goes to the model's size (the size its
position embedding is stored at), the longer one keeps the ratio, and both are rounded to the
nearest multiple of the patch (in input pixels; 16 for a hybrid's 1x1 patches on its 1/16
feature map): `keras_vit.resolution.aspect_size`. Predictions run one size per batch, so
`evaluate` groups the images of one size into batches.
"""

from __future__ import annotations

import tensorflow as tf

import tf_data
from applications.options import UsageError
from tf_data import preprocess


def check_model(loaded) -> tuple[int, tuple[int, int]]:
    """The (shorter side, patch in pixels) to keep aspect ratios with; UsageError for a model
    of one fixed size."""
    from keras_vit import resolution  # noqa: PLC0415

    if not resolution.takes_any_size(loaded.model):
        h, w = loaded.image_size
        raise UsageError(
            f"--keep-aspect needs a model of any image size (built with "
            f"input_shape=(None, None, 3)); {loaded.path} takes {h}x{w} images only.")
    return min(loaded.image_size), resolution.patch_pixels(loaded.model)


def size_keeping_aspect(height, width, size: int, multiple: tuple[int, int]):
    """`keras_vit.resolution.aspect_size` in TensorFlow ops, for pipelines: int32 (h, w)."""
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    scale = size / tf.minimum(height, width)
    sides = []
    for side, m in zip((height, width), multiple):
        rounded = tf.floor(side * scale / m + 0.5) * m
        sides.append(tf.cast(tf.maximum(rounded, m), tf.int32))
    return sides[0], sides[1]


def resize_keeping_aspect(image, size: int, multiple: tuple[int, int]):
    """An image (H, W, 3) resized bilinearly to its aspect-keeping size: float32 in [0, 255]."""
    shape = tf.shape(image)
    height, width = size_keeping_aspect(shape[0], shape[1], size, multiple)
    return preprocess.resize(image, tf.stack([height, width]))


def dataset(source, role: str, size: int, multiple: tuple[int, int], batch_size: int,
            include_preprocessing: bool) -> tf.data.Dataset:
    """(images, labels) batches of one split, each image at its aspect-keeping size and each
    batch of one size (images of the same size grouped, in order of arrival)."""
    split = source.split(role)

    def prepare(*element):
        if split.read is not None:
            encoded, label = split.read(*element)
            image = preprocess.decode_image(encoded)
        else:
            image, label = split.decode(*element)
        image = resize_keeping_aspect(image, size, multiple)
        return tf_data.scale_for_model(image, include_preprocessing), label

    ds = split.make(0, 1).map(prepare)

    def key(image, label):
        shape = tf.cast(tf.shape(image), tf.int64)
        return shape[0] * 1_000_000 + shape[1]

    return ds.group_by_window(key, lambda _, window: window.batch(batch_size), batch_size)
