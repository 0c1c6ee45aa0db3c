"""Pretrained weights for fine-tuning: official .npz files and saved Keras models.

Both paths go through the official checkpoint layout of
`keras_vit.checkpoint` (a flat {key: array} dict), whose `assign_checkpoint`
checks every shape, resamples the position embedding to the new resolution
(`scipy.ndimage.zoom(order=1)`, as vit_jax) and can leave the head alone. The
head of the new model stays zero-initialised (paper: "we remove the whole head
(two linear layers) and replace it by a single zero-initialized D x K
layer"), so `pre_logits` and `head` of the source are dropped.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from applications.options import UsageError

# Where --weights NAME is looked up when NAME is not a path.
WEIGHTS_DIR_ENV = "KERAS_VIT_WEIGHTS"
BASE_URL = "https://storage.googleapis.com/vit_models/"
_DROPPED_PREFIXES = ("head/", "pre_logits/")


def resolve_weights(spec: str) -> str:
    """Maps --weights to a file: a path, or a name like "imagenet21k/ViT-B_16".

    Names are looked up (with and without ".npz") in $KERAS_VIT_WEIGHTS and
    ~/.keras/vit_models.

    Raises:
        UsageError: When no file is found; says where it looked.
    """
    if os.path.isfile(spec):
        return spec
    dirs = [os.environ.get(WEIGHTS_DIR_ENV), os.path.expanduser("~/.keras/vit_models")]
    tried = []
    for directory in filter(None, dirs):
        for name in (spec, spec + ".npz"):
            path = os.path.join(directory, name)
            tried.append(path)
            if os.path.isfile(path):
                return path
    raise UsageError(
        f"Weights {spec!r} not found (looked in: {', '.join(tried) or 'nothing'}). "
        f"Pass a path to an official .npz (published under {BASE_URL}, e.g. "
        "imagenet21k/ViT-B_16.npz) or a Keras .weights.h5, or put the file in "
        f"${WEIGHTS_DIR_ENV}."
    )


def load_pretrained(model: keras.Model, spec: str) -> None:
    """Loads a pretrained backbone into `model`, keeping its new zero head.

    Args:
        model: A `keras_vit.ViT` with the target classes and resolution.
        spec: --weights: an official/big_vision .npz, a Keras .weights.h5 or
            .keras file, or a name found by `resolve_weights`.
    """
    path = resolve_weights(spec)
    if path.endswith(".keras"):
        transfer_from_saved_model(model, path)
        return
    if path.endswith(".weights.h5"):
        params = _params_from_weights_h5(path)
    elif path.endswith(".npz"):
        from keras_vit import checkpoint

        try:
            params = checkpoint.read_npz(path)
        except ValueError as e:
            raise UsageError(str(e)) from e
    else:
        raise UsageError(f"Cannot tell the format of {path!r}: expected .npz, .weights.h5 or .keras.")
    _assign(model, params, path)


def transfer_from_saved_model(model: keras.Model, path: str) -> None:
    """Copies a saved `.keras` ViT's backbone into `model` (new head, new size)."""
    if not os.path.isfile(path):
        raise UsageError(f"--init {path!r} does not exist.")
    import keras_vit  # noqa: F401  (registers the layers for deserialisation)

    source = keras.saving.load_model(path, compile=False)
    _assign(model, _official_params(source), path)


def _official_params(model: keras.Model) -> dict[str, np.ndarray]:
    """A built ViT's weights as an official-layout {key: array} dict."""
    from keras_vit import checkpoint

    return {k: keras.ops.convert_to_numpy(v) for k, v in checkpoint.official_variables(model).items()}


def _params_from_weights_h5(path: str) -> dict[str, np.ndarray]:
    """Reads a `.weights.h5` of a keras_vit model via a model rebuilt from it.

    The file stores no architecture, so the model is rebuilt from the
    config.json that keras-vit writes next to its weights; without one, use
    the run's .keras file instead.
    """
    from applications import config as config_lib

    directory = os.path.dirname(os.path.abspath(path))
    try:
        saved = config_lib.load(directory)
    except UsageError:
        raise UsageError(
            f"{path!r} has no config.json beside it to rebuild its architecture; "
            "pass the run's .keras model (--init) or an official .npz instead."
        ) from None
    import keras_vit

    source = keras_vit.ViT(**saved["architecture"], classes=saved["num_classes"],
                           include_preprocessing=saved.get("include_preprocessing", True))
    keras_vit.load_weights(source, path)
    return _official_params(source)


def _assign(model: keras.Model, params: dict, source: str) -> None:
    """Writes `params` into `model` except head/pre_logits; clear errors."""
    from keras_vit import checkpoint

    params = {k: v for k, v in params.items() if not k.startswith(_DROPPED_PREFIXES)}
    try:
        checkpoint.assign_checkpoint(model, params, source=source, skip_head=True)
    except ValueError as e:
        raise UsageError(f"Cannot fine-tune from {source}: {e}") from e
