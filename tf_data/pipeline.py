"""Builds the batched `tf.data` pipelines that feed `model.fit`.

The output is ``(images, labels)``: float32 images [B, H, W, 3] scaled for the
model (see `scale_for_model`) and int32 class indices [B] -- or float32
one-hot labels [B, classes] when MixUp/CutMix need soft targets. The same
pipeline works as `model.fit` input on the TensorFlow, JAX and PyTorch
backends (Keras converts the batches).

Distribution: `make_dataset_fn` returns a ``dataset_fn(input_context)`` for
`tf.distribute.Strategy.distribute_datasets_from_function`; each input
pipeline then reads its own shard and batches ``global // num_replicas``.
Without a strategy, `process_index`/`process_count` shard across processes
(e.g. one per host with JAX or torch DDP).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import tensorflow as tf

from tf_data import augment, preprocess
from tf_data.errors import DataError
from tf_data.source import Source

AUTOTUNE = tf.data.AUTOTUNE
# Static parallelism used when tf.data autotuning is off (the default, see
# `PipelineConfig.autotune`), and the size of the pipeline's private thread pool.
_PARALLEL_CALLS = max(1, min(os.cpu_count() or 1, 16))
_PREFETCH_BATCHES = 2
# "auto" caching keeps the undecoded elements (file paths, encoded bytes or
# small arrays) of splits up to this size in memory.
_AUTO_CACHE_MAX_EXAMPLES = 200_000
_DEFAULT_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How images are prepared and batched.

    Attributes:
        image_size: Model resolution (height, width).
        batch_size: Global batch size (over all replicas and processes).
        include_preprocessing: True: output pixels in [0, 255] (the model
            rescales inside); False: output in [-1, 1].
        seed: Seed of shuffling and augmentation.
        crop_area: Area range of the inception crop for training; None
            disables the crop (training then resizes the whole image).
        aspect_ratio: Aspect-ratio range of the inception crop.
        flip: Random horizontal flips for training; None uses the source's
            default (on, except for digits).
        randaugment: (num_ops, magnitude) for Keras RandAugment, or None.
        mixup_alpha: MixUp strength; 0 disables.
        cutmix_alpha: CutMix strength; 0 disables.
        batch_transforms: Extra augmentations of training batches (pixels in
            [0, 255]), applied after MixUp/CutMix, in order. Each is a layer
            class path with optional keyword arguments, e.g.
            ``"keras_cv.layers.AugMix"`` or
            ``"keras_cv.layers.RandAugment(magnitude=0.3)"`` (keras-cv: the
            `cv` extra; ``value_range=(0, 255)`` and the pipeline's seed are
            filled in when the layer takes them), a layer instance (Keras or
            keras-cv), or a callable on ``{"images", "labels"}`` batch dicts.
            Layers see the images alone with integer labels and the dict with
            one-hot labels (see `augment.layer_transform`). They run in
            tf.data, so whatever `KERAS_BACKEND` is.
        one_hot: Force one-hot labels even without MixUp/CutMix; None: one-hot
            exactly when MixUp or CutMix is on.
        cache: "auto", True, False, or a file path prefix for `Dataset.cache`.
            Caches undecoded elements, before shuffling.
        shuffle_buffer: Shuffle buffer size; None: the whole split when its
            undecoded elements are small (paths, tiny arrays), else
            min(split size, 10000).
        repeat: Training only: repeat forever (then pass `steps_per_epoch` to
            fit, as the `keras-vit` programs do). Off by default: a plain
            `model.fit(dataset, epochs=N)` ends each epoch after one pass.
        autotune: Let tf.data tune parallelism and prefetching. Off by
            default: on few cores the tuning thread's own work costs more
            than it finds (the static pipeline: one map call per CPU core, two
            prefetched batches; figures in benchmarks/RESULTS.md, issue 24).
            A test runs an autotuned pipeline in a subprocess and requires a
            prompt exit (TF 2.21 once stalled destroying one).
        threads: Size of the pipeline's private thread pool; None: one thread
            per CPU core (faster than the shared pool, benchmarks/RESULTS.md);
            0: TensorFlow's shared inter-op pool.
        deterministic: Training only: False lets parallel map calls finish
            out of order (each image keeps its own crop and flip, but batches
            are no longer reproducible).
        scaled_decode: Evaluation (and training without the crop): JPEGs at
            least twice the model's size in both dimensions are decoded at
            1/2, 1/4 or 1/8 scale by libjpeg, then resized (see
            `preprocess.decode_resize`); False decodes every image whole.
    """

    image_size: tuple[int, int]
    batch_size: int
    include_preprocessing: bool = True
    seed: int = 0
    crop_area: tuple[float, float] | None = preprocess.INCEPTION_AREA_RANGE
    aspect_ratio: tuple[float, float] = preprocess.INCEPTION_ASPECT_RANGE
    flip: bool | None = None
    randaugment: tuple[int, float] | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    batch_transforms: Sequence[Callable[[dict], dict]] = ()
    one_hot: bool | None = None
    cache: bool | str = "auto"
    shuffle_buffer: int | None = None
    repeat: bool = False
    autotune: bool = False
    threads: int | None = None
    deterministic: bool = True
    scaled_decode: bool = True

    def __post_init__(self):
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if self.batch_size < 1:
            raise DataError(f"Batch size must be positive, got {self.batch_size}.")
        if min(self.image_size) < 1:
            raise DataError(f"Image size must be positive, got {self.image_size}.")

    @property
    def uses_one_hot(self) -> bool:
        """Whether labels come out one-hot (needs categorical, not sparse, loss)."""
        if self.one_hot is not None:
            return self.one_hot
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def steps_per_epoch(source: Source, role: str, batch_size: int) -> int:
    """Full global batches in one pass over a split (drop-remainder)."""
    return source.split(role).num_examples // batch_size


