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
    Bilinear interpolation stays within its input's range (each output is
    a + (b - a) t with t in [0, 1], twice), so no clip follows
    (tests/test_input_pipeline.py checks extreme inputs). The cast comes first:
    TensorFlow's bilinear kernel runs slower on uint8 input than the cast and
    the float kernel together.
    """
    return tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")


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
    window = crop_window(tf.shape(image), seed, area_range, aspect_ratio_range)
    return resize(crop_to_window(image, window), size)


def crop_window(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    area_range: tuple[float, float] = INCEPTION_AREA_RANGE,
    aspect_ratio_range: tuple[float, float] = INCEPTION_ASPECT_RANGE,
) -> tf.Tensor:
    """Samples the inception crop window of an image of shape [H, W, C].

    Needs only the shape, so for a JPEG it can be drawn from the header
    (`tf.image.extract_jpeg_shape`) before any pixel is decoded.

    Returns:
        int32 [4]: offset_y, offset_x, height, width (the `crop_window` of
        `tf.io.decode_and_crop_jpeg`).
    """
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.cast(image_shape, tf.int32),
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])


def crop_to_window(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """The pixels of `image` [H, W, 3] inside `window` (offset_y, offset_x, height, width)."""
    crop = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], -1])
    crop.set_shape([None, None, 3])
    return crop


def decode_jpeg_window(encoded: tf.Tensor, window: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Decodes only `window` of a JPEG; the same pixels as decoding it whole and cropping.

    `tf.io.decode_and_crop_jpeg` alone differs from decode-then-crop by up to
    ~18 levels in a crop's first and last columns: libjpeg's horizontal chroma
    upsampling treats the window's left and right edges as image edges. One
    extra column on each side (then sliced off) gives those columns their
    neighbours, and the pixels are then identical (tests/test_tf_data.py).

    Args:
        encoded: JPEG bytes (scalar string).
        window: int32 [4] offset_y, offset_x, height, width.
        width: The image's width (from `tf.image.extract_jpeg_shape`).

    Returns:
        uint8 [height, width, 3].
    """
    y, x, h, w = tf.unstack(window)
    x0 = tf.maximum(x - 1, 0)
    x1 = tf.minimum(x + w + 1, width)
    wide = tf.io.decode_and_crop_jpeg(encoded, tf.stack([y, x0, h, x1 - x0]), channels=3)
    crop = wide[:, x - x0 : x - x0 + w]
    crop.set_shape([None, None, 3])
    return crop


def decode_crop(
    encoded: tf.Tensor,
    seed: tf.Tensor,
    area_range: tuple[float, float] = INCEPTION_AREA_RANGE,
    aspect_ratio_range: tuple[float, float] = INCEPTION_ASPECT_RANGE,
) -> tf.Tensor:
    """Decodes the inception crop window of encoded image bytes, uint8 [h, w, 3].

    JPEGs (also grayscale, progressive and CMYK ones) are decoded only inside
    the window, sampled from the JPEG header; other formats (PNG, BMP, GIF)
    are decoded whole by `decode_image` and cropped. Either way the window is
    the one `inception_crop` draws for the decoded image with the same seed,
    and the pixels are those of decode-then-crop.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        window = crop_window(shape, seed, area_range, aspect_ratio_range)
        return decode_jpeg_window(encoded, window, shape[1])

    def other():
        image = decode_image(encoded)
        window = crop_window(tf.shape(image), seed, area_range, aspect_ratio_range)
        return crop_to_window(image, window)

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def decode_resize(encoded: tf.Tensor, size: tuple[int, int], scaled_jpeg: bool = True) -> tf.Tensor:
    """Decodes encoded image bytes and resizes the whole image to `size` (evaluation).

    With `scaled_jpeg`, a JPEG at least twice the target size in both
    dimensions is decoded at 1/2, 1/4 or 1/8 scale (libjpeg scales in the DCT
    domain, averaging the pixels it drops: decoding and most of the
    downscaling in one pass), the smallest scale still at least `size`; the
    bilinear resize then finishes. Images under twice the target size (e.g.
    ImageNet's ~500x375 at 224) are decoded whole, exactly as `decode_image`.

    Returns:
        float32 [size[0], size[1], 3] in [0, 255].
    """
    if not scaled_jpeg:
        return resize(decode_image(encoded), size)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        # Largest DCT scale 1/r whose output (ceil(dim / r)) still covers size.
        fits = [
            tf.logical_and(shape[0] >= r * size[0], shape[1] >= r * size[1]) for r in (2, 4, 8)
        ]
        branch = tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32))
        image = tf.switch_case(branch, [
            lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in (1, 2, 4, 8)
        ])
        image.set_shape([None, None, 3])
        return resize(image, size)

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, lambda: resize(decode_image(encoded), size))


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flips left-right with probability 1/2 (stateless).

    TensorFlow's own flip, a `tf.cond` around `tf.reverse`: measured against
    cond-free flips (a strided slice of stride -1 or 1, a gather of column
    indices, `tf.where` of both), all slower per image on the CPU, since
    TensorFlow's negative-stride slice, gather and select each cost more than
    the branch (benchmarks/RESULTS.md, issue 24).
    """
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
