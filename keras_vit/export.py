"""Export ViTs for serving: TF SavedModel, ONNX and LiteRT (TFLite).

`.keras` files do not depend on the backend that trained them, so each format is produced
under the backend whose toolchain handles it best here, in a subprocess when the current
backend is another one:

| format        | via                                             | needs (extra `export`) |
|---------------|-------------------------------------------------|------------------------|
| `saved_model` | `model.export(format="tf_saved_model")`, TF     | tensorflow             |
| `onnx`        | `model.export(format="onnx")`, TF + tf2onnx     | tf2onnx, onnx (opset 17) |
| `litert`      | `model.export(format="litert")`, TF converter   | tensorflow             |

The exported signature takes images (B, H, W, C) float32 in the model's input range ([0, 255]
with `include_preprocessing=True`, else [-1, 1]) and returns the head's output: logits, or
probabilities when `outputs="probabilities"` (a softmax head), whatever the model was built with.
A model of any image size (`input_shape=(None, None, 3)`) keeps H and W dynamic in all three
(LiteRT: (1, -1, -1, C), sized with `Interpreter.resize_tensor_input`).
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import keras

FORMATS = ("saved_model", "onnx", "litert")
ONNX_OPSET = 17
OUTPUTS = ("model", "logits", "probabilities")

# What each format needs beyond the core install, and the extra that provides it.
_REQUIREMENTS = {
    "saved_model": ("tensorflow",),
    "onnx": ("tensorflow", "tf2onnx", "onnx"),
    "litert": ("tensorflow",),
}


class MissingToolchainError(ImportError):
    """An export format's toolchain is not installed."""


def check_toolchain(format):
    """Raises `MissingToolchainError` naming the extra to install when `format` cannot run."""
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}.")
    missing = [m for m in _REQUIREMENTS[format] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingToolchainError(
            f"Exporting to {format} needs {', '.join(missing)}, which is not installed: "
            f"pip install {' '.join(missing)} (or, in a clone of keras-vit, the export extra: "
            f"pip install -c constraints.txt \".[export]\")."
        )


# The file name each single-file format must carry (its converter refuses others).
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}


def default_path(directory, format):
    """Where `keras-vit export RUN --format F` writes when no OUT is given."""
    return os.path.join(directory, {"saved_model": "saved_model", "onnx": "model.onnx",
                                    "litert": "model.tflite"}[format])


def check_path(path, format):
    """Raises ValueError unless `path` suits `format` (`.onnx`, `.tflite`, or a folder)."""
    suffix = SUFFIXES.get(format)
    if suffix and not os.fspath(path).endswith(suffix):
        raise ValueError(f"The {format} format writes one file ending in {suffix!r}; got {path!r}.")
    if format == "saved_model" and os.path.isfile(path):
        raise ValueError(f"A saved_model export is a folder; {path!r} is a file.")


def as_float32(model):
    """`model` rebuilt under the float32 policy with the same weights, if it was built under a
    mixed-precision one (its variables are float32 already); otherwise `model` itself.

    A run trained with `--mixed-precision` saves layers whose policy computes in bf16/fp16;
    serving formats get the float32 model, which computes the same function without the
    half-precision rounding. Quantized (int8) policies are kept.
    """
    def strip(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and str(
                    node.get("config", {}).get("name", "")).startswith("mixed_"):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: "float32" if key == "dtype" and str(value).startswith("mixed_")
                    else strip(value) for key, value in node.items()}
        if isinstance(node, list):
            return [strip(value) for value in node]
        return node

    config = model.get_config()
    plain = strip(config)
    if plain == config:
        return model
    clone = model.__class__.from_config(plain)
    clone.set_weights(model.get_weights())
    return clone


def with_head_activation(model, activation):
    """A copy of `model` whose `head` applies `activation` (e.g. None for logits)."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"].get("name") == "head":
            layer["config"]["activation"] = activation or "linear"
            break
    else:
        raise ValueError(f"Model '{model.name}' has no 'head' layer to change.")
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def export_model(model, path, format="saved_model", outputs="model", verbose=False):
    """Exports a ViT (a `keras.Model` or a path to a `.keras` file) to `path`.

    Args:
        model: the model, or the path of a `.keras` file.
        path: the output file (`.onnx`, `.tflite`) or directory (SavedModel).
        format: `"saved_model"`, `"onnx"` or `"litert"`.
        outputs: `"model"` (the head as built), `"logits"` or `"probabilities"`.
        verbose: let Keras and the converters print.

    Returns:
        `path`.
    """
    return export_models(model, {format: path}, outputs, verbose)[format]


def export_models(model, paths, outputs="model", verbose=False):
    """Exports a ViT to several formats at once: `paths` maps format -> output path.

    One model load (and, from another backend, one TensorFlow process) for all of them.
    Arguments as `export_model`; returns `paths`.
    """
    for format, path in paths.items():
        check_toolchain(format)
        check_path(path, format)
    if outputs not in OUTPUTS:
        raise ValueError(f"Unknown outputs {outputs!r}; expected one of {', '.join(OUTPUTS)}.")
    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow_process(model, paths, outputs, verbose)
    if keras.mixed_precision.global_policy().name != "float32":
        raise ValueError("Export under the 'float32' global dtype policy (the model is "
                         "exported in float32 whatever policy it was trained with).")
    if isinstance(model, (str, os.PathLike)):
        model = keras.saving.load_model(model, compile=False)
    model = as_float32(model)
    if outputs != "model":
        model = with_head_activation(model, "softmax" if outputs == "probabilities" else None)
    for format, path in paths.items():
        _export_loaded(model, path, format, verbose)
    return paths


def _export_loaded(model, path, format, verbose):
    signature = [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")]
    keras_format = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}[format]
    kwargs = {"opset_version": ONNX_OPSET} if format == "onnx" else {}
    if format == "litert":
        # A batch of one, the usual on-device case; a model of any image size keeps its height
        # and width dynamic (-1 in the signature: `resize_tensor_input` before each new size).
        signature = [keras.InputSpec(shape=(1, *model.input_shape[1:]), dtype="float32")]
    model.export(os.fspath(path), format=keras_format, input_signature=signature, verbose=verbose,
                 **kwargs)


def _export_in_tensorflow_process(model, paths, outputs, verbose):
    with tempfile.TemporaryDirectory() as tmp:
        if not isinstance(model, (str, os.PathLike)):
            saved = os.path.join(tmp, "model.keras")
            model.save(saved)
            model = saved
        paths = {format: os.fspath(path) for format, path in paths.items()}
        args = json.dumps([os.fspath(model), paths, outputs, verbose])
        code = ("import json, sys; from keras_vit.export import export_models; "
                "export_models(*json.loads(sys.argv[1]))")
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run([sys.executable, "-c", code, args], env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"Export to {', '.join(paths)} under TensorFlow failed:\n"
                               f"{done.stderr[-4000:]}")
    return paths