def check_batch_size(source: Source, role: str, batch_size: int) -> None:
    """Raises `DataError` when `batch_size` exceeds the examples of a split."""
    n = source.split(role).num_examples
    if batch_size > n:
        raise DataError(
            f"Batch size {batch_size} is larger than the {n} examples of the "
            f"{role} split of {source.name!r}; use --batch-size {max(1, _pow2_below(n))} "
            "or less."
        )


def build_dataset(
    source: Source,
    role: str,
    config: PipelineConfig,
    *,
    training: bool,
    input_context: tf.distribute.InputContext | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Builds the batched pipeline for one split.

    Args:
        source: The dataset.
        role: "train", "validation" or "test".
        config: Preprocessing and batching options.
        training: True: shuffle, augment, drop remainder, repeat (if
            `config.repeat`); False: plain resize, keep every example in order.
        input_context: From `distribute_datasets_from_function`; selects this
            pipeline's shard and its per-replica batch size.
        process_index: This process's index when sharding across processes
            without an input context.
        process_count: Number of processes.

    Returns:
        A `tf.data.Dataset` of ``(images, labels)`` batches.

    Raises:
        DataError: For a batch size larger than the data or not divisible by
            the number of replicas/processes.
    """
    split = source.split(role)
    parallel = AUTOTUNE if config.autotune else _PARALLEL_CALLS
    shard_index, num_shards, batch = _shard_and_batch(
        config.batch_size, input_context, process_index, process_count
    )
    if training:
        check_batch_size(source, role, config.batch_size)
    seed = config.seed * 1_000_003 + shard_index  # different streams per shard

    ds = split.make(shard_index, num_shards, shuffle_seed=seed if training else None)
    ds = _maybe_cache(ds, config.cache, split.num_examples)
    one_hot = source.num_classes if config.uses_one_hot else None

    if not training:
        def prepare_eval(*element):
            if split.read is not None:  # encoded: decode (and downscale) in one pass
                encoded, label = split.read(*element)
                return preprocess.decode_resize(encoded, config.image_size, config.scaled_decode), label
            image, label = split.decode(*element)
            return preprocess.resize(image, config.image_size), label

        ds = ds.map(prepare_eval, num_parallel_calls=parallel)
        ds = ds.batch(batch, drop_remainder=False)
        return _finish(ds, config, one_hot, training=False)

    buffer = config.shuffle_buffer or (
        split.num_examples if split.small_elements
        else min(split.num_examples, _DEFAULT_SHUFFLE_BUFFER)
    )
    ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    if config.repeat:
        ds = ds.repeat()
    # One random int64 per example, the stateless seed pair (it, seed) inside the
    # parallel map; rerandomized (deterministically) on each pass when the dataset
    # is iterated again. (Pairs drawn as `random().batch(2)` cost a batching step
    # per example in the pipeline's sequential part.)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, seeds)
    flip = source.flip if config.flip is None else config.flip

    def prepare_train(element, drawn):
        args = element if isinstance(element, tuple) else (element,)
        pair = tf.stack([drawn, tf.constant(seed, tf.int64)])
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 2))
        if split.read is not None:
            # Encoded images: a JPEG is decoded only inside its crop window
            # (the same window and pixels as decoding it whole, then cropping).
            encoded, label = split.read(*args)
            if config.crop_area is not None:
                crop = preprocess.decode_crop(
                    encoded, crop_seed, config.crop_area, config.aspect_ratio
                )
                image = preprocess.resize(crop, config.image_size)
            else:
                image = preprocess.decode_resize(encoded, config.image_size, config.scaled_decode)
        else:
            image, label = split.decode(*args)
            if config.crop_area is not None:
                image = preprocess.inception_crop(
                    image, config.image_size, crop_seed, config.crop_area, config.aspect_ratio
                )
            else:
                image = preprocess.resize(image, config.image_size)
        if flip:
            image = preprocess.random_flip(image, flip_seed)
        return image, label

    ds = ds.map(prepare_train, num_parallel_calls=parallel)
    if config.randaugment is not None:
        randaugment = augment.make_randaugment(*config.randaugment, seed=seed)
        # Sequential: the Keras layer's random state must advance in order.
        ds = ds.map(lambda image, label: (randaugment(image), label))
    ds = ds.batch(batch, drop_remainder=True)

    mix = augment.make_mix(config.mixup_alpha, config.cutmix_alpha, seed=seed)
    hooks = [augment.batch_transform(spec, seed) for spec in config.batch_transforms]
    if mix is not None or hooks:
        if one_hot:
            ds = ds.map(lambda x, y: (x, tf.one_hot(y, one_hot, dtype=tf.float32)))
            one_hot = None  # done
        batch_seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, batch_seeds.batch(2, drop_remainder=True))

        def transform(batch_xy, pair):
            batch = {"images": batch_xy[0], "labels": batch_xy[1]}
            if mix is not None:
                batch = mix({**batch, "seed": pair})
            for hook in hooks:  # user hooks see exactly {"images", "labels"}
                batch = hook({"images": batch["images"], "labels": batch["labels"]})
            return tf.cast(batch["images"], tf.float32), batch["labels"]

        try:
            ds = ds.map(transform)  # sequential, for reproducible layer states
        except Exception as error:  # noqa: BLE001 (a layer that cannot run here: say which)
            if not config.batch_transforms:
                raise
            names = ", ".join(s if isinstance(s, str) else type(s).__name__
                              for s in config.batch_transforms)
            raise DataError(
                f"The batch transform(s) {names} cannot run in the tf.data pipeline: "
                f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}. "
                f"Keras-native alternatives: {', '.join(augment.KERAS_NATIVE)}."
            ) from error
    return _finish(ds, config, one_hot, training=True)


def make_dataset_fn(
    source: Source,
    role: str,
    config: PipelineConfig,
    *,
    training: bool,
    process_index: int = 0,
    process_count: int = 1,
) -> Callable[[tf.distribute.InputContext | None], tf.data.Dataset]:
    """Returns ``dataset_fn(input_context=None)`` building this split's pipeline.

    Suits `tf.distribute.Strategy.distribute_datasets_from_function`; called
    with no argument it builds the single-pipeline dataset.
    """

    def dataset_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        return build_dataset(
            source,
            role,
            config,
            training=training,
            input_context=input_context,
            process_index=process_index,
            process_count=process_count,
        )

    return dataset_fn


def _shard_and_batch(
    global_batch: int,
    input_context: tf.distribute.InputContext | None,
    process_index: int,
    process_count: int,
) -> tuple[int, int, int]:
    """Returns (shard index, number of shards, batch size of this pipeline)."""
    if input_context is not None:
        try:
            batch = input_context.get_per_replica_batch_size(global_batch)
        except ValueError as e:
            raise DataError(
                f"Global batch size {global_batch} is not divisible by the "
                f"{input_context.num_replicas_in_sync} replicas."
            ) from e
        # A pipeline serves several replicas when there are more replicas than
        # pipelines: it batches per replica and tf.distribute splits batches.
        return input_context.input_pipeline_id, input_context.num_input_pipelines, batch
    if process_count < 1 or not 0 <= process_index < process_count:
        raise DataError(f"Bad process index {process_index} of {process_count}.")
    if global_batch % process_count:
        raise DataError(
            f"Global batch size {global_batch} is not divisible by the "
            f"{process_count} processes."
        )
    return process_index, process_count, global_batch // process_count


def _maybe_cache(ds: tf.data.Dataset, cache: bool | str, num_examples: int) -> tf.data.Dataset:
    """Caches undecoded elements according to the `cache` option."""
    if cache == "auto":
        return ds.cache() if num_examples <= _AUTO_CACHE_MAX_EXAMPLES else ds
    if cache is True:
        return ds.cache()
    if isinstance(cache, str) and cache:
        return ds.cache(cache)
    return ds


def _finish(
    ds: tf.data.Dataset, config: PipelineConfig, one_hot: int | None, training: bool
) -> tf.data.Dataset:
    """One-hot labels if needed, scale pixels for the model, prefetch, options."""

    def finish(images, labels):
        images = preprocess.scale_for_model(images, config.include_preprocessing)
        if one_hot:
            labels = tf.one_hot(labels, one_hot, dtype=tf.float32)
        return images, labels

    parallel = AUTOTUNE if config.autotune else _PARALLEL_CALLS
    if one_hot or not config.include_preprocessing:  # else nothing to do per batch
        ds = ds.map(finish, num_parallel_calls=parallel)
    ds = ds.prefetch(AUTOTUNE if config.autotune else _PREFETCH_BATCHES)
    options = tf.data.Options()
    options.autotune.enabled = config.autotune
    threads = _PARALLEL_CALLS if config.threads is None else config.threads
    if threads:
        options.threading.private_threadpool_size = threads
    if training:
        options.deterministic = config.deterministic
    return ds.with_options(options)


def _pow2_below(n: int) -> int:
    """Largest power of two <= n (a friendly batch-size suggestion)."""
    p = 1
    while p * 2 <= n:
        p *= 2
    return p
