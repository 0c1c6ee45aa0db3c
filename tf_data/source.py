"""What every data source hands to the pipeline: splits of undecoded examples.

A source (digits, an image folder, a TFDS dataset) is reduced to a `Source`:
class names plus a `Split` per role ("train", "validation", "test"). A split
knows its size and can make a `tf.data.Dataset` of cheap, undecoded elements
for one shard; `Split.decode` turns such an element into `(uint8 HxWx3 image,
int32 label)`. Keeping decoding separate lets the pipeline shard and shuffle
file names or encoded bytes rather than decoded pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

# The roles a pipeline asks for; every source provides all three.
SPLIT_ROLES = ("train", "validation", "test")

# (shard_index, num_shards, shuffle_seed=None) -> dataset of undecoded elements
# of that shard; a seed asks for a seeded file-level shuffle where the source
# has files (TFDS), else it is ignored.
MakeFn = Callable[..., tf.data.Dataset]
# undecoded element -> (image uint8 [H, W, 3], label int32 []).
DecodeFn = Callable[[Any], tuple[tf.Tensor, tf.Tensor]]
# undecoded element -> (encoded image bytes [], label int32 []).
ReadFn = Callable[[Any], tuple[tf.Tensor, tf.Tensor]]


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a source.

    Attributes:
        name: Human-readable name, e.g. "train" or "train[:98%]".
        num_examples: Number of (readable) examples in the whole split.
        make: Builds the undecoded dataset of one shard, in a fixed order.
        decode: Maps one undecoded element to `(image, label)`; applied as
            `dataset.map(decode)` (tuple elements arrive as separate args).
        small_elements: Elements are tiny (file paths, 8x8 arrays), so a
            shuffle buffer can hold the whole split: a full reshuffle per epoch.
        read: For splits of encoded images (files, TFDS records): maps one
            undecoded element to `(encoded image bytes, int32 label)`, so that
            the pipeline can decode a JPEG's crop window only, or decode and
            downscale in one pass. None: images come only through `decode`.
    """

    name: str
    num_examples: int
    make: MakeFn
    decode: DecodeFn
    small_elements: bool = False
    read: ReadFn | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """A labelled image dataset split into train, validation and test.

    Attributes:
        name: The dataset spec it was loaded from ("digits", a path, a TFDS name).
        kind: "digits", "folder" or "tfds".
        class_names: Class name per label index.
        splits: Split per role in `SPLIT_ROLES`.
        flip: Whether a horizontal flip keeps the label (False for digits).
        skipped_files: Files of a folder source that could not be decoded.
        split_note: How validation/test were obtained (held out or given).
    """

    name: str
    kind: str
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    flip: bool = True
    skipped_files: tuple[str, ...] = ()
    split_note: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def split(self, role: str) -> Split:
        """Returns the split for `role` ("train", "validation" or "test").

        Raises:
            DataError: If `role` is not a known role.
        """
        from tf_data.errors import DataError  # local: keeps module import light

        if role == "val":
            role = "validation"
        if role not in self.splits:
            raise DataError(
                f"Unknown split {role!r} for dataset {self.name!r}; "
                f"valid splits: {', '.join(self.splits)}."
            )
        return self.splits[role]
