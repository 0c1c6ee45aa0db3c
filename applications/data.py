"""The run's datasets, built per input context from a `RunConfig`."""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

import tf_data


@dataclasses.dataclass
class RunData:
    """A loaded source plus `dataset_fn(input_context=None)` per role.

    With tf.distribute, pass a `*_fn` to
    `strategy.distribute_datasets_from_function`; without, call it.
    """

    source: tf_data.Source
    train_config: tf_data.PipelineConfig
    eval_config: tf_data.PipelineConfig

    def dataset_fn(self, role: str, training: bool) -> Callable[..., tf.data.Dataset]:
        """``dataset_fn(input_context=None)`` for `role`."""
        config = self.train_config if training else self.eval_config
        return tf_data.make_dataset_fn(self.source, role, config, training=training)

    def dataset(self, role: str, training: bool = False) -> tf.data.Dataset:
        """The single-pipeline dataset of `role`."""
        return self.dataset_fn(role, training)()

    @property
    def one_hot(self) -> bool:
        return self.train_config.uses_one_hot


def load_source(config) -> tf_data.Source:
    """The `Source` named by config.dataset (folders: seeded hold-out)."""
    return tf_data.load_source(
        config.dataset,
        data_dir=config.data_dir,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        split_seed=config.split_seed,
        # A read-only image folder's index of files goes to the run directory.
        index_dir=getattr(config, "output", None),
    )


def build_run_data(config, source: tf_data.Source, image_size, data_seed: int) -> RunData:
    """Pipeline configs for training (augmented) and evaluation (resize only).

    Args:
        config: The `RunConfig`.
        source: The loaded dataset.
        image_size: The model's (height, width).
        data_seed: Seed of shuffling/augmentation (varies on resume so a
            resumed run does not replay the first epochs' order).
    """
    crop = None if config.crop_min_area >= 1 else (config.crop_min_area, 1.0)
    common = dict(
        image_size=image_size,
        batch_size=config.batch_size,
        include_preprocessing=config.include_preprocessing,
        seed=data_seed,
    )
    train = tf_data.PipelineConfig(
        **common,
        crop_area=crop,
        flip=config.flip,
        randaugment=tuple(config.randaugment) if config.randaugment else None,
        mixup_alpha=config.mixup,
        cutmix_alpha=config.cutmix,
        one_hot=True if config.label_smoothing else None,
        batch_transforms=tuple(getattr(config, "augment", None) or ()),
        repeat=True,
    )
    # Evaluation: plain resize, but the same label format as training, since
    # the compiled loss and metrics expect it.
    evaluation = dataclasses.replace(
        train, crop_area=None, flip=False, randaugment=None, mixup_alpha=0.0,
        cutmix_alpha=0.0, one_hot=train.uses_one_hot, batch_transforms=(),
    )
    return RunData(source=source, train_config=train, eval_config=evaluation)
