"""Fine-tune pretrained ViT weights on a folder of images with `model.fit`.

The folder holds one sub-folder per class (JPEG, PNG, WebP, BMP, GIF; unreadable files are
skipped and reported); `tf_data` splits it into train/validation/test. The weights are a
registry name (downloaded and cached, e.g. "imagenet21k") or a checkpoint file (official
`.npz`, timm or HF `.safetensors`, ...). The recipe is the paper's fine-tuning one: SGD with
momentum, a new zero-initialised head, cosine decay after a short warmup.

    KERAS_BACKEND=jax python examples/finetune_folder.py photos/ --weights imagenet21k \
        --model ViTB16 --image-size 224 --epochs 10
    KERAS_BACKEND=jax python examples/finetune_folder.py photos/ --weights lvd142m \
        --model DINOv2S14Reg4 --image-size 224 --epochs 10

The later ViTs (DINOv2, SigLIP, MAE, DeiT-III; docs/later_vits.md) take the same call; their
models normalise their inputs as their weights expect.
"""

import argparse

import keras

import keras_vit
import tf_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--weights", required=True,
                        help="a registry name of --model's variant, or a checkpoint file")
    parser.add_argument("--model", default="ViTB16",
                        choices=sorted(keras_vit.VARIANTS) + sorted(keras_vit.FAMILY_VARIANTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--output", default="finetuned_vit.keras")
    args = parser.parse_args(argv)

    source = tf_data.load_source(args.folder)
    config = tf_data.PipelineConfig(image_size=args.image_size, batch_size=args.batch_size)
    train = tf_data.build_dataset(source, "train", config, training=True)
    validation = tf_data.build_dataset(source, "validation", config, training=False)
    test = tf_data.build_dataset(source, "test", config, training=False)

    # The variant's constructor loads the weights, resamples the position embeddings to this
    # resolution and, with head="new", leaves a zero-initialised head for our classes.
    model = getattr(keras_vit, args.model)(
        weights=args.weights, image_size=args.image_size, include_top=True,
        classes=source.num_classes, head="new", classifier_activation=None)
    steps = args.epochs * tf_data.steps_per_epoch(source, "train", args.batch_size)
    schedule = keras_vit.WarmupDecay(args.lr, total_steps=steps, warmup_steps=steps // 20)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, global_clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)

    loss, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy {accuracy:.4f} on {source.split('test').num_examples} images")
    model.save(args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
