"""The analyses against analytic and hand-computed cases, and the figures as real pictures."""

import math

import numpy as np
import pytest
from PIL import Image

import keras

import keras_vit
from keras_vit import analysis
from keras_vit.analysis import plots

SMALL = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64)


def test_attention_maps_have_every_layer_and_head_and_rows_sum_to_one(rng):
    model = keras_vit.ViT(**SMALL, classes=5)
    images = rng.uniform(0, 255, (3, 32, 32, 3))
    attention = analysis.attention_maps(model, images, batch_size=2)
    assert attention.shape == (3, 3, 4, 17, 17)
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
    # Layer 0's probabilities equal the first block's own, called on the embedded tokens.
    tokens = model.get_layer("embedding")(model.get_layer("patches")(model.get_layer("rescale")(
        keras.ops.convert_to_tensor(images[:1].astype("float32")))))
    _, probs = model.get_layer("encoderblock_0")(tokens, return_attention_scores=True)
    np.testing.assert_allclose(attention[0, :1], keras.ops.convert_to_numpy(probs), rtol=1e-5, atol=1e-6)


def test_mean_distance_is_zero_when_each_patch_attends_to_itself():
    g = 3
    attention = np.zeros((1, 2, 1 + g * g, 1 + g * g))
    attention[..., 0, 0] = 1.0
    attention[..., np.arange(1, 10), np.arange(1, 10)] = 1.0
    distance = analysis.mean_attention_distance(attention, g, g, (16, 16), num_prefix_tokens=1)
    np.testing.assert_allclose(distance, 0.0, atol=1e-12)


def test_mean_distance_of_uniform_attention_on_a_2x2_grid_is_closed_form():
    # From any corner of a 2x2 grid the keys lie at 0, p, p and p*sqrt(2).
    attention = np.full((1, 1, 4, 4), 0.25)
    distance = analysis.mean_attention_distance(attention, 2, 2, (16, 16), num_prefix_tokens=0)
    np.testing.assert_allclose(distance, [16 * (2 + math.sqrt(2)) / 4])


def test_mean_distance_of_uniform_attention_on_a_g_grid_matches_the_pair_average():
    g, p = 5, 4
    # Closed form for uniform attention: the mean distance over all ordered pairs of cells,
    # E|dr, dc| with dr, dc ~ the difference of two independent uniforms on {0..g-1}.
    weights = {d: (g if d == 0 else 2 * (g - d)) / g**2 for d in range(g)}
    expected = sum(wr * wc * p * math.hypot(dr, dc)
                   for dr, wr in weights.items() for dc, wc in weights.items())
    attention = np.full((2, 3, 1 + g * g, 1 + g * g), 1.0 / (1 + g * g))
    distance = analysis.mean_attention_distance(attention, g, g, (p, p), num_prefix_tokens=1)
    np.testing.assert_allclose(distance, expected, rtol=1e-12)


def test_mean_distance_hand_computed_small_case():
    # 1x3 grid of 10-pixel patches; query 0 puts 0.5 on itself and 0.5 on patch 2 (20 px away);
    # query 1 puts all on patch 0 (10 px); query 2 splits 0.25/0.75 on patches 1 and 2 (10, 0).
    attention = np.array([[[[0.5, 0.0, 0.5], [1.0, 0.0, 0.0], [0.0, 0.25, 0.75]]]])
    distance = analysis.mean_attention_distance(attention, 1, 3, (10, 10), num_prefix_tokens=0)
    np.testing.assert_allclose(distance, [(10.0 + 10.0 + 2.5) / 3])


def test_rollout_of_identity_attention_is_the_identity():
    attention = np.broadcast_to(np.eye(5), (4, 2, 3, 5, 5))
    for residual in (True, False):
        np.testing.assert_allclose(analysis.attention_rollout(attention, residual),
                                   np.broadcast_to(np.eye(5), (2, 5, 5)))


