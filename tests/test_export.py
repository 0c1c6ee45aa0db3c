"""Exported SavedModel, ONNX and LiteRT artifacts compute what the Keras model computes."""

import keras
import numpy as np
import pytest

import keras_vit
from conftest import BACKEND
from keras_vit.export import MissingToolchainError, check_toolchain, export_model
from artifacts import RUNNERS, run_onnx
from numpy_vit import relative_error

SMALL = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
             classes=10)
TOLERANCE = 1e-4


def _images(rng):
    """Random images and real ones: the embedded digits, upscaled to 32 px RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:3] * (255.0 / 16.0)
    digits = np.repeat(np.repeat(digits, 4, axis=1), 4, axis=2)
    digits = np.repeat(digits[..., None], 3, axis=-1)
    return np.concatenate([digits, rng.uniform(0, 255, (3, 32, 32, 3))]).astype("float32")


def _model(rng, **kwargs):
    model = keras_vit.ViT(**{**SMALL, **kwargs})
    head = model.get_layer("head")
    head.kernel.assign(rng.standard_normal(head.kernel.shape).astype("float32"))
    return model




@pytest.mark.skipif(BACKEND != "tensorflow", reason="each format is produced under TensorFlow; run once")
@pytest.mark.parametrize("classifier", ["token", "gap"])
@pytest.mark.parametrize("format", sorted(RUNNERS))
def test_exported_outputs_equal_the_keras_model(format, classifier, tmp_path, rng):
    model = _model(rng, classifier=classifier, classifier_activation=None)
    images = _images(rng)
    path = str(tmp_path / {"saved_model": "sm", "onnx": "m.onnx", "litert": "m.tflite"}[format])
    export_model(model, path, format)
    assert relative_error(RUNNERS[format](path, images), model.predict(images, verbose=0)) < TOLERANCE


@pytest.mark.skipif(BACKEND != "tensorflow", reason="run once")
def test_hybrid_and_relative_models_export_with_probabilities(tmp_path, rng):
    for kwargs in (dict(resnet_num_layers=(1,), resnet_width_factor=0.5, patch_size=1, image_size=32),
                   dict(position_embedding="relative")):
        model = _model(rng, **kwargs)  # softmax head
        images = _images(rng)
        path = str(tmp_path / "m.onnx")
        export_model(model, path, "onnx", outputs="probabilities")
        probs = run_onnx(path, images)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        assert relative_error(probs, model.predict(images, verbose=0)) < TOLERANCE


def test_export_from_this_backends_model_file(tmp_path, rng):
    """A model trained under any backend, saved as .keras, exports (via TensorFlow)."""
    model = _model(rng, classifier_activation=None)
    saved = str(tmp_path / "model.keras")
    model.save(saved)
    images = _images(rng)
    path = str(tmp_path / "m.onnx")
    export_model(saved, path, "onnx", outputs="probabilities")
    probs = run_onnx(path, images)
    logits = model.predict(images, verbose=0)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert relative_error(probs, expected) < TOLERANCE


def test_missing_toolchain_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(MissingToolchainError, match=r"pip install tf2onnx .*\.\[export\]"):
        check_toolchain("onnx")
    with pytest.raises(ValueError, match="Unknown export format 'coreml'"):
        check_toolchain("coreml")


def test_mixed_precision_models_export_in_float32(rng):
    """A run trained under mixed_bfloat16 saves bf16-computing layers; export takes the
    float32 model with the same (float32) variables."""
    from keras_vit.export import as_float32

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = _model(rng, classifier_activation=None)
    finally:
        keras.config.set_dtype_policy(previous)
    plain = as_float32(mixed)
    assert {layer.dtype_policy.name for layer in plain._flatten_layers()} == {"float32"}
    reference = keras_vit.ViT(**SMALL, classifier_activation=None)
    reference.set_weights(mixed.get_weights())
    images = _images(rng)
    np.testing.assert_array_equal(plain.predict(images, verbose=0),
                                  reference.predict(images, verbose=0))
    assert as_float32(reference) is reference
