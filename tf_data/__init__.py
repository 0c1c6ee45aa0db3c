"""tf_data: the `tf.data` input pipeline of keras-vit.

Pure TensorFlow data loading that feeds `model.fit` on every Keras backend:

    source = tf_data.load_source("digits")          # or a folder, or "cifar10"
    config = tf_data.PipelineConfig(image_size=(32, 32), batch_size=64)
    train = tf_data.build_dataset(source, "train", config, training=True)
    test = tf_data.build_dataset(source, "test", config, training=False)

This package never imports `keras_vit` or `applications`.
"""

from tf_data.errors import DataError
from tf_data.loading import load_source
from tf_data.pipeline import (
    PipelineConfig,
    build_dataset,
    check_batch_size,
    make_dataset_fn,
    steps_per_epoch,
)
from tf_data.preprocess import decode_image, scale_for_model
from tf_data.source import SPLIT_ROLES, Source, Split
from tf_data.subset import subset

__all__ = [
    "DataError",
    "PipelineConfig",
    "SPLIT_ROLES",
    "Source",
    "Split",
    "build_dataset",
    "check_batch_size",
    "decode_image",
    "load_source",
    "make_dataset_fn",
    "scale_for_model",
    "steps_per_epoch",
    "subset",
]
