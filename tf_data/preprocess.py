"""Per-image operations: decode, inception crop, flip, resize, output scaling.

All random operations are stateless and take an explicit seed, so that a
pipeline built with the same seed yields the same images on every run and on
every Keras backend.
"""

from __future__ import annotations

import tensorflow as tf

# The paper's fine-tuning crop (vit_jax input_pipeline): any area from 5% to
# 100% of the image, aspect ratios 3/4 to 4/3 (TF's defaults).
INCEPTION_AREA_RANGE = (0.05, 1.0)
INCEPTION_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF bytes to a uint8 RGB image.

    Grayscale images are replicated to three channels, an alpha channel is
    dropped, and an animated GIF yields its first frame.

    Args:
        encoded: Scalar string tensor with the file's bytes.

    Returns:
        uint8 tensor of shape [H, W, 3].
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Returns `image` ([H, W, C], C in 1..4) with exactly three channels."""
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 2:  # gray + alpha
        return tf.image.grayscale_to_rgb(image[..., :1])
    if channels == 4:  # RGB + alpha
        return image[..., :3]
    # Unknown static channel count: decide at run time.
    return tf.cond(
        tf.shape(image)[-1] < 3,
        lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        lambda: image[..., :3],
    )


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resizes to `size` (height, width) bilinearly; float32 output in [0, 255].

    This is the paper's evaluation preprocessing: the whole image, no crop.
    """
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return tf.clip_by_value(image, 0.0, 255.0)


def inception_crop(
    image: tf.Tensor,
    size: tuple[int, int],
    seed: tf.Tensor,
    area_range: tuple[float, float] = INCEPTION_AREA_RANGE,
    aspect_ratio_range: tuple[float, float] = INCEPTION_ASPECT_RANGE,
) -> tf.Tensor:
    """Random-area, random-aspect crop resized to `size` (Szegedy et al. 2015).

    Args:
        image: uint8 or float image [H, W, 3].
        size: Output (height, width).
        seed: int32/int64 tensor of shape [2] for the stateless sampler.
        area_range: Range of the crop's share of the image area.
        aspect_ratio_range: Range of the crop's width / height.

    Returns:
        float32 image of shape [size[0], size[1], 3] in [0, 255].
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, 3])
    return resize(crop, size)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flips left-right with probability 1/2 (stateless)."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def scale_for_model(images: tf.Tensor, include_preprocessing: bool) -> tf.Tensor:
    """Scales [0, 255] float pixels to what the model expects.

    Args:
        images: float32 pixels in [0, 255].
        include_preprocessing: True when the model rescales inside (it then
            takes [0, 255]); False when it expects [-1, 1] (x / 127.5 - 1, as
            `keras_vit.preprocess_input`).

    Returns:
        float32 tensor of the same shape.
    """
    images = tf.cast(images, tf.float32)
    if include_preprocessing:
        return images
    return images / 127.5 - 1.0