def test_rollout_hand_computed_two_layers():
    a1 = np.array([[0.5, 0.5], [0.0, 1.0]])
    a2 = np.array([[1.0, 0.0], [0.5, 0.5]])
    # Two heads per layer that average to a1 and a2.
    layer1 = np.stack([a1 + [[0.1, -0.1], [0, 0]], a1 - [[0.1, -0.1], [0, 0]]])
    layer2 = np.stack([a2, a2])
    attention = np.stack([layer1, layer2])[:, None]  # (layers, B=1, heads, 2, 2)
    r1 = (a1 + np.eye(2)) / 2  # residual, rows renormalised
    r2 = (a2 + np.eye(2)) / 2
    np.testing.assert_allclose(analysis.attention_rollout(attention)[0], r2 @ r1)
    np.testing.assert_allclose(analysis.attention_rollout(attention, add_residual=False)[0], a2 @ a1)


def test_rollout_maps_and_class_attention_at_input_resolution(rng):
    model = keras_vit.ViT(**SMALL, classes=5)
    images = rng.uniform(0, 255, (2, 32, 32, 3))
    maps = analysis.rollout_maps(model, images)
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    heads = analysis.last_layer_class_attention(model, images)
    assert heads.shape == (2, 4, 32, 32)
    gap = keras_vit.ViT(**SMALL, classifier="gap", classes=5)
    assert analysis.rollout_maps(gap, images).shape == (2, 32, 32)
    with pytest.raises(ValueError, match="no class token"):
        analysis.last_layer_class_attention(gap, images)


@pytest.mark.parametrize("position_embedding", ["learned_1d", "learned_2d"])
def test_position_similarity_has_unit_diagonal_and_is_symmetric(position_embedding):
    model = keras_vit.ViT(**{**SMALL, "image_size": (32, 48)}, position_embedding=position_embedding)
    similarity = analysis.position_embedding_similarity(model)
    assert similarity.shape == (4, 6, 4, 6)
    flat = similarity.reshape(24, 24)
    np.testing.assert_allclose(np.diag(flat), 1.0, rtol=1e-10)
    np.testing.assert_allclose(flat, flat.T, atol=1e-12)
    if position_embedding == "learned_2d":  # patches in one row share half their embedding
        assert similarity[0, 0, 0, 5] > similarity[0, 0, 3, 5]


def test_position_similarity_needs_a_learned_absolute_embedding():
    with pytest.raises(ValueError, match="only learned"):
        analysis.position_embedding_similarity(keras_vit.ViT(**SMALL, position_embedding="relative"))


def test_filter_components_shapes_and_variance_order():
    model = keras_vit.ViT(**SMALL)
    tiles, explained = analysis.patch_embedding_filters(model, num_components=10)
    assert tiles.shape == (10, 8, 8, 3) and tiles.min() >= 0 and tiles.max() <= 1
    assert np.all(np.diff(explained) <= 1e-12) and explained[0] == explained.max()
    assert 0 < explained.sum() <= 1 + 1e-9


def _assert_real_picture(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 5  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # more than a frame and text


def test_figures_are_written_as_non_blank_images(tmp_path, rng):
    model = keras_vit.ViT(**SMALL)
    images = rng.uniform(0, 255, (2, 32, 32, 3))
    attention = analysis.attention_maps(model, images)
    rows, cols, prefix, pixels = analysis.token_layout(model)
    distance = analysis.mean_attention_distance(attention, rows, cols, pixels, prefix)
    tiles, explained = analysis.patch_embedding_filters(model)
    paths = [
        plots.plot_mean_attention_distance(distance, tmp_path / "distance.png", image_size=32),
        plots.plot_position_similarity(analysis.position_embedding_similarity(model), tmp_path / "pos.png"),
        plots.plot_filters(tiles, tmp_path / "filters.png", explained),
        plots.plot_attention_overlay(images[0], analysis.rollout_maps(model, images)[0], tmp_path / "rollout.png"),
        plots.plot_head_maps(analysis.last_layer_class_attention(model, images)[0], tmp_path / "heads.png"),
    ]
    for path in paths:
        _assert_real_picture(path)
    svg = plots.plot_mean_attention_distance(distance, tmp_path / "distance.svg")
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
