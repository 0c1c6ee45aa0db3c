"""Optional augmentations from Keras' own preprocessing layers, and a hook.

RandAugment is applied per image, MixUp and CutMix per batch; all run inside
the tf.data graph (Keras switches these layers to TensorFlow ops there, so
they work whatever `KERAS_BACKEND` is). Extra batch transforms, e.g. keras-cv
layers, plug in as callables on ``{"images": ..., "labels": ...}`` dicts,
which is the calling convention of both Keras and keras-cv augmentation
layers.

Keras' random layers keep their seed in a state variable, so their calls are
kept sequential in the pipeline: with a fixed seed the output is reproducible.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

BatchTransform = Callable[[dict], dict]


def make_randaugment(num_ops: int, magnitude: float, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns image -> image applying Keras RandAugment to [0, 255] pixels.

    Args:
        num_ops: Operations applied per image (the paper of RandAugment's N).
        magnitude: Strength in [0, 1] (Keras' `factor`).
        seed: Seed of the layer's random state.
    """
    import keras

    layer = keras.layers.RandAugment(
        value_range=(0, 255), num_ops=num_ops, factor=magnitude, seed=seed
    )

    def apply(image: tf.Tensor) -> tf.Tensor:
        out = layer(image, training=True)
        return tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)

    return apply


def make_mix(
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: int,
) -> BatchTransform | None:
    """Returns a batch transform doing MixUp, CutMix, or one of them at random.

    When both are enabled each batch gets one of the two with probability 1/2
    (as timm and DeiT do). The transform takes ``{"images", "labels", "seed"}``
    with one-hot float labels and a stateless seed of shape [2] per batch, and
    returns ``{"images", "labels"}``.

    Args:
        mixup_alpha: Beta(alpha, alpha) parameter of MixUp; 0 disables it.
        cutmix_alpha: Beta parameter (Keras' `factor`) of CutMix; 0 disables it.
        seed: Seed of the layers' random state and of the choice.

    Returns:
        The transform, or None when both are disabled.
    """
    import keras

    layers = []
    if mixup_alpha > 0:
        layers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed))
    if cutmix_alpha > 0:
        layers.append(keras.layers.CutMix(factor=cutmix_alpha, seed=seed + 1))
    if not layers:
        return None

    def run(layer, batch):
        out = layer({"images": batch["images"], "labels": batch["labels"]}, training=True)
        return {
            "images": tf.cast(out["images"], tf.float32),
            "labels": tf.cast(out["labels"], tf.float32),
        }

    if len(layers) == 1:
        return lambda batch: run(layers[0], batch)

    def either(batch):
        # The coin uses the batch's own stateless seed (put there by the
        # pipeline), so the choice is reproducible.
        coin = tf.random.stateless_uniform([], seed=batch["seed"])
        return tf.cond(coin < 0.5, lambda: run(layers[0], batch), lambda: run(layers[1], batch))

    return either
