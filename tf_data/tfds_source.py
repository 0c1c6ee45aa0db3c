"""TFDS image-classification datasets by name (cifar10, oxford_flowers102, ...).

Any TFDS dataset with an `Image` feature and a `ClassLabel` feature works. The
three roles map onto TFDS splits as in the official ViT input pipeline:

* train: ``train`` (``train[:98%]`` when there is no ``validation`` split or
  when ``validation`` has to serve as the test split);
* validation: ``validation`` when a ``test`` split exists, else ``train[98%:]``;
* test: ``test``, else ``validation`` (ImageNet reports on validation).

Any role can be overridden with a TFDS split string such as ``train[:10%]``.
Images are read still encoded (`SkipDecoding`) and decoded by the pipeline
after sharding and shuffling.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import tensorflow as tf

from tf_data.errors import DataError
from tf_data.preprocess import decode_image
from tf_data.source import Source, Split

# Share of train held out for validation when a dataset has no validation
# split (vit_jax holds out 2% of CIFAR's training set the same way).
_HOLDOUT = "98%"
# A few well-known image-classification datasets, listed in error messages.
WELL_KNOWN = (
    "cifar10", "cifar100", "oxford_flowers102", "oxford_iiit_pet", "imagenet2012",
    "imagenette", "imagenet_v2", "food101", "caltech101", "dtd", "eurosat",
    "mnist", "fashion_mnist", "svhn_cropped", "stanford_dogs", "cars196",
)


@functools.lru_cache(maxsize=1)
def tfds_names() -> tuple[str, ...]:
    """All dataset names registered with TFDS."""
    import tensorflow_datasets as tfds

    return tuple(tfds.list_builders(with_community_datasets=False))


def is_tfds_name(spec: str) -> bool:
    """True when `spec` names a registered TFDS dataset (config/version allowed)."""
    base = spec.split("/")[0].split(":")[0]
    return base in tfds_names()


def unknown_name_message(spec: str) -> str:
    """Error text for a dataset spec that is none of the known kinds."""
    base = spec.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(base, tfds_names(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"Unknown dataset {spec!r}: it is not 'digits', not an existing image "
        f"folder, and not one of the {len(tfds_names())} TFDS datasets.{hint} "
        f"Valid choices: 'digits' (embedded), a folder path with one sub-folder "
        f"per class, or a TFDS image-classification name such as "
        f"{', '.join(WELL_KNOWN)}."
    )


def load(
    name: str,
    *,
    data_dir: str | None = None,
    download: bool = True,
    split_overrides: dict[str, str] | None = None,
) -> Source:
    """Builds a `Source` for the TFDS dataset `name`.

    Args:
        name: TFDS name, optionally with config and version ("cifar10:3.*.*").
        data_dir: TFDS data directory (default: TFDS's own).
        download: Download and prepare the dataset when it is not there yet.
        split_overrides: Optional {role: TFDS split string}.

    Returns:
        The `Source`.

    Raises:
        DataError: If the dataset cannot be prepared or is not an image
            classification dataset, or a split does not exist.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for unknown names/configs
        raise DataError(f"TFDS could not open {name!r}: {e}") from e
    if download and not builder.info.splits:
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared in "
                f"{data_dir or tfds.core.constants.DATA_DIR} and could not be "
                f"downloaded/prepared: {e}"
            ) from e

    image_key, label_key = _feature_keys(name, builder.info.features)
    label_feature = builder.info.features[label_key]
    class_names = tuple(label_feature.names)
    split_names = _split_names(builder, split_overrides or {})

    splits = {
        role: _tfds_split(builder, role, split, image_key, label_key)
        for role, split in split_names.items()
    }
    return Source(
        name=name,
        kind="tfds",
        class_names=class_names,
        splits=splits,
        flip=True,
        split_note=", ".join(f"{role}={split}" for role, split in split_names.items()),
    )


def _feature_keys(name: str, features: Any) -> tuple[str, str]:
    """Finds the image feature and the class-label feature of a dataset."""
    import tensorflow_datasets as tfds

    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        raise DataError(
            f"TFDS dataset {name!r} is not an image-classification dataset "
            f"(needs an Image and a ClassLabel feature; has {', '.join(features.keys())})."
        )
    pick = lambda keys, pref: pref if pref in keys else keys[0]  # noqa: E731
    return pick(images, "image"), pick(labels, "label")


def _split_names(builder: Any, overrides: dict[str, str]) -> dict[str, str]:
    """Maps the three roles onto TFDS split strings (see module docstring)."""
    available = set(builder.info.splits.keys())
    if not available:
        # Split metadata unknown (e.g. under tfds.testing.mock_data): assume
        # the common train/test layout.
        available = {"train", "test"}
    if "train" not in available and "train" not in overrides:
        raise DataError(
            f"TFDS dataset {builder.name!r} has no 'train' split "
            f"(splits: {', '.join(sorted(available))}); pass the split names explicitly."
        )
    if "test" in available:
        test = "test"
        val = "validation" if "validation" in available else f"train[{_HOLDOUT}:]"
    elif "validation" in available:
        test, val = "validation", f"train[{_HOLDOUT}:]"
    else:
        raise DataError(
            f"TFDS dataset {builder.name!r} has neither a 'test' nor a 'validation' "
            f"split (splits: {', '.join(sorted(available))}); pass the split names explicitly."
        )
    train = f"train[:{_HOLDOUT}]" if val.startswith("train[") else "train"
    names = {"train": train, "validation": val, "test": test}
    names.update({k if k != "val" else "validation": v for k, v in overrides.items()})
    return names


def _tfds_split(builder: Any, role: str, split: str, image_key: str, label_key: str) -> Split:
    """A `Split` reading `split` of `builder` with images left encoded."""
    import tensorflow_datasets as tfds

    num_examples = _num_examples(builder, split)

    def make(shard_index: int, num_shards: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
        # even_splits reads only this shard's examples instead of skipping
        # through the whole split on every worker.
        shard = tfds.even_splits(split, n=num_shards)[shard_index] if num_shards > 1 else split
        ds = builder.as_dataset(
            split=shard,
            # Training: a seeded file order on top of the pipeline's shuffle
            # buffer, which cannot hold a large split's encoded images.
            shuffle_files=shuffle_seed is not None,
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
            decoders={image_key: tfds.decode.SkipDecoding()},
        )
        return ds.map(lambda ex: {"image": ex[image_key], "label": ex[label_key]})

    def read(example):
        return example["image"], tf.cast(example["label"], tf.int32)

    def decode(example):
        return decode_image(example["image"]), tf.cast(example["label"], tf.int32)

    return Split(name=f"{role} ({split})", num_examples=num_examples, make=make, decode=decode,
                 read=read)


def _num_examples(builder: Any, split: str) -> int:
    """Size of `split`, from metadata or (when unknown) by counting."""
    try:
        return int(builder.info.splits[split].num_examples)
    except Exception:  # unknown metadata (mock data) or an unprepared split
        pass
    import tensorflow_datasets as tfds

    try:
        ds = builder.as_dataset(split=split, decoders={
            k: tfds.decode.SkipDecoding()
            for k, f in builder.info.features.items()
            if isinstance(f, tfds.features.Image)
        })
    except Exception as e:
        raise DataError(f"TFDS dataset {builder.name!r} has no split {split!r}: {e}") from e
    n = int(ds.cardinality())
    if n < 0:
        n = int(ds.reduce(0, lambda count, _: count + 1))
    return n
