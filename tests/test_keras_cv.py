"""keras-cv layers (the `cv` extra) in the tf.data pipeline and `keras-vit train --augment`.

The pipeline runs in tf.data whatever KERAS_BACKEND is, so each backend's leg runs the real
keras-cv package; a short `keras-vit train` with a keras-cv layer runs in a new process once per
make test (the layer runs in tf.data on every backend; the training, remat included, is each
backend's own in test_applications and test_remat).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tf_data
from applications import cli
from conftest import BACKEND, once, require
from tf_data import augment

keras_cv = require("keras_cv")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--hidden-size", "16", "--num-layers", "1", "--num-heads", "2", "--mlp-dim", "16",
        "--batch-size", "64", "--verbose", "0", "--crop-min-area", "1"]


def _batches(transforms, **kwargs):
    config = tf_data.PipelineConfig(image_size=(16, 16), batch_size=8, crop_area=None,
                                    batch_transforms=transforms, **kwargs)
    dataset = tf_data.build_dataset(tf_data.load_source("digits"), "train", config, training=True)
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset.take(2)]


def _plain():
    return _batches(())


@pytest.mark.parametrize("spec", [
    "keras_cv.layers.AugMix",
    "keras_cv.layers.RandAugment(magnitude=0.5, augmentations_per_image=2)",
    "keras_cv.layers.GridMask(ratio_factor=(0.3, 0.5))",
    "keras_cv.layers.RandomCutout(height_factor=0.3, width_factor=0.3)",
])
def test_keras_cv_layers_run_in_the_pipeline(spec):
    plain, augmented = _plain(), _batches((spec,))
    for (x0, y0), (x, y) in zip(plain, augmented):
        assert x.shape == (8, 16, 16, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 255.0
        np.testing.assert_array_equal(y, y0)  # label-preserving: the same examples, labels
        assert np.abs(x - x0).max() > 1.0  # and the images changed


def test_layer_instances_and_label_mixing_layers_with_one_hot_labels():
    mix = keras_cv.layers.MixUp(alpha=0.8, seed=1)
    (x, y), _ = _batches((mix,), one_hot=True)
    assert y.shape == (8, 10) and np.allclose(y.sum(axis=1), 1.0)
    assert (y.max(axis=1) < 1.0).any()  # labels mixed too


def test_bad_names_say_what_to_do(monkeypatch):
    cases = {
        "keras_cv.layers.AugMx": r"keras_cv.layers has no 'AugMx'; did you mean keras_cv.layers.AugMix",
        "keras_cv.layers.AugMix(severity=": r"not a class path",
        "keras_cv.layers.AugMix(0.3)": r"pass arguments by keyword",
        "keras_cv.layers.AugMix(bogus=1)": r"AugMix\(bogus=1, .*\) failed",
        "no_such_pkg.layers.X": r"no module 'no_such_pkg'",
        "keras.layers": r"not a layer class",
    }
    for spec, match in cases.items():
        with pytest.raises(tf_data.DataError, match=match):
            _batches((spec,))
    # Without keras-cv: the extra to install and the Keras-native alternatives.
    for name in [m for m in sys.modules if m == "keras_cv" or m.startswith("keras_cv.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(tf_data.DataError, match=r"keras-cv is not installed.*"
                       r"pip install --no-deps keras-cv==0\.9\.0.*keras\.layers\.RandAugment"):
        augment.load_layer("keras_cv.layers.AugMix", seed=0)


def test_cli_bad_name_exits_2_without_traceback(tmp_path, capsys):
    rc = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--output",
                   str(tmp_path / "run"), "--augment", "keras_cv.layers.NoSuchLayer", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "keras_cv.layers has no 'NoSuchLayer'" in err and "Traceback" not in err


@once  # keras-cv runs in tf.data whichever backend trains; remat is test_remat's, every backend
def test_keras_vit_train_with_a_keras_cv_layer(tmp_path):
    """`keras-vit train --augment keras_cv.layers.AugMix --remat` on digits, in a new process
    (the figures go to the README; `KERAS_BACKEND=... pytest -s -k keras_cv_layer` on each
    backend's leg for all three)."""
    backend = BACKEND
    out = tmp_path / backend
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "applications.cli", "train", "--dataset", "digits",
               "--epochs", "3", "--lr", "5e-3", "--output", str(out), "--remat",
               "--augment", "keras_cv.layers.AugMix(severity=0.3)", *TINY]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["backend"] == backend and metrics["status"] == "ok"
    assert config["augment"] == ["keras_cv.layers.AugMix(severity=0.3)"] and config["remat"]
    # --remat built the model from remat blocks, and the saved model holds them (not only the
    # config's echo of the flag).
    import keras

    import keras_vit

    saved = keras.saving.load_model(out / "model.keras")
    blocks = [layer for layer in saved.layers if isinstance(layer, keras_vit.TransformerBlock)]
    assert len(blocks) == 1 and all(isinstance(b, keras_vit.RematTransformerBlock)
                                    for b in blocks), [type(b).__name__ for b in blocks]
    print(f"\n[keras-cv] {backend}: keras-vit train --augment keras_cv.layers.AugMix(severity=0.3) "
          f"--remat, 3 epochs: test accuracy {metrics['test']['accuracy']:.3f}, "
          f"train_time_s {metrics['train_time_s']:.1f}")
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
