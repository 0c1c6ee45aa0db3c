"""Image folders: one sub-folder per class, optionally split into train/val/test.

Two layouts are understood:

* ``ROOT/<class>/<image>``: all images form one pool; a seeded, stratified
  share is held out for validation and for test.
* ``ROOT/train/<class>/<image>`` plus ``ROOT/test/...`` and/or
  ``ROOT/val/...`` (or ``validation``): the given splits are used; a missing
  validation split is held out from train, a missing test split from train too.

Files with the extensions JPEG/PNG/BMP/GIF are read. Every candidate file is
decoded once when the source is loaded (in parallel, with the same decoder the
pipeline uses) so that unreadable files are counted, reported and skipped
before training starts instead of failing a run midway.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_data.errors import DataError
from tf_data.holdout import stratified_holdout
from tf_data.preprocess import decode_image
from tf_data.source import Source, Split

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_SPLIT_DIRS = {
    "train": ("train",),
    "validation": ("val", "validation", "valid"),
    "test": ("test",),
}


def load(
    root: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    verify: bool = True,
) -> Source:
    """Builds a `Source` from an image folder.

    Args:
        root: The folder.
        val_fraction: Share held out for validation when there is no val dir.
        test_fraction: Share held out for test when there is no test dir.
        split_seed: Seed of the hold-out; keep it fixed so that evaluation
            later sees the same held-out images.
        verify: Decode every file up front to find unreadable ones. When
            False, unreadable files are skipped silently by the pipeline.

    Returns:
        The `Source`; `skipped_files` lists the unreadable files.

    Raises:
        DataError: For a missing folder, no images, or fewer than two classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {str(root)!r} does not exist.")
    split_dirs = _find_split_dirs(root)
    class_root = split_dirs.get("train", root)
    class_names = _class_names(class_root)

    pools: dict[str, tuple[list[str], list[int]]] = {}
    for role, directory in ({"train": root} if not split_dirs else split_dirs).items():
        pools[role] = _list_files(directory, class_names)

    skipped: list[str] = []
    if verify:
        all_paths = [p for paths, _ in pools.values() for p in paths]
        bad = set(find_unreadable(all_paths))
        skipped = sorted(bad)
        for role, (paths, labels) in pools.items():
            keep = [i for i, p in enumerate(paths) if p not in bad]
            pools[role] = ([paths[i] for i in keep], [labels[i] for i in keep])
        if skipped:
            logger.warning(
                "Skipping %d unreadable image file(s) in %s, e.g. %s",
                len(skipped), root, ", ".join(skipped[:3]),
            )

    train_paths, train_labels = pools["train"]
    _check_pool(root, train_paths, train_labels, class_names)
    notes = []
    missing = [r for r in ("validation", "test") if r not in pools]
    if missing:
        fractions = {
            "validation": val_fraction if "validation" in missing else 0.0,
            "test": test_fraction if "test" in missing else 0.0,
        }
        held = stratified_holdout(
            np.asarray(train_labels), fractions["validation"], fractions["test"], split_seed
        )
        paths_arr, labels_arr = np.asarray(train_paths), np.asarray(train_labels)
        for role in ["train", *missing]:
            idx = held[role]
            pools[role] = (paths_arr[idx].tolist(), labels_arr[idx].tolist())
        notes.append(
            f"{' and '.join(missing)} held out from the training images "
            f"(stratified, seed {split_seed}, "
            + ", ".join(f"{fractions[r]:.0%} {r}" for r in missing) + ")"
        )
    for role in ("validation", "test"):
        if not pools[role][0]:
            raise DataError(
                f"Image folder {str(root)!r} leaves no images for the {role} split; "
                "add more images per class or a separate split folder."
            )

    splits = {role: _file_split(role, *pools[role]) for role in ("train", "validation", "test")}
    return Source(
        name=str(root),
        kind="folder",
        class_names=tuple(class_names),
        splits=splits,
        flip=True,
        skipped_files=tuple(skipped),
        split_note="; ".join(notes) or "splits from sub-folders",
    )


def find_unreadable(paths: list[str]) -> list[str]:
    """Returns the paths that TF's image decoder cannot decode.

    Decodes all files in parallel with the pipeline's own decoder, so that a
    file which passes here also decodes during training. Empty images count
    as unreadable.
    """
    if not paths:
        return []

    def check(path):
        image = decode_image(tf.io.read_file(path))
        tf.debugging.assert_positive(tf.size(image), message="empty image")
        return path

    ds = tf.data.Dataset.from_tensor_slices(paths)
    ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors()  # a failed decode drops just that element
    readable = {p.decode("utf-8") for p in ds.as_numpy_iterator()}
    return [p for p in paths if p not in readable]


def _find_split_dirs(root: Path) -> dict[str, Path]:
    """Returns {role: dir} when `root` has a train/ sub-folder, else {}."""
    found = {}
    for role, names in _SPLIT_DIRS.items():
        for name in names:
            if (root / name).is_dir():
                found[role] = root / name
                break
    if found and "train" not in found:
        # e.g. a class literally named "test": treat as the plain layout.
        return {}
    return found


def _class_names(class_root: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders: one class each."""
    names = sorted(
        d.name for d in class_root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if len(names) < 2:
        raise DataError(
            f"Image folder {str(class_root)!r} has {len(names)} class sub-folder(s) "
            f"({', '.join(names) or 'none'}); a classifier needs at least 2, "
            "laid out as ROOT/<class name>/<image files>."
        )
    return names


def _list_files(directory: Path, class_names: list[str]) -> tuple[list[str], list[int]]:
    """Image files under `directory/<class>/` (recursively) with their labels."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, filename))
                    labels.append(label)
    return paths, labels


def _check_pool(root: Path, paths: list[str], labels: list[int], class_names: list[str]) -> None:
    """Errors out when the training pool is empty or has fewer than 2 classes."""
    if not paths:
        raise DataError(
            f"Image folder {str(root)!r} contains no readable images "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)} under its class sub-folders)."
        )
    present = sorted({class_names[i] for i in labels})
    if len(present) < 2:
        raise DataError(
            f"Image folder {str(root)!r} has readable images for only "
            f"{len(present)} class ({', '.join(present)}); at least 2 are needed."
        )


def _file_split(name: str, paths: list[str], labels: list[int]) -> Split:
    """A `Split` over file paths; decoding reads and decodes the file."""
    paths = list(paths)
    labels_arr = np.asarray(labels, dtype=np.int32)

    def make(shard_index: int, num_shards: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((paths, labels_arr))
        return ds.shard(num_shards, shard_index) if num_shards > 1 else ds

    def read(path, label):
        return tf.io.read_file(path), tf.cast(label, tf.int32)

    def decode(path, label):
        return decode_image(tf.io.read_file(path)), tf.cast(label, tf.int32)

    # Paths are small: the pipeline may shuffle the whole split each epoch,
    # which matters because they are listed class by class.
    return Split(name=name, num_examples=len(paths), make=make, decode=decode,
                 small_elements=True, read=read)
