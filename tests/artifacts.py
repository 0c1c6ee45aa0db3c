"""Run exported artifacts (SavedModel, ONNX, LiteRT) on images: the serving side of export.

Imported by the export tests, and run as a script by the newcomer tests in a new process:

    python tests/artifacts.py MODEL.keras FORMAT=PATH ...

prints one JSON object: each artifact's max |artifact - Keras| / max |Keras| on the same images.
"""

import json
import sys

import numpy as np


def run_saved_model(path, images):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    return np.asarray(loaded.serve(tf.constant(images)))


def run_onnx(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(path)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def run_litert(path, images):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in images:  # the LiteRT signature serves one image at a time
        interpreter.set_tensor(inputs["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(outputs["index"])[0])
    return np.stack(results)


RUNNERS = {"saved_model": run_saved_model, "onnx": run_onnx, "litert": run_litert}


def main(argv):
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    import keras_vit  # noqa: F401  (registers the model's classes)

    model = keras.saving.load_model(argv[0], compile=False)
    shape = model.input_shape[1:]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, *shape)).astype("float32")
    expected = np.asarray(model.predict(images, verbose=0), "float64")
    errors = {}
    for spec in argv[1:]:
        format, path = spec.split("=", 1)
        actual = np.asarray(RUNNERS[format](path, images), "float64")
        errors[format] = float(np.abs(actual - expected).max() / np.abs(expected).max())
    print(json.dumps(errors))


if __name__ == "__main__":
    main(sys.argv[1:])
