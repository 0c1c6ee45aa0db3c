"""Optional augmentations from Keras' own preprocessing layers, and a hook.

RandAugment is applied per image, MixUp and CutMix per batch; all run inside
the tf.data graph (Keras switches these layers to TensorFlow ops there, so
they work whatever `KERAS_BACKEND` is). Extra batch transforms, e.g. keras-cv
layers, plug in as callables on ``{"images": ..., "labels": ...}`` dicts,
which is the calling convention of both Keras and keras-cv augmentation
layers.

Keras' random layers keep their seed in a state variable, so their calls are
kept sequential in the pipeline: with a fixed seed the output is reproducible.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

BatchTransform = Callable[[dict], dict]


def make_randaugment(num_ops: int, magnitude: float, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns image -> image applying Keras RandAugment to [0, 255] pixels.

    Args:
        num_ops: Operations applied per image (the paper of RandAugment's N).
        magnitude: Strength in [0, 1] (Keras' `factor`).
        seed: Seed of the layer's random state.
    """
    import keras

    layer = keras.layers.RandAugment(
        value_range=(0, 255), num_ops=num_ops, factor=magnitude, seed=seed
    )

    def apply(image: tf.Tensor) -> tf.Tensor:
        out = layer(image, training=True)
        return tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)

    return apply


def make_mix(
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: int,
) -> BatchTransform | None:
    """Returns a batch transform doing MixUp, CutMix, or one of them at random.

    When both are enabled each batch gets one of the two with probability 1/2
    (as timm and DeiT do). The transform takes ``{"images", "labels", "seed"}``
    with one-hot float labels and a stateless seed of shape [2] per batch, and
    returns ``{"images", "labels"}``.

    Args:
        mixup_alpha: Beta(alpha, alpha) parameter of MixUp; 0 disables it.
        cutmix_alpha: Beta parameter (Keras' `factor`) of CutMix; 0 disables it.
        seed: Seed of the layers' random state and of the choice.

    Returns:
        The transform, or None when both are disabled.
    """
    import keras

    layers = []
    if mixup_alpha > 0:
        layers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed))
    if cutmix_alpha > 0:
        layers.append(keras.layers.CutMix(factor=cutmix_alpha, seed=seed + 1))
    if not layers:
        return None

    def run(layer, batch):
        out = layer({"images": batch["images"], "labels": batch["labels"]}, training=True)
        return {
            "images": tf.cast(out["images"], tf.float32),
            "labels": tf.cast(out["labels"], tf.float32),
        }

    if len(layers) == 1:
        return lambda batch: run(layers[0], batch)

    def either(batch):
        # The coin uses the batch's own stateless seed (put there by the
        # pipeline), so the choice is reproducible.
        coin = tf.random.stateless_uniform([], seed=batch["seed"])
        return tf.cond(coin < 0.5, lambda: run(layers[0], batch), lambda: run(layers[1], batch))

    return either


# --------------------------------------------------------------------------- --augment


# Keras-native layers to name when a keras-cv layer cannot be used.
KERAS_NATIVE = ("keras.layers.RandAugment", "keras.layers.AugMix", "keras.layers.RandomErasing",
                "keras.layers.CutMix", "keras.layers.MixUp")
# keras-cv 0.9.0's own pins predate Keras 3.15: it is installed without its dependencies.
CV_EXTRA = "pip install --no-deps keras-cv==0.9.0 (it runs beside Keras 3, without its own pins)"


def parse_layer_spec(spec: str) -> tuple[str, dict]:
    """Splits "keras_cv.layers.AugMix(severity=0.5, value_range=(0, 255))" into the dotted
    class path and its keyword arguments (Python literals only: numbers, strings, tuples,
    lists, dicts, booleans, None).

    Raises:
        DataError: For anything else, naming the expected form.
    """
    import ast

    from tf_data.errors import DataError

    text = spec.strip()
    form = ("expected a dotted class path such as keras_cv.layers.AugMix, optionally with "
            "keyword arguments: keras_cv.layers.RandAugment(value_range=(0, 255), magnitude=0.3)")
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise DataError(f"--augment {spec!r}: not a class path; {form}.") from None
    call_args = {}
    if isinstance(node, ast.Call):
        if node.args:
            raise DataError(f"--augment {spec!r}: pass arguments by keyword; {form}.")
        try:
            call_args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise DataError(f"--augment {spec!r}: arguments must be literals; {form}.") from None
        if None in call_args:
            raise DataError(f"--augment {spec!r}: no **kwargs; {form}.")
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or not parts:
        raise DataError(f"--augment {spec!r}: not a dotted class path; {form}.")
    parts.append(node.id)
    return ".".join(reversed(parts)), call_args


