"""`digits`: scikit-learn's 8x8 handwritten digits, the embedded default dataset.

1,797 grayscale images of the digits 0-9 that ship inside the scikit-learn
wheel, so training works with no download. Pixel values 0..16 are scaled to
0..255 and replicated to RGB. The train/validation/test split is stratified
and uses a fixed seed that does not depend on the training seed, so the test
split is the same held-out set for every run.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tf_data.holdout import stratified_holdout
from tf_data.source import Source, Split

NAME = "digits"
# Fixed shares and seed of the split: 70% train, 10% validation, 20% test.
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns all digits as (uint8 images [N, 8, 8, 3], int32 labels [N])."""
    from sklearn.datasets import load_digits  # heavy import, only when used

    bunch = load_digits()
    gray = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    return images, bunch.target.astype(np.int32)


def load() -> Source:
    """Builds the digits `Source` with its fixed 70/10/20 stratified split."""
    images, labels = load_arrays()
    indices = stratified_holdout(labels, VAL_FRACTION, TEST_FRACTION, SPLIT_SEED)
    splits = {
        role: _array_split(role, images[idx], labels[idx])
        for role, idx in indices.items()
    }
    return Source(
        name=NAME,
        kind="digits",
        class_names=tuple(str(d) for d in range(10)),
        splits=splits,
        flip=False,  # a mirrored 2, 3, 4, 5, 7 or 9 is no longer that digit
        split_note=(
            f"fixed stratified split (seed {SPLIT_SEED}): "
            f"{1 - VAL_FRACTION - TEST_FRACTION:.0%} train, "
            f"{VAL_FRACTION:.0%} validation, {TEST_FRACTION:.0%} test"
        ),
    )


def _array_split(name: str, images: np.ndarray, labels: np.ndarray) -> Split:
    """A `Split` over in-memory arrays; elements are already decoded."""

    def make(shard_index: int, num_shards: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return ds.shard(num_shards, shard_index) if num_shards > 1 else ds

    return Split(
        name=name,
        num_examples=len(labels),
        make=make,
        decode=lambda image, label: (image, tf.cast(label, tf.int32)),
        small_elements=True,
    )
