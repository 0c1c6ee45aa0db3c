"""Input scaling shared by the model and its users."""

import numpy as np

from keras_vit.layers.utils import IMAGENET_MEAN, IMAGENET_STD, scale_and_offset  # noqa: F401


def preprocess_input(x, normalization=None):
    """Maps RGB in [0, 255] to the range the weights expect: [-1, 1] (x / 127.5 - 1) for the
    official checkpoints (and SigLIP); `normalization="imagenet"` for DINOv2, MAE and
    DeiT-III ((x / 255 - mean) / std over the last axis); or a (mean, std) pair.

    Use it with models built with `include_preprocessing=False`; models built with the
    default `include_preprocessing=True` do this themselves (`input_normalization`). Takes
    NumPy arrays, lists and backend tensors.

    Example:

    >>> import numpy as np
    >>> preprocess_input(np.array([0.0, 127.5, 255.0]))
    array([-1.,  0.,  1.])
    >>> np.round(preprocess_input(np.full((1, 3), 255.0), "imagenet"), 4)
    array([[2.2489, 2.4286, 2.64  ]])
    """
    if isinstance(x, (list, tuple, int, float)):
        x = np.asarray(x, dtype="float32")
    if normalization is None:
        return x / 127.5 - 1.0
    scale, offset = scale_and_offset(normalization)
    return x * np.asarray(scale, "float32") + np.asarray(offset, "float32")