def load_layer(spec: str, seed: int):
    """Instantiates the layer named by `spec` (see `parse_layer_spec`).

    `value_range=(0, 255)` (the pipeline's pixels) and `seed` are passed when the layer takes
    them and `spec` does not set them.

    Raises:
        DataError: For a missing package (keras-cv: naming the `cv` extra and the Keras-native
            alternatives), an unknown name (with close matches) or bad arguments.
    """
    import difflib
    import importlib
    import inspect

    from tf_data.errors import DataError

    path, kwargs = parse_layer_spec(spec)
    parts = path.split(".")
    module, attrs = None, []
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and not name.startswith(error.name):
                raise  # the package exists but a dependency of it is missing
            continue
        except Exception as error:  # noqa: BLE001 (a package that fails on import)
            raise DataError(f"--augment {spec!r}: importing {name} failed: {error}.") from None
        attrs = parts[cut:]
        break
    if module is None:
        if parts[0] == "keras_cv":
            raise DataError(
                f"--augment {spec!r}: keras-cv is not installed. Install it: "
                f"{CV_EXTRA}; or use a Keras-native layer instead: "
                f"{', '.join(KERAS_NATIVE)} (e.g. --augment keras.layers.AugMix, or "
                "--randaugment N,M).")
        raise DataError(f"--augment {spec!r}: no module {parts[0]!r} is installed.")
    target = module
    for i, attr in enumerate(attrs):
        if not hasattr(target, attr):
            owner = ".".join(parts[:len(parts) - len(attrs) + i])
            close = difflib.get_close_matches(attr, [n for n in dir(target) if not n.startswith("_")])
            hint = f"; did you mean {', '.join(f'{owner}.{c}' for c in close)}?" if close else "."
            raise DataError(f"--augment {spec!r}: {owner} has no {attr!r}{hint}")
        target = getattr(target, attr)
    if not (inspect.isclass(target) and callable(target)):
        raise DataError(f"--augment {spec!r}: {path} is not a layer class.")
    try:
        accepted = inspect.signature(target.__init__).parameters
    except (TypeError, ValueError):
        accepted = {}
    if "value_range" in accepted and "value_range" not in kwargs:
        kwargs["value_range"] = (0, 255)
    if "seed" in accepted and "seed" not in kwargs:
        kwargs["seed"] = seed
    try:
        return target(**kwargs)
    except Exception as error:  # noqa: BLE001 (the layer's own argument checks)
        raise DataError(f"--augment {spec!r}: {path}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                        f"failed: {error}") from None


def layer_transform(layer, name: str | None = None) -> BatchTransform:
    """A batch transform calling an augmentation layer (Keras or keras-cv) on a batch.

    With integer (sparse) labels the layer sees the images alone (label-preserving layers:
    RandAugment, AugMix, GridMask, RandomCutout, ...; keras-cv's RandAugment mixes label
    dtypes when given int labels); with one-hot labels (MixUp/CutMix on, or label smoothing)
    it sees ``{"images", "labels"}``, so label-mixing layers (keras-cv's MixUp, CutMix,
    FourierMix) mix the labels too.
    """
    name = name or type(layer).__name__

    def apply(batch: dict) -> dict:
        images, labels = batch["images"], batch["labels"]
        if labels.dtype.is_floating:
            out = layer({"images": images, "labels": labels})
            images, labels = out["images"], tf.cast(out["labels"], tf.float32)
        else:
            images = layer(images)
            if isinstance(images, dict):
                images = images["images"]
        images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
        return {"images": images, "labels": labels}

    apply.__name__ = f"augment_{name}"
    return apply


def batch_transform(spec, seed: int) -> BatchTransform:
    """`PipelineConfig.batch_transforms` entries as batch transforms: a class-path string
    (see `load_layer`), a layer instance (see `layer_transform`), or a callable on batch
    dicts, used as it is."""
    import keras

    if isinstance(spec, str):
        return layer_transform(load_layer(spec, seed), spec)
    if isinstance(spec, keras.layers.Layer):
        return layer_transform(spec)
    if callable(spec):
        return spec
    from tf_data.errors import DataError

    raise DataError(f"batch_transforms entries must be class-path strings, layers or callables; "
                    f"got {spec!r}.")
