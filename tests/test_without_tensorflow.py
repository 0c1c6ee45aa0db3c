"""`keras_vit` on a machine without TensorFlow (the JAX/PyTorch GPU image): import, load
official-layout weights, predict against the float64 reference, train, save and load.

Each test runs a new Python process with TensorFlow made unimportable (tests/no_tensorflow).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import BACKEND
from numpy_vit import make_official_params, relative_error, vit_forward

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

pytestmark = pytest.mark.skipif(
    BACKEND == "tensorflow", reason="the TensorFlow backend needs TensorFlow")

SCRIPT = r"""
import importlib.util, json, sys
import numpy as np
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is still importable"
import keras
import keras_vit

path, images_path, out = sys.argv[1:]
images = np.load(images_path)
model = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4,
                      mlp_dim=64, classes=10, weights=path, classifier_activation=None)
logits = model.predict(images, verbose=0)
model.compile(optimizer="adamw",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(images, np.arange(len(images)) % 10, epochs=1, verbose=0)
model.save(out + ".keras")
reloaded = keras.saving.load_model(out + ".keras")
same = np.abs(reloaded.predict(images, verbose=0) - model.predict(images, verbose=0)).max()
loaded = sorted(m for m in sys.modules if m.partition(".")[0] == "tensorflow")
print(json.dumps({"logits": logits.tolist(), "reload_difference": float(same),
                  "tensorflow_modules": loaded}))
"""


def run_without_tensorflow(args, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": BACKEND,
           "PYTHONPATH": os.pathsep.join([os.path.join(HERE, "no_tensorflow"), ROOT])}
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_library_runs_without_tensorflow(tmp_path, rng):
    params = make_official_params(rng)
    np.savez(tmp_path / "ViT-test.npz", **params)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    result = run_without_tensorflow(
        [str(tmp_path / "ViT-test.npz"), str(tmp_path / "images.npy"), str(tmp_path / "model")],
        tmp_path)
    assert result["tensorflow_modules"] == []
    assert relative_error(np.array(result["logits"]), vit_forward(params, images)) < 1e-4
    assert result["reload_difference"] == 0.0


def test_programs_say_tensorflow_is_needed(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": BACKEND,
           "PYTHONPATH": os.pathsep.join([os.path.join(HERE, "no_tensorflow"), ROOT])}
    done = subprocess.run([sys.executable, "-m", "applications.cli", "train", "--dataset",
                           "digits", "--output", str(tmp_path / "run")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert 'pip install "tensorflow>=2.21" tensorflow-datasets tensorboard' in done.stderr
    assert 'pip install -c constraints.txt ".[tf,jax]"' in done.stderr
    assert "Traceback" not in done.stderr
