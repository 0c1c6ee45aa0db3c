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
            f"pip install 'keras-vit[export]' (or: pip install {' '.join(missing)})."
        )


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
    check_toolchain(format)
    if outputs not in OUTPUTS:
        raise ValueError(f"Unknown outputs {outputs!r}; expected one of {', '.join(OUTPUTS)}.")
    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow_process(model, path, format, outputs, verbose)
    if isinstance(model, (str, os.PathLike)):
        model = keras.saving.load_model(model)
    if keras.mixed_precision.global_policy().name != "float32" or model.dtype_policy.name != "float32":
        raise ValueError("Export a float32 model: build or load it under the 'float32' dtype policy.")
    if outputs != "model":
        model = with_head_activation(model, "softmax" if outputs == "probabilities" else None)
    signature = [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")]
    keras_format = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}[format]
    kwargs = {"opset_version": ONNX_OPSET} if format == "onnx" else {}
    if format == "litert":
        # LiteRT wants one fixed shape; serving a batch of one is the usual on-device case.
        signature = [keras.InputSpec(shape=(1, *model.input_shape[1:]), dtype="float32")]
    model.export(os.fspath(path), format=keras_format, input_signature=signature, verbose=verbose,
                 **kwargs)
    return path


def _export_in_tensorflow_process(model, path, format, outputs, verbose):
    with tempfile.TemporaryDirectory() as tmp:
        if not isinstance(model, (str, os.PathLike)):
            saved = os.path.join(tmp, "model.keras")
            model.save(saved)
            model = saved
        args = json.dumps([os.fspath(model), os.fspath(path), format, outputs, verbose])
        code = "import json, sys; from keras_vit.export import export_model; export_model(*json.loads(sys.argv[1]))"
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run([sys.executable, "-c", code, args], env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"Export to {format} under TensorFlow failed:\n{done.stderr[-4000:]}")
    return path
