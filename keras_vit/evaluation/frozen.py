"""Frozen features of a model for the evaluations: any layer, any pooling."""

from __future__ import annotations

import keras
import numpy as np

from keras_vit.evaluation.fewshot import L2_REG, SHOTS, fewshot_accuracy
from keras_vit.features import feature_extractor
from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.pooling import POOLINGS, TokenPooling


def representation_model(model, layer=None, pooling=None, norm=False):
    """The model from images to the frozen representation the evaluations read, (B, D).

    Args:
        model: a keras-vit model (a classifier, a backbone with or without pooling, a loaded
            `.keras` file), or any image model ending in a `Dense` classifier.
        layer: None: the model's own representation: what its classifier reads (the pooled,
            normalised class token or average, or `pre_logits`), else its output (pooled
            with `pooling` if it is a token sequence). An encoder block's index (from 0,
            negative from the end): that block's tokens (`keras_vit.feature_extractor`),
            pooled with `pooling`.
        pooling: `"token"`, `"avg"` or `"max"` for token sequences (default: the class token
            where the model has one, else the average). Given with `layer=None`, it pools the
            last block's normalised tokens, the input of the model's own pooling.
        norm: with `layer`: pass the block's tokens through the final LayerNorm first.

    Returns:
        A `keras.Model` sharing the model's layers and weights.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}.")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    if layer is None and pooling is None:
        last = model.layers[-1]
        output = last.input if isinstance(last, keras.layers.Dense) else model.output
        if len(output.shape) == 2:
            return keras.Model(inputs, output, name=f"{model.name}_representation")
        if len(output.shape) != 3:
            raise ValueError(f"Model '{model.name}' gives {tuple(output.shape)}; expected "
                             "(B, D) features or (B, T, D) tokens.")
        tokens = output
    else:
        tokens = feature_extractor(model, blocks=-1 if layer is None else layer,
                                   norm=layer is None or norm).output
    encoder = next((l for l in model.layers if isinstance(l, PatchEncoder)), None)
    has_class_token = encoder is not None and encoder.use_class_token
    if pooling is None:
        pooling = "token" if has_class_token else "avg"
    elif pooling == "token" and encoder is not None and not has_class_token:
        raise ValueError(f"Model '{model.name}' has no class token; use pooling 'avg' or 'max'.")
    pooled = TokenPooling(pooling, name="representation_pool")(tokens)
    return keras.Model(inputs, pooled, name=f"{model.name}_representation")


def extract(model, data, batch_size=128):
    """Features and labels of `data` under `model` (e.g. from `representation_model`).

    Args:
        model: images -> (B, D).
        data: (images, labels) arrays, or an iterable of (images, labels) batches (a
            `tf.data.Dataset`, a generator); further elements of a batch are ignored.
        batch_size: for arrays.

    Returns:
        (features (N, D) float32, labels (N,) int).
    """
    if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
        all_images, all_labels = data
        batches = ((all_images[i:i + batch_size], all_labels[i:i + batch_size])
                   for i in range(0, len(all_images), batch_size))
    else:
        batches = data.as_numpy_iterator() if hasattr(data, "as_numpy_iterator") else data
    features, classes = [], []
    for batch in batches:
        images, labels = batch[0], batch[1]
        features.append(np.asarray(keras.ops.convert_to_numpy(
            model.predict_on_batch(np.asarray(images))), dtype=np.float32))
        labels = np.asarray(keras.ops.convert_to_numpy(labels))
        classes.append(labels.argmax(-1) if labels.ndim == 2 else labels.reshape(-1))
    if not features:
        raise ValueError("The data yielded no batch.")
    return np.concatenate(features), np.concatenate(classes).astype(int)


def fewshot(model, train, test, shots=SHOTS, seeds=3, l2_reg=L2_REG, layer=None, pooling=None,
            norm=False, batch_size=128, num_classes=None):
    """The paper's few-shot linear accuracy of a model's frozen representation.

    Args:
        model: see `representation_model`.
        train: the images the shots are drawn from: (images, labels) arrays or an iterable of
            batches (see `extract`).
        test: the images the accuracy is measured on, likewise.
        shots: images per class (big_vision: 1, 5, 10, 25).
        seeds: shot draws, seeds 0 .. seeds - 1 (big_vision: 3).
        l2_reg: the ridge penalty (big_vision: 2^10).
        layer, pooling, norm: which representation (`representation_model`).
        batch_size: for array inputs.
        num_classes: K (default: from the labels).

    Returns:
        {shots: {"mean", "std", "accuracies"}}, see `fewshot_accuracy`.

    Example:

    >>> import numpy as np, keras_vit
    >>> vit = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=16, num_layers=1,
    ...                     num_heads=2, mlp_dim=16, classes=2)
    >>> rng = np.random.default_rng(0)
    >>> images = rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    >>> images[4:] = 255.0                          # class 1: white images
    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> result = fewshot(vit, (images, labels), (images, labels), shots=(2,), seeds=2)
    >>> sorted(result[2]), len(result[2]["accuracies"]), result[2]["mean"] > 0.7
    (['accuracies', 'mean', 'std'], 2, True)
    """
    representation = representation_model(model, layer, pooling, norm)
    train_x, train_y = extract(representation, train, batch_size)
    test_x, test_y = extract(representation, test, batch_size)
    return fewshot_accuracy(train_x, train_y, test_x, test_y, shots, seeds, l2_reg, num_classes)
