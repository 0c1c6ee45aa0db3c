"""Masked patch prediction: targets by hand, corruption statistics, loss on corrupted patches."""

import numpy as np
import pytest

import keras
from keras import ops

import keras_vit
from keras_vit import MaskedPatchPrediction

SMALL = dict(image_size=16, patch_size=8, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
             include_top=False)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _colour_image():
    """2x2 patches of 8x8 px with hand-chosen colours, including level edges."""
    image = np.zeros((16, 16, 3), "float32")
    image[:8, :8] = [31, 32, 255]     # levels 0, 1, 7 -> 0*64 + 1*8 + 7 = 15
    image[:8, 8:] = [224, 223, 0]     # levels 7, 6, 0 -> 7*64 + 6*8 + 0 = 496
    image[8:, :8] = [63, 64, 128]     # levels 1, 2, 4 -> 64 + 16 + 4 = 84
    # bottom-right: half 0, half 64 per pixel row -> mean 32 in every channel -> 1*64+1*8+1 = 73
    image[8:, 8:12] = 0
    image[8:, 12:] = 64
    return image


@pytest.mark.parametrize("include_preprocessing", [True, False])
def test_mean_colour_targets_equal_a_hand_computation(include_preprocessing):
    backbone = keras_vit.ViT(**SMALL, include_preprocessing=include_preprocessing)
    mpp = MaskedPatchPrediction(backbone)
    image = _colour_image()[None]
    if not include_preprocessing:
        image = keras_vit.preprocess_input(image)
    np.testing.assert_array_equal(numpy(mpp.targets(image)), [[15, 496, 84, 73]])


def test_downsized_targets_subdivide_each_patch():
    backbone = keras_vit.ViT(**SMALL)
    mpp = MaskedPatchPrediction(backbone, target="downsized", target_cells=2)
    image = _colour_image()[None]
    targets = numpy(mpp.targets(image))
    assert targets.shape == (1, 4, 4)
    np.testing.assert_array_equal(targets[0, 0], [15] * 4)
    # bottom-right patch: left cells are 0 (class 0), right cells are 64 (levels 2,2,2 -> 146)
    np.testing.assert_array_equal(targets[0, 3], [0, 146, 0, 146])


def test_corruption_shares_match_50_percent_and_80_10_10():
    backbone = keras_vit.ViT(**{**SMALL, "image_size": 64, "patch_size": 4})  # 256 patches
    mpp = MaskedPatchPrediction(backbone, seed=1)
    embeddings = keras.random.normal((64, 256, 32), seed=2)
    corrupted_x, corrupted, how = mpp.corrupt(embeddings)
    corrupted, how = numpy(corrupted), numpy(how)
    x, e, token = numpy(corrupted_x), numpy(embeddings), numpy(mpp.mask_token)
    assert np.all(corrupted.sum(-1) == 128)  # exactly half of each image's patches
    shares = np.bincount(how[corrupted], minlength=4)[1:] / corrupted.sum()
    # 8192 corrupted patches: binomial std of a 10% share is 0.0033.
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.015)
    np.testing.assert_array_equal(x[how == 0], e[how == 0])          # untouched
    np.testing.assert_array_equal(x[how == 3], e[how == 3])          # kept as is
    np.testing.assert_allclose(x[how == 1], np.broadcast_to(token, x[how == 1].shape))
    swapped, originals = x[how == 2], e[how == 2]
    assert not np.any(np.all(swapped == originals, axis=-1))         # another patch...
    pool = e.reshape(-1, 32)
    for row in swapped[:20]:                                         # ...from the batch
        assert np.any(np.all(pool == row, axis=-1))


def test_uncorrupted_patches_never_reach_the_loss(rng):
    mpp = MaskedPatchPrediction(keras_vit.ViT(**SMALL))
    predictions = rng.standard_normal((2, 4, 512)).astype("float32")
    targets = rng.integers(0, 512, (2, 4))
    corrupted = np.array([[True, False, True, False], [False, False, True, True]])
    loss = float(numpy(mpp.compute_loss(y_pred={
        "predictions": predictions, "targets": targets, "corrupted": corrupted})))
    changed = predictions.copy()
    changed[~corrupted] = 100 * rng.standard_normal((4, 512))
    again = float(numpy(mpp.compute_loss(y_pred={
        "predictions": changed, "targets": targets, "corrupted": corrupted})))
    log_probs = predictions - np.log(np.exp(predictions).sum(-1, keepdims=True))
    expected = -np.mean(np.take_along_axis(log_probs, targets[..., None], -1)[..., 0][corrupted])
    np.testing.assert_allclose([loss, again], expected, rtol=1e-5)


def test_fits_saves_and_loads(tmp_path, rng):
    mpp = MaskedPatchPrediction(keras_vit.ViT(**SMALL, classifier="gap"), seed=0)
    mpp.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    history = mpp.fit(images, np.zeros(16), batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "mpp.keras"
    mpp.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MaskedPatchPrediction) and loaded.target == "mean_color"
    for a, b in zip(loaded.backbone.weights, mpp.backbone.weights):
        np.testing.assert_array_equal(numpy(a), numpy(b))


@pytest.mark.parametrize("kwargs, message", [
    (dict(target="colour"), "Unknown target 'colour'"),
    (dict(mask_ratio=0.0), "mask_ratio must be in"),
    (dict(replace_ratios=(0.8, 0.1)), "replace_ratios must be 3"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskedPatchPrediction(keras_vit.ViT(**SMALL), **kwargs)


def test_backbone_must_return_tokens():
    with pytest.raises(ValueError, match="include_top=False, pooling=None"):
        MaskedPatchPrediction(keras_vit.ViT(**{**SMALL, "include_top": True}))
