"""Input scaling shared by the model and its users."""

import numpy as np


def preprocess_input(x):
    """Maps RGB in [0, 255] to [-1, 1] (x / 127.5 - 1), as the official checkpoints expect.

    Use it with models built with `include_preprocessing=False`; models built with the
    default `include_preprocessing=True` do this themselves. Takes NumPy arrays, lists and
    backend tensors.

    Example:

    >>> import numpy as np
    >>> preprocess_input(np.array([0.0, 127.5, 255.0]))
    array([-1.,  0.,  1.])
    """
    if isinstance(x, (list, tuple, int, float)):
        x = np.asarray(x, dtype="float32")
    return x / 127.5 - 1.0
