"""Fine-tune pretrained ViT weights on a folder of images on every accelerator of one machine,
with `keras.distribution.DataParallel` and `model.fit` (JAX backend).

The same program as finetune_folder.py, distributed: with the distribution set, every variable
the model and its optimizer create is replicated on each device, and `fit` and `evaluate` split
each global batch (`--batch-size`) evenly over the devices. An evaluation batch must split
evenly too, so the last one is filled up with copies that weigh nothing (`full_batches`).

    KERAS_BACKEND=jax python examples/finetune_data_parallel.py photos/ \
        --weights imagenet21k --model ViTB16 --image-size 224 --epochs 10 --batch-size 64

Without accelerators, `XLA_FLAGS=--xla_force_host_platform_device_count=2` makes JAX show the
CPU as two devices, to try the script anywhere. To also shard the model's weights, see
`keras_vit.distribution.model_parallel`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # keras.distribution runs on JAX

import keras
import tensorflow as tf

import keras_vit
import tf_data


def full_batches(source, role, config):
    """An evaluation split in full global batches, the last one padded with zero-weight copies
    of an example: accuracy ignores them (the loss, a mean over the batch, counts them)."""
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
    parser.add_argument("--batch-size", type=int, default=64, help="global, over all devices")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--output", default="finetuned_vit.keras")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        parser.error("keras.distribution needs KERAS_BACKEND=jax "
                     "(see finetune_mirrored.py for TensorFlow)")

    devices = keras.distribution.list_devices()  # every GPU / TPU core, else the CPU(s)
    if args.batch_size % len(devices):
        parser.error(f"--batch-size {args.batch_size} does not split over {len(devices)} devices")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    print(f"{len(devices)} devices: {devices}")

    source = tf_data.load_source(args.folder)
    config = tf_data.PipelineConfig(image_size=args.image_size, batch_size=args.batch_size)
    train = tf_data.build_dataset(source, "train", config, training=True)  # full batches
    validation = full_batches(source, "validation", config)
    test = full_batches(source, "test", config)

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
    model.save(args.output)  # loads anywhere, on any backend, without a distribution
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
