"""Fine-tune pretrained ViT weights on a folder of images on every GPU of one machine, with
`tf.distribute.MirroredStrategy` and `model.fit` (TensorFlow backend).

The same program as finetune_folder.py, distributed: the model and `compile` go inside
`strategy.scope()` (each variable is mirrored on every replica, and each step averages the
gradients of the whole global batch); `fit` and `evaluate` take the same `tf_data` pipelines
and split each global batch (`--batch-size`) over the replicas. Evaluation batches are filled
up with copies that weigh nothing, so that each splits evenly too (`full_batches`).

    KERAS_BACKEND=tensorflow python examples/finetune_mirrored.py photos/ \
        --weights imagenet21k --model ViTB16 --image-size 224 --epochs 10 --batch-size 64

Without a GPU, `--cpu-devices 2` splits the CPU into two logical devices (two replicas), to try
the script anywhere.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # MirroredStrategy is TensorFlow's

import keras
import tensorflow as tf

import keras_vit
import tf_data


def full_batches(source, role, config):
    """An evaluation split in full global batches, the last one padded with zero-weight copies
    of an example: accuracy ignores them (the loss, a mean over the batch, counts them).

    Keras 3.15 under a strategy builds its metrics from the first batch of every `evaluate`
    (validation included) and fails ("Inputs to operation AddN ... must have the same size")
    when that batch does not split evenly over the replicas, e.g. a split of 41 images with
    --batch-size 64 on 2 GPUs: full batches always do."""
    n = source.split(role).num_examples
    padding = -n % config.batch_size
    examples = tf_data.build_dataset(source, role, config, training=False).unbatch()
    examples = examples.map(lambda image, label: (image, label, 1.0))
    filler = examples.take(1).map(lambda image, label, weight: (image, label, 0.0))
    batches = examples.concatenate(filler.repeat(padding)).batch(config.batch_size)
    # unbatch() forgets the length; without it `fit` would warn that the data ran out.
    return batches.apply(tf.data.experimental.assert_cardinality((n + padding) // config.batch_size))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--weights", required=True,
                        help="a registry name of --model's variant, or a checkpoint file")
    parser.add_argument("--model", default="ViTB16", choices=sorted(keras_vit.VARIANTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="global, over all replicas")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="without GPUs: split the CPU into this many logical devices")
    parser.add_argument("--output", default="finetuned_vit.keras")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        parser.error("MirroredStrategy needs KERAS_BACKEND=tensorflow "
                     "(see finetune_data_parallel.py for JAX)")

    if args.cpu_devices and not tf.config.list_physical_devices("GPU"):
        # Before TensorFlow runs anything: logical devices cannot change afterwards.
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    strategy = tf.distribute.MirroredStrategy()  # every GPU, else the (logical) CPUs
    print(f"{strategy.num_replicas_in_sync} replicas: {strategy.extended.worker_devices}")

    if args.batch_size % strategy.num_replicas_in_sync:
        parser.error(f"--batch-size {args.batch_size} does not split over "
                     f"{strategy.num_replicas_in_sync} replicas")

    source = tf_data.load_source(args.folder)
    config = tf_data.PipelineConfig(image_size=args.image_size, batch_size=args.batch_size)
    # Global batches: under the strategy, `fit` and `evaluate` split each one over the
    # replicas (`strategy.experimental_distribute_dataset`), and an epoch is one pass.
    train = tf_data.build_dataset(source, "train", config, training=True)  # full batches
    validation = full_batches(source, "validation", config)
    test = full_batches(source, "test", config)

    with strategy.scope():  # variables (model, optimizer, metrics) created here are mirrored
        model = getattr(keras_vit, args.model)(
            weights=args.weights, image_size=args.image_size, classes=source.num_classes,
            head="new", classifier_activation=None)
        steps = args.epochs * tf_data.steps_per_epoch(source, "train", args.batch_size)
        schedule = keras_vit.WarmupDecay(args.lr, total_steps=steps, warmup_steps=steps // 20)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, global_clipnorm=1.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      weighted_metrics=["accuracy"])  # weighted: the padding counts for nothing
    model.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)

    loss, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy {accuracy:.4f} on {source.split('test').num_examples} images")
    model.save(args.output)  # loads anywhere, on any backend, without a strategy
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
