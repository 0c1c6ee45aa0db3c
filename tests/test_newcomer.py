"""What a new user runs, run the way they run it: the installed `keras-vit` command and fresh
Python processes, on each backend. No call here goes through the library in-process (only the
oracle for `predict`'s answers is computed here).

- `ViTTi16(weights="imagenet")` with the default cache (`$KERAS_HOME`, else `~/.keras`), from a
  local mirror of the bucket holding a file in the published layout;
- `keras-vit train`, then in new processes: `keras.saving.load_model` with `import keras_vit`
  alone (compiled state included) and `export` to ONNX, on each backend; `evaluate`, `predict`
  on files of several formats and every export format once (conversion runs in a TensorFlow
  process whichever backend trained); the artifacts' outputs against Keras';
- `keras-vit pretrain`, `finetune --init` its backbone, and the export of both (once, on
  TensorFlow: what it checks does not depend on the training backend, which the `train` test
  covers on each).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import BACKEND, ONCE_BACKEND, REQUIRE_TEST_DEPS, is_once_leg, once, once_on
from numpy_vit import make_official_params, relative_error, vit_forward

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
KERAS_VIT = os.path.join(BIN, "keras-vit")
EXPORTS = {"onnx": "model.onnx", "litert": "model.tflite", "saved_model": "saved_model"}

# Under make test (its own install) the command must be there; a bare checkout skips.
assert os.path.exists(KERAS_VIT) or not REQUIRE_TEST_DEPS, f"{KERAS_VIT} is not installed"
pytestmark = pytest.mark.skipif(not os.path.exists(KERAS_VIT),
                                 reason="the keras-vit entry point is not installed")


def run(command, cwd, env=None, timeout=600):
    """Runs `command` as a new process; returns its stdout, failing the test on exit != 0."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    return done.stdout


def python(code, cwd, *args, env=None):
    return run([sys.executable, "-c", code, *map(str, args)], cwd, env=env)


# ----------------------------------------------------------------- pretrained weights, by name

TI16 = dict(image_size=384, patch=16, hidden=192, layers=12, heads=3, mlp=768, classes=1000)

PREDICT_BY_NAME = r"""
import json, sys
import numpy as np
import keras_vit

images = np.load(sys.argv[1])
model = keras_vit.ViTTi16(weights="imagenet", classifier_activation=None)
logits = model.predict(images, verbose=0)
top = keras_vit.decode_predictions(logits, top=3)
print(json.dumps({"logits": logits.tolist(), "top": [[list(map(str, t)) for t in row] for row in top],
                  "input": list(model.input_shape)}))
"""


