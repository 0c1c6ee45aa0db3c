"""Train a small ViT with `model.fit` on the embedded digits: the shortest complete program.

Copy it and change the dataset, the model or the recipe. Runs on every backend:

    KERAS_BACKEND=jax python examples/train_digits.py --epochs 30

The data come from `tf_data` (tf.data on the CPU, whatever the backend); the model is
`keras_vit.ViT`; everything else is plain Keras: `compile`, `fit`, `evaluate`, `save`.
"""

import argparse

import keras

import keras_vit
import tf_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default="digits_vit.keras")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # The same initial weights and dropout masks on every run (and the data's order, below).
    keras.utils.set_random_seed(args.seed)

    # 8x8 images, 70/10/20 stratified split, shipped inside scikit-learn: nothing to download.
    source = tf_data.load_source("digits")
    # A gentle crop (80-100% of the area): the inception crop's 5% would cut the digit away.
    config = tf_data.PipelineConfig(image_size=(8, 8), batch_size=args.batch_size,
                                    crop_area=(0.8, 1.0), seed=args.seed)
    train = tf_data.build_dataset(source, "train", config, training=True)
    validation = tf_data.build_dataset(source, "validation", config, training=False)
    test = tf_data.build_dataset(source, "test", config, training=False)

    # A ViT of 2x2 patches (16 tokens + the class token), as `keras-vit train`'s digits preset.
    model = keras_vit.ViT(image_size=8, patch_size=2, hidden_size=64, num_layers=4,
                          num_heads=4, mlp_dim=128, classes=source.num_classes,
                          classifier="gap", dropout_rate=0.1, classifier_activation=None)
    steps = args.epochs * tf_data.steps_per_epoch(source, "train", args.batch_size)
    schedule = keras_vit.WarmupDecay(1e-3, total_steps=steps, warmup_steps=steps // 10)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)

    loss, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy {accuracy:.4f}")
    model.save(args.output)  # loads back with `import keras_vit; keras.saving.load_model(...)`
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
