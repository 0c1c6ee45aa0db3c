"""Image folders: one sub-folder per class, optionally split into train/val/test.

Two layouts are understood:

* ``ROOT/<class>/<image>``: all images form one pool; a seeded, stratified
  share is held out for validation and for test.
* ``ROOT/train/<class>/<image>`` plus ``ROOT/test/...`` and/or
  ``ROOT/val/...`` (or ``validation``): the given splits are used; a missing
  validation split is held out from train, a missing test split from train too.

Files with the extensions JPEG/PNG/BMP/GIF/WebP are read. Every candidate file is
decoded once when the source is loaded (in parallel, with the same decoder the
pipeline uses) so that unreadable files are counted, reported and skipped
before training starts instead of failing a run midway.

The listing and that scan are cached in an index, ``ROOT/.keras_vit_index.json``
(or, for a folder this process cannot write, a file named after the folder in
`index_dir`): per directory its modification time, sub-folders, image files and
the unreadable ones. The next load stats each directory once and lists, and
decodes, only the files of directories whose modification time changed (a file
added, removed or renamed there), so a second start on ImageNet's 1.28M files
takes seconds instead of a full decode. A file rewritten in place under the
same name keeps its directory's time: delete the index after such edits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_data.errors import DataError
from tf_data.holdout import stratified_holdout
from tf_data.preprocess import decode_image
from tf_data.source import Source, Split

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
INDEX_FILE = ".keras_vit_index.json"
_INDEX_VERSION = 1
# A directory modified this recently may still change within the same
# timestamp tick; its entry is not trusted on the next load.
_SETTLE_SECONDS = 2.0
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
    index: bool = True,
    index_dir: str | os.PathLike | None = None,
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
        index: Read and update the folder's index (see the module docstring)
            instead of listing and decoding every file at every load.
        index_dir: Where the index goes when `root` is not writable (e.g. the
            run directory); default ``~/.cache/keras_vit/folder_index``.

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

    old_index = _read_index(root, index_dir) if index else {}
    new_index: dict[str, dict] = {}
    pools: dict[str, tuple[list[str], list[int]]] = {}
    for role, directory in ({"train": root} if not split_dirs else split_dirs).items():
        pools[role] = _list_files(directory, class_names, root, old_index, new_index)

    skipped: list[str] = []
    if verify:
        # Decode only the files of directories not verified since they last changed.
        unchecked = [
            os.path.join(root, rel, name) if rel else os.path.join(root, name)
            for rel, entry in new_index.items() if entry["bad"] is None
            for name in entry["files"]
        ]
        bad_new = set(find_unreadable(unchecked))
        for rel, entry in new_index.items():
            if entry["bad"] is None:
                entry["bad"] = sorted(
                    name for name in entry["files"] if os.path.join(root, rel, name) in bad_new
                )
        bad = {os.path.join(root, rel, name) for rel, entry in new_index.items()
               for name in entry["bad"]}
        skipped = sorted(bad)
        for role, (paths, labels) in pools.items():
            keep = [i for i, p in enumerate(paths) if p not in bad]
            pools[role] = ([paths[i] for i in keep], [labels[i] for i in keep])
        if skipped:
            logger.warning(
                "Skipping %d unreadable image file(s) in %s, e.g. %s",
                len(skipped), root, ", ".join(skipped[:3]),
            )
        logger.info("Folder %s: %d file(s) decoded to check them, %d known from its index.",
                    root, len(unchecked),
                    sum(len(e["files"]) for e in new_index.values()) - len(unchecked))
    if index and new_index != old_index:
        _write_index(root, index_dir, new_index)

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


def _list_files(
    directory: Path, class_names: list[str], root: Path, old_index: dict, new_index: dict
) -> tuple[list[str], list[int]]:
    """Image files under `directory/<class>/` (recursively, sorted) with their labels.

    Directories unchanged since `old_index` was written are not listed again;
    every directory visited gets its entry in `new_index` (keyed by its path
    relative to `root`).
    """
    paths, labels = [], []

    def walk(path: str, rel: str, label: int):
        entry = _scan_dir(path, rel, old_index)
        new_index[rel] = entry
        paths.extend(os.path.join(path, name) for name in entry["files"])
        labels.extend([label] * len(entry["files"]))
        for name in entry["dirs"]:  # depth first, in order: os.walk's order
            walk(os.path.join(path, name), os.path.join(rel, name), label)

    for label, name in enumerate(class_names):
        class_dir = directory / name
        if class_dir.is_dir():
            walk(str(class_dir), os.path.relpath(class_dir, root), label)
    return paths, labels


def _scan_dir(path: str, rel: str, old_index: dict) -> dict:
    """Index entry of one directory: reused from `old_index` if its mtime is unchanged.

    An entry is {"mtime": ns or -1 (not settled: rescan next time), "dirs":
    sorted sub-folders, "files": sorted image files, "bad": unreadable files,
    or None when not checked yet}.
    """
    mtime = os.stat(path).st_mtime_ns
    old = old_index.get(rel)
    if old is not None and old.get("mtime") == mtime:
        return old
    dirs, files = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=True):
                dirs.append(entry.name)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(entry.name)
    settled = time.time() - mtime / 1e9 > _SETTLE_SECONDS
    return {"mtime": mtime if settled else -1, "dirs": sorted(dirs), "files": sorted(files),
            "bad": None}


def index_path(root: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> Path:
    """Where the index of `root` lives when `root` is not writable."""
    if index_dir is None:
        index_dir = Path.home() / ".cache" / "keras_vit" / "folder_index"
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return Path(index_dir) / f"{Path(root).resolve().name}-{digest}.json"


def _read_index(root: Path, index_dir) -> dict:
    """The cached directory entries of `root`, or {} (none, stale format, other folder)."""
    for path in (root / INDEX_FILE, index_path(root, index_dir)):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if (data.get("version") == _INDEX_VERSION
                and data.get("extensions") == list(IMAGE_EXTENSIONS)
                and data.get("root") == str(root.resolve())):
            return data["dirs"]
    return {}


def _write_index(root: Path, index_dir, entries: dict) -> None:
    """Writes the index next to the data, else in `index_dir`; atomic, best effort."""
    data = {"version": _INDEX_VERSION, "root": str(root.resolve()),
            "extensions": list(IMAGE_EXTENSIONS), "dirs": entries}
    for path in (root / INDEX_FILE, index_path(root, index_dir)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".keras_vit_index.", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, separators=(",", ":"))
            os.replace(tmp, path)  # concurrent loaders: last complete write wins
            return
        except OSError as e:
            logger.debug("Cannot write the folder index %s: %s", path, e)
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass
    logger.warning("Could not write an index of %s; the next load lists and checks it again.",
                   root)


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
