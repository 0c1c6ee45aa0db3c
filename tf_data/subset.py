"""A seeded random share of one split: for data-scale studies and few-label fine-tuning."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tf_data.errors import DataError
from tf_data.source import Source, Split


def subset(source: Source, role: str, fraction: float, seed: int = 0) -> Source:
    """`source` with its `role` split reduced to a fixed random `fraction` of its examples.

    The same seed gives the same examples; each epoch still shuffles and augments them anew.
    Other splits are unchanged.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"A subset fraction must lie in (0, 1], got {fraction}.")
    split = source.split(role)
    count = max(1, round(fraction * split.num_examples))
    if count == split.num_examples:
        return source
    keep = np.zeros(split.num_examples, dtype=bool)
    keep[np.random.default_rng(seed).choice(split.num_examples, count, replace=False)] = True
    keep = tf.constant(keep)

    def make(shard_index: int, num_shards: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
        # Select on the whole split's fixed order (so no file shuffling, whatever
        # `shuffle_seed` asks), then shard what is kept.
        ds = split.make(0, 1).enumerate().filter(lambda i, element: keep[i])
        ds = ds.map(lambda i, element: element)
        return ds.shard(num_shards, shard_index) if num_shards > 1 else ds

    reduced = Split(name=f"{split.name}[{100 * fraction:g}% seed {seed}]", num_examples=count,
                    make=make, decode=split.decode, small_elements=split.small_elements,
                    read=split.read)
    return dataclasses.replace(source, splits={**source.splits, role: reduced})
