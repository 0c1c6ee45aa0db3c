"""Classify image files with a pretrained ViT, then save their features for your own model.

Loads an ImageNet classifier by name (downloaded once, verified and cached in
`$KERAS_HOME/keras_vit`), prints its top classes for each file with
`keras_vit.decode_predictions`, then builds the same weights without the head
(`include_top=False, pooling="token"`: the class token after the final LayerNorm, the input
of the head) and saves one feature vector per image as a .npy array, in the order given.

    KERAS_BACKEND=jax python examples/extract_features.py cat.jpg dog.png \
        --model ViTB16 --weights imagenet --output features.npy

Runs on every backend. `--image-size` defaults to the checkpoint's own resolution (384 px for
"imagenet"); images of any size are resized to it (bilinear, whole image).
"""

import argparse

import keras
import numpy as np

import keras_vit


def load_images(paths, size):
    """RGB pixels in [0, 255] (the models scale them themselves), resized to (height, width)."""
    return np.stack([
        keras.utils.img_to_array(keras.utils.load_img(path, target_size=size,
                                                      interpolation="bilinear"))
        for path in paths])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, BMP, ...)")
    parser.add_argument("--model", default="ViTB16", choices=sorted(keras_vit.VARIANTS))
    parser.add_argument("--weights", default="imagenet",
                        help="an ImageNet classifier's registry name, or a checkpoint file")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--output", default="features.npy")
    args = parser.parse_args(argv)
    variant = getattr(keras_vit, args.model)

    classifier = variant(weights=args.weights, image_size=args.image_size)  # softmax outputs
    size = classifier.input_shape[1:3]
    images = load_images(args.images, size)
    probabilities = classifier.predict(images, verbose=0)
    for path, top in zip(args.images, keras_vit.decode_predictions(probabilities, top=args.top)):
        print(f"{path}: " + ", ".join(f"{name} ({score:.3f})" for _, name, score in top))

    backbone = variant(weights=args.weights, image_size=size, include_top=False,
                       pooling="token")
    features = backbone.predict(images, verbose=0)
    np.save(args.output, features)
    print(f"saved {args.output}: {features.shape[0]} images x {features.shape[1]} features")


if __name__ == "__main__":
    main()
