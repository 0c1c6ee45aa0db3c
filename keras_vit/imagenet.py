"""ImageNet class names shipped with the package, and `decode_predictions`.

The names come from WordNet via timm's class-info files (see `keras_vit/data/PROVENANCE.md`);
nothing is downloaded. ImageNet-1k uses the ILSVRC-2012 / Keras order; ImageNet-21k uses the
order of the 21843-class heads of the ViT and AugReg checkpoints.
"""

import functools
import gzip
import os

import numpy as np

_DATA = os.path.join(os.path.dirname(__file__), "data")
_FILES = {1000: "imagenet1k_classes.txt", 21843: "imagenet21k_classes.txt.gz"}
NUM_CLASSES = tuple(_FILES)


@functools.lru_cache(maxsize=None)
def class_names(num_classes=1000):
    """The (wordnet_id, name) pairs of the 1000 ImageNet-1k or 21843 ImageNet-21k classes.

    Example:

    >>> class_names(1000)[207]
    ('n02099601', 'golden_retriever')
    """
    if num_classes not in _FILES:
        raise ValueError(
            f"Class names are shipped for {' and '.join(map(str, NUM_CLASSES))} classes "
            f"(ImageNet-1k, ImageNet-21k), not {num_classes}."
        )
    path = os.path.join(_DATA, _FILES[num_classes])
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        pairs = tuple(tuple(line.rstrip("\n").split("\t")) for line in f if line.strip())
    if len(pairs) != num_classes:  # a damaged installation
        raise RuntimeError(f"{path} holds {len(pairs)} classes, expected {num_classes}.")
    return pairs


def decode_predictions(preds, top=5):
    """Decodes ImageNet predictions, as `keras.applications.*.decode_predictions`.

    Args:
        preds: scores of shape (batch, 1000) (ImageNet-1k) or (batch, 21843) (ImageNet-21k,
            the heads of the AugReg `augreg-in21k` checkpoints). NumPy array or backend tensor;
            probabilities or logits (only the order matters).
        top: how many classes to return per example.

    Returns:
        A list (one per example) of lists of `(wordnet_id, class_name, score)` tuples, best
        first.

    Example:

    >>> import numpy as np
    >>> p = np.zeros((1, 1000)); p[0, 207] = 0.9; p[0, 1] = 0.1
    >>> decode_predictions(p, top=2)[0][0][:2]
    ('n02099601', 'golden_retriever')
    """
    if not isinstance(preds, np.ndarray):
        import keras  # noqa: PLC0415 (backend tensors only)

        preds = keras.ops.convert_to_numpy(preds)
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] not in _FILES:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions of shape (samples, 1000) or "
            f"(samples, 21843), got shape {preds.shape}."
        )
    if int(top) < 1:
        raise ValueError(f"`top` must be >= 1, got {top}.")
    names = class_names(preds.shape[1])
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[: int(top)]
        results.append([(names[i][0], names[i][1], float(row[i])) for i in best])
    return results
