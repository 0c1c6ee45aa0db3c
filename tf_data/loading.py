"""`load_source`: one entry point for digits, image folders and TFDS names."""

from __future__ import annotations

import os

from tf_data import digits, folder, tfds_source
from tf_data.errors import DataError
from tf_data.source import Source


def load_source(
    spec: str,
    *,
    data_dir: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    verify_images: bool = True,
    index_dir: str | None = None,
    download: bool = True,
    split_overrides: dict[str, str] | None = None,
) -> Source:
    """Loads a dataset by spec.

    Args:
        spec: "digits", a path to an image folder, or a TFDS dataset name.
            A spec that exists as a folder is always read as a folder.
        data_dir: TFDS data directory.
        val_fraction: Folder sources: share held out for validation.
        test_fraction: Folder sources: share held out for test.
        split_seed: Folder sources: seed of the hold-out.
        verify_images: Folder sources: decode every file once up front to
            count and skip unreadable ones.
        index_dir: Folder sources: where the folder's index of files and
            unreadable files goes when the folder itself is not writable.
        download: TFDS: download and prepare when missing.
        split_overrides: TFDS: {role: split string} overrides.

    Returns:
        The `Source`.

    Raises:
        DataError: If `spec` is none of the above, or the data is unusable.
    """
    if not spec:
        raise DataError("No dataset given; use 'digits', a folder path or a TFDS name.")
    if spec == digits.NAME:
        return digits.load()
    if os.path.isdir(os.path.expanduser(spec)):
        return folder.load(
            os.path.expanduser(spec),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            split_seed=split_seed,
            verify=verify_images,
            index_dir=index_dir,
        )
    if os.sep in spec or spec.startswith("."):
        raise DataError(f"Image folder {spec!r} does not exist.")
    if tfds_source.is_tfds_name(spec):
        return tfds_source.load(
            spec, data_dir=data_dir, download=download, split_overrides=split_overrides
        )
    raise DataError(tfds_source.unknown_name_message(spec))
