"""The model loaded from an official-layout .npz equals the paper's equations in float64 NumPy.

Every backend runs this file (make test: one leg each) against the same reference, within
TOLERANCE (measured 3e-7 to 1e-6 on each backend for every case): so the backends also give
the same logits for the same weights, within 2 * TOLERANCE = 1e-5 of each other, with no test
that spawns the three of them."""

import numpy as np
import pytest

import keras_vit
from numpy_vit import make_official_params, relative_error, vit_forward

TOLERANCE = 5e-6

CASES = {
    "token": dict(),
    "gap": dict(classifier="gap"),
    "pre_logits": dict(representation_size=24),
    "erf_gelu": dict(gelu_approximate=False),
    "hybrid": dict(resnet=(1, 2), image_size=64, patch=1, resnet_width=32),
    "non_square_patch_grid": dict(image_size=32, patch=4),
}


def build(config, image_size=None, **overrides):
    size = image_size or config.get("image_size", 32)
    return keras_vit.ViT(
        image_size=size,
        patch_size=config.get("patch", 8),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        mlp_dim=64,
        classes=10,
        classifier=config.get("classifier", "token"),
        representation_size=config.get("representation_size"),
        gelu_approximate=config.get("gelu_approximate", True),
        resnet_num_layers=config.get("resnet"),
        resnet_width_factor=config.get("resnet_width", 64) / 64,
        classifier_activation=None,
        **overrides,
    )


def write_checkpoint(tmp_path, rng, config):
    keys = ("image_size", "patch", "classifier", "representation_size", "resnet", "resnet_width")
    params = make_official_params(rng, **{k: config[k] for k in keys if k in config})
    path = tmp_path / "ViT-test.npz"
    np.savez(path, **params)
    return path, params


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_numpy_reference(case, tmp_path, rng):
    config = CASES[case]
    path, params = write_checkpoint(tmp_path, rng, config)
    model = build(config, weights=str(path))
    size = config.get("image_size", 32)
    images = rng.uniform(0, 255, (3, size, size, 3)).astype("float32")
    expected = vit_forward(params, images, classifier=config.get("classifier", "token"),
                           resnet=config.get("resnet"),
                           gelu_approximate=config.get("gelu_approximate", True))
    actual = model.predict(images, verbose=0)
    assert actual.shape == expected.shape
    assert np.abs(expected).max() > 0.1  # informative logits, not a zero head
    assert relative_error(actual, expected) < TOLERANCE


@pytest.mark.parametrize(
    "case, new_size", [("token", (48, 48)), ("gap", (40, 56)), ("token", (24, 40))]
)
def test_resampled_resolution_matches_official_zoom(case, new_size, tmp_path, rng):
    """A 32 px checkpoint (4x4 grid) used at another (also non-square) resolution."""
    config = CASES[case]
    path, params = write_checkpoint(tmp_path, rng, config)
    model = build(config, image_size=new_size, weights=str(path))
    images = rng.uniform(0, 255, (2, *new_size, 3)).astype("float32")
    expected = vit_forward(params, images, classifier=config.get("classifier", "token"))
    assert relative_error(model.predict(images, verbose=0), expected) < TOLERANCE


def test_hybrid_at_another_resolution(tmp_path, rng):
    config = CASES["hybrid"]
    path, params = write_checkpoint(tmp_path, rng, config)
    model = build(config, image_size=96, weights=str(path))
    images = rng.uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    expected = vit_forward(params, images, resnet=config["resnet"])
    assert relative_error(model.predict(images, verbose=0), expected) < TOLERANCE


def test_preprocessing_excluded_takes_minus_one_to_one(tmp_path, rng):
    path, params = write_checkpoint(tmp_path, rng, CASES["token"])
    model = build({}, weights=str(path), include_preprocessing=False)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = vit_forward(params, images)
    actual = model.predict(keras_vit.preprocess_input(images), verbose=0)
    assert relative_error(actual, expected) < TOLERANCE


def test_big_vision_layout_loads_the_same(tmp_path, rng):
    """Linen names, a `params/` prefix and top-level pos_embedding, as big_vision saves."""
    _, params = write_checkpoint(tmp_path, rng, CASES["token"])
    renames = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_1":
               "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
               "MlpBlock_3": "MlpBlock_0"}
    big_vision = {}
    for key, value in params.items():
        parts = key.split("/")
        if len(parts) > 2 and parts[1].startswith("encoderblock_"):
            parts[2] = renames[parts[2]]
        key = "pos_embedding" if key.endswith("pos_embedding") else "/".join(parts)
        big_vision["params/" + key] = value
    path = tmp_path / "big_vision.npz"
    np.savez(path, **big_vision)
    model = build({}, weights=str(path))
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert relative_error(model.predict(images, verbose=0), vit_forward(params, images)) < TOLERANCE
