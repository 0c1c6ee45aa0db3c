"""The engine room: every backend-specific fast path of the model's primitives, in one place.

The layers (`keras_vit.layers`) speak the paper in `keras.ops` and call these primitives by
name; each has one contract, the portable definition in `reference.py`, and one
implementation per backend (`tensorflow.py`, `torch.py`, `jax.py`; the NumPy and OpenVINO
backends run the reference). The dispatch below is the only place that reads which backend
runs, as Keras' own `keras/src/ops` dispatches to `keras/src/backend/<name>`. Inside a module,
choices that depend on the machine are made per device (CPU, GPU, TPU) and, where a private
or machine-specific kernel competes with a public one, by measuring both on this machine, or
not at all; `describe()` says what each primitive uses here.

    affine(x, kernel, bias, training)          x @ kernel + bias over the last axis
    gelu(x, approximate, training)             GELU (erf or tanh) of fresh activations
    layer_norm(x, gamma, beta, epsilon, training)
    normalise(x, epsilon, training)            layer norm without gamma and beta
    layer_norm_folds_into_next_product()       whether normalise + a folded product is faster
    attention(qkv, num_queries, logit_bias, return_probabilities, dropout, training)
                                               softmax(q k^T + bias) v over heads

tests/test_kernels.py runs every implementation against the reference: values and gradients,
float32 and bfloat16, eagerly and in the backend's compiled train step.
"""

import importlib

import keras

from keras_vit.kernels import reference

_MODULES = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}


def _load(backend):
    name = _MODULES.get(backend)
    if name is None:
        return reference
    return importlib.import_module(f"keras_vit.kernels.{name}")


# Keras reads its backend once, at import; so does the dispatch.
BACKEND = keras.backend.backend()
implementation = _load(BACKEND)


def affine(x, kernel, bias, training=None):
    """`x @ kernel + bias` over the last axis of `x` (any rank); kernel (D_in, D_out), bias
    (D_out,), both in `x`'s dtype. See `reference.affine`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> y = affine(np.ones((2, 3, 4), "float32"), np.ones((4, 5), "float32"),
    ...            np.arange(5, dtype="float32"))
    >>> keras.ops.convert_to_numpy(y)[0, 0].tolist()
    [4.0, 5.0, 6.0, 7.0, 8.0]
    """
    return implementation.affine(x, kernel, bias, training)


def gelu(x, approximate, training=None):
    """GELU of fresh activations, exact (erf) or tanh-approximate. See `reference.gelu`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> y = gelu(np.array([-1.0, 0.0, 1.0], "float32"), approximate=False)
    >>> np.round(keras.ops.convert_to_numpy(y).astype("float64"), 4).tolist()
    [-0.1587, 0.0, 0.8413]
    """
    return implementation.gelu(x, approximate, training)


def layer_norm(x, gamma, beta, epsilon, training=None):
    """Layer norm over the last axis, statistics in at least float32. See
    `reference.layer_norm`."""
    return implementation.layer_norm(x, gamma, beta, epsilon, training)


def normalise(x, epsilon, training=None):
    """(x - mean) * rsqrt(var + eps) over the last axis. See `reference.normalise`."""
    return implementation.normalise(x, epsilon, training)


def layer_norm_folds_into_next_product():
    """Whether a layer norm's gamma and beta are better applied by the next product's kernel
    here (the same function). See `reference.layer_norm_folds_into_next_product`."""
    return implementation.layer_norm_folds_into_next_product()


def attention(qkv, num_queries=None, logit_bias=None, return_probabilities=False,
              dropout=None, training=None):
    """softmax(q k^T + bias) v per head from packed, pre-scaled (B, T, 3, H, D/H) queries,
    keys and values; returns ((B, Q, H, D/H), probabilities or None). See
    `reference.attention`."""
    return implementation.attention(qkv, num_queries, logit_bias, return_probabilities,
                                    dropout, training)


def device():
    """The kind of device the primitives choose their kernels for: "cpu", "gpu" or "tpu".
    Each backend module reads it in one place (JAX `_platform`, TensorFlow `_on_gpu`, PyTorch
    `_on_cuda`), which tests/test_kernel_dispatch.py forces to run the GPU branches on a CPU.

    Example:

    >>> device() in ("cpu", "gpu", "tpu")
    True
    """
    return implementation.device()


def describe():
    """Which implementation each primitive uses here, as {primitive: description}, with the
    backend and its default device; choices made by measurement (PyTorch's products, JAX's
    cuDNN paddings) appear once the shapes have run.

    Example:

    >>> sorted(describe())[:3]
    ['affine', 'attention', 'backend']
    """
    return {"backend": BACKEND, "device": device(), **implementation.describe()}
