"""`keras-vit evaluate`: top-1/top-5 accuracy and loss of a saved model on a split."""

from __future__ import annotations

import json
import os
import warnings

import keras

import tf_data
from applications import config as config_lib
from applications import any_size, modeling, saved
from applications.options import UsageError


def run(args, log=print) -> int:
    """Evaluates the saved model on `args.split` of the dataset it was trained on.

    Returns:
        0; results are printed as JSON and written to OUTPUT/eval_<split>.json.
    """
    loaded = saved.load(args.output, args.model_path)
    dataset = args.dataset or loaded.run.get("dataset")
    if not dataset:
        raise UsageError("The model has no run config.json; pass --dataset.")
    source = tf_data.load_source(
        dataset,
        data_dir=args.data_dir or loaded.run.get("data_dir"),
        # The same held-out shares as in training, or test would leak.
        val_fraction=loaded.run.get("val_fraction", 0.1),
        test_fraction=loaded.run.get("test_fraction", 0.2),
        split_seed=loaded.run.get("split_seed", 0),
    )
    if source.num_classes != loaded.num_classes:
        raise UsageError(
            f"The model predicts {loaded.num_classes} classes but {dataset!r} has "
            f"{source.num_classes}."
        )
    batch_size = args.batch_size or min(loaded.run.get("batch_size", 256), 256)
    if getattr(args, "keep_aspect", False):
        short, multiple = any_size.check_model(loaded)
        ds = any_size.dataset(source, args.split, short, multiple, batch_size,
                              loaded.include_preprocessing)
    else:
        config = tf_data.PipelineConfig(
            image_size=loaded.image_size,
            batch_size=batch_size,
            include_preprocessing=loaded.include_preprocessing,
        )
        ds = tf_data.build_dataset(source, args.split, config, training=False)
    loss, metrics = modeling.loss_and_metrics(source.num_classes, one_hot=False)
    loaded.model.compile(loss=loss, metrics=metrics)
    with warnings.catch_warnings():
        # A --keep-aspect dataset (batches grouped by size) has no known length, for which
        # Keras warns at its end that the input "ran out of data": that is the whole split.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        result = loaded.model.evaluate(
            ds, verbose=args.verbose if args.verbose is not None else "auto", return_dict=True)
    report = {
        "model": loaded.path,
        "dataset": dataset,
        "split": args.split,
        "examples": source.split(args.split).num_examples,
        "backend": keras.backend.backend(),
        **({"keep_aspect": True} if getattr(args, "keep_aspect", False) else {}),
        **{k: float(v) for k, v in result.items()},
    }
    log(json.dumps(report, indent=2))
    if args.output and os.path.isdir(args.output):
        config_lib.write_json_atomic(os.path.join(args.output, f"eval_{args.split}.json"), report)
    return 0