@once_on("tensorflow")  # the loading into each backend's variables: test_weights, every leg
def test_imagenet_weights_by_name_with_the_default_cache(tmp_path):
    """The whole named path with no cache_dir: mirror -> $KERAS_HOME/keras_vit -> model."""
    import keras_vit

    entry = keras_vit.get_weights_entry("ViTTi16", "imagenet")
    params = make_official_params(np.random.default_rng(0), **TI16)
    mirror = tmp_path / "bucket"
    (mirror / os.path.dirname(entry.path)).mkdir(parents=True)
    np.savez(mirror / entry.path, **params)
    images = np.random.default_rng(1).uniform(0, 255, (2, 384, 384, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    keras_home = tmp_path / "keras_home"
    env = {"KERAS_HOME": str(keras_home), "KERAS_VIT_WEIGHTS_URL": mirror.as_uri(),
           "KERAS_VIT_CACHE_DIR": ""}
    result = json.loads(python(PREDICT_BY_NAME, tmp_path, tmp_path / "images.npy", env=env)
                        .strip().splitlines()[-1])

    assert result["input"] == [None, 384, 384, 3]  # the checkpoint's native resolution
    assert (keras_home / "keras_vit" / entry.filename).is_file()  # cached where Keras caches
    expected = vit_forward(params, images)
    assert relative_error(np.array(result["logits"]), expected) < 1e-4
    from keras_vit.imagenet import class_names

    labels = class_names()
    for row, top in zip(expected, result["top"]):
        assert [t[1] for t in top] == [labels[i][1] for i in np.argsort(row)[::-1][:3]]


@once  # the download and cache code is the same Python on every backend
def test_default_cache_without_keras_home_is_under_home(tmp_path):
    """No $KERAS_HOME: ~/.keras/keras_vit, as keras.utils.get_file caches."""
    source = tmp_path / "x.npz"
    np.savez(source, a=np.arange(3.0))
    home = tmp_path / "home"
    home.mkdir()
    code = ("import sys; from keras_vit.weights.download import fetch; "
            "print(fetch(sys.argv[1], 'x.npz'))")
    env = {"HOME": str(home), "KERAS_HOME": ""}
    env_without = {k: v for k, v in {**os.environ, **env}.items() if k != "KERAS_HOME"}
    done = subprocess.run([sys.executable, "-c", code, source.as_uri()], cwd=tmp_path,
                          env={**env_without, "KERAS_BACKEND": BACKEND}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(home / ".keras" / "keras_vit" / "x.npz")


# ----------------------------------------------------------------- train -> load -> serve

LOAD_COMPILED = r"""
import json, sys
import keras, keras_vit
out = {}
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    optimizer = model.optimizer
    inner = optimizer.inner_optimizer  # keras-vit train: a GroupedOptimizer around AdamW
    out[path] = {"params": model.count_params(), "optimizer": type(optimizer).__name__,
                 "inner": type(inner).__name__, "decay_on": optimizer.weight_decay_on,
                 "schedule": type(inner._learning_rate).__name__,
                 "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
                 "metrics": [m.name for m in model.metrics]}
print(json.dumps(out))
"""


def _reference_predictions(run_dir, paths):
    """The oracle for `predict`, in this process: the saved model on each file's pixels read
    independently (PIL, bilinear resize without antialiasing, the run's input scaling)."""
    import keras
    from PIL import Image

    import keras_vit  # noqa: F401 (registers the classes the model file names)

    model = keras.saving.load_model(run_dir / "model.keras")
    run = json.loads((run_dir / "config.json").read_text())
    scaled_inside = run.get("include_preprocessing",
                            any(layer.name == "rescale" for layer in model.layers))
    rows = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"), "float32")
        image = keras.ops.image.resize(pixels[None], tuple(model.input_shape[1:3]),
                                       interpolation="bilinear", antialias=False)
        image = np.clip(keras.ops.convert_to_numpy(image), 0, 255)
        if not scaled_inside:
            image = image / 127.5 - 1.0
        rows.append(np.asarray(model.predict(image, verbose=0))[0])
    names = run.get("class_names") or [str(i) for i in range(len(rows[0]))]
    return rows, names


def _image_files(directory):
    """Digits as image files of the formats a user has: PNG, JPEG, WebP, BMP (RGB and L)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images[:4] * (255.0 / 16.0)
    paths = []
    for image, (name, mode) in zip(digits, [("a.png", "L"), ("b.jpg", "RGB"), ("c.webp", "RGB"),
                                            ("d.bmp", "RGB")]):
        pil = Image.fromarray(image.astype("uint8")).convert(mode).resize((32, 32))
        pil.save(directory / name)
        paths.append(str(directory / name))
    return paths


def _export_and_serve(model_path, cwd, formats):
    """`keras-vit export` to each format (default paths), then the artifacts in a new process;
    returns {format: relative error against the Keras model}."""
    directory = os.path.dirname(model_path)
    run([KERAS_VIT, "export", model_path, "--format", ",".join(formats)], cwd)
    specs = [f"{format}={os.path.join(directory, EXPORTS[format])}" for format in formats]
    out = run([sys.executable, os.path.join(HERE, "artifacts.py"), model_path, *specs], cwd,
              env={"KERAS_BACKEND": "tensorflow", "PYTHONPATH": os.path.dirname(HERE)})
    return json.loads(out.strip().splitlines()[-1])


def test_train_then_load_evaluate_predict_export_in_new_processes(tmp_path):
    run([KERAS_VIT, "train", "--dataset", "digits", "--epochs", "1", "--output", "run"], tmp_path)
    run_dir = tmp_path / "run"

    loaded = json.loads(python(LOAD_COMPILED, tmp_path, run_dir / "model.keras",
                               run_dir / "checkpoint.keras").strip().splitlines()[-1])
    for path, state in loaded.items():
        assert state["params"] > 100_000, path
        # Kernel-only weight decay came back with the optimizer (a plain AdamW would decay all).
        assert (state["optimizer"], state["inner"], state["decay_on"]) == (
            "GroupedOptimizer", "AdamW", "kernels")
        assert state["schedule"] == "WarmupDecay"
        assert state["iterations"] > 0  # the optimizer's state came back, not a fresh one

    # `evaluate` and `predict` in new processes once per make test (on TensorFlow's leg, the
    # shortest): their program logic does not depend on the backend (in-process on every
    # backend: test_applications) once a new process has loaded the model, as above.
    if is_once_leg("tensorflow"):
        _evaluate_and_predict(tmp_path, run_dir)

    # Every format converts in a TensorFlow process whichever backend trained (keras_vit.export),
    # so the leg that runs `once` tests serves all three; the others ONNX, through the hand-over
    # from their backend.
    formats = list(EXPORTS) if BACKEND == ONCE_BACKEND else ["onnx"]
    errors = _export_and_serve(str(run_dir / "model.keras"), tmp_path, formats)
    assert set(errors) == set(formats)
    assert max(errors.values()) < 1e-4, errors


def _evaluate_and_predict(tmp_path, run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluated = run([KERAS_VIT, "evaluate", "--output", "run", "--verbose", "0"], tmp_path)
    report = json.loads(evaluated[evaluated.index("{"):])
    assert report["examples"] == 359
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)

    images = _image_files(tmp_path)
    predicted = [json.loads(line) for line in run(
        [KERAS_VIT, "predict", "--output", "run", "--json", *images], tmp_path).splitlines()
        if line.startswith("{")]
    assert [p["image"] for p in predicted] == images
    # Each image's top-1 against the saved model on the same pixels, read independently.
    probabilities, names = _reference_predictions(run_dir, images)
    for p, expected in zip(predicted, probabilities):
        top = int(np.argmax(expected))
        assert p["top"][0]["index"] == top, (p, expected.tolist())
        assert p["top"][0]["label"] == names[top]
        assert p["top"][0]["probability"] == pytest.approx(float(expected[top]), abs=1e-3)


# Once, on TensorFlow: the fine-tuning source and the export do not depend on the backend that
# trained, and TensorFlow converts its models itself (other backends hand the model over to a
# TensorFlow process: the train test above).
@once_on("tensorflow")
def test_pretrain_then_finetune_init_then_export(tmp_path):
    # A small backbone: what runs here is the hand-over between processes and the export;
    # the recipe's own model learning is test_programs_analysis's.
    run([KERAS_VIT, "pretrain", "--dataset", "digits", "--epochs", "1", "--output", "pre",
         "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--mlp-dim", "32"],
        tmp_path)
    run([KERAS_VIT, "finetune", "--dataset", "digits", "--init", "pre/backbone.keras",
         "--epochs", "1", "--output", "ft"], tmp_path)
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["architecture"]["image_size"] in (8, [8, 8])  # the backbone's, not 384 px
    for model in ("ft/model.keras", "pre/backbone.keras"):
        errors = _export_and_serve(str(tmp_path / model), tmp_path, ["onnx"])
        assert errors["onnx"] < 1e-4, (model, errors)


def test_a_usage_error_is_one_line_after_a_quiet_start(tmp_path):
    """No TensorFlow/CUDA/absl start-up lines (TF_CPP_MIN_LOG_LEVEL unset, as for a user), no
    traceback: the error alone, exit code 2."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [KERAS_VIT, "train", "--dataset", "digits", "--batch-size", "0", "--output", "x"],
        cwd=tmp_path, env={**env, "KERAS_BACKEND": BACKEND}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "keras-vit train: error: --batch-size 0 is invalid; must be >= 1."], done.stderr
