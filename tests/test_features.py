"""Intermediate features (`keras_vit.feature_extractor`) against HF transformers' ViTModel.

The same random weights go into HF `ViTModel` (PyTorch, `output_hidden_states=True`) and, through
a `save_pretrained` directory, into a keras-vit classifier whose last block computes only the
class row; the extractor must give every block's tokens as HF does.
"""

import keras
import numpy as np
import pytest

import keras_vit
from conftest import require

torch = require("torch")
transformers = require("transformers")

TOLERANCE = 1e-4
ARCH = dict(patch_size=8, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    config = transformers.ViTConfig(
        hidden_size=ARCH["hidden_size"], num_hidden_layers=ARCH["num_layers"],
        num_attention_heads=ARCH["num_heads"], intermediate_size=ARCH["mlp_dim"],
        image_size=32, patch_size=ARCH["patch_size"], num_labels=7, hidden_act="gelu",
        layer_norm_eps=1e-6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # informative values everywhere (HF zero-initialises biases)
        for name, p in model.named_parameters():
            noise = torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.1)
            p.copy_(noise + (1.0 if "layernorm" in name and name.endswith("weight") else 0.0))
    path = tmp_path_factory.mktemp("hf") / "vit"
    model.save_pretrained(path)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        out = model.vit(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                        output_hidden_states=True)  # the ViTModel inside the classifier
    return dict(path=str(path), images=images,
                hidden_states=[h.numpy() for h in out.hidden_states],
                last_hidden_state=out.last_hidden_state.numpy())


def _classifier(path):
    """A classifier whose last block computes only the class row (the shortcut to undo)."""
    return keras_vit.ViT(image_size=32, **ARCH, classes=7, classifier_activation=None,
                         include_preprocessing=False, weights=path)


def _numpy(outputs):
    if isinstance(outputs, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in outputs]
    return keras.ops.convert_to_numpy(outputs)


def test_every_block_matches_hf_hidden_states(hf):
    model = _classifier(hf["path"])
    assert model.get_layer(f"encoderblock_{ARCH['num_layers'] - 1}").output.shape[1] == 1
    tokens = _numpy(keras_vit.feature_extractor(model)(hf["images"]))
    assert len(tokens) == ARCH["num_layers"]
    errors = [np.abs(ours - ref).max() for ours, ref in zip(tokens, hf["hidden_states"][1:])]
    print(f"\n[features] {keras.backend.backend()}: max |error| per block vs HF "
          f"hidden_states: {', '.join(f'{e:.2e}' for e in errors)}")
    for ours, ref in zip(tokens, hf["hidden_states"][1:]):
        assert ours.shape == ref.shape == (3, 17, 32)
        np.testing.assert_allclose(ours, ref, atol=TOLERANCE, rtol=0)

    last = _numpy(keras_vit.feature_extractor(model, blocks=-1, norm=True)(hf["images"]))
    np.testing.assert_allclose(last, hf["last_hidden_state"], atol=TOLERANCE, rtol=0)
    print(f"[features] {keras.backend.backend()}: max |error| vs HF last_hidden_state "
          f"(norm=True): {np.abs(last - hf['last_hidden_state']).max():.2e}")


def test_spatial_maps_drop_the_class_token(hf):
    model = _classifier(hf["path"])
    maps = _numpy(keras_vit.feature_extractor(model, blocks=[0, 2], output="spatial")(hf["images"]))
    for ours, ref in zip(maps, (hf["hidden_states"][1], hf["hidden_states"][3])):
        assert ours.shape == (3, 4, 4, 32)
        np.testing.assert_allclose(ours, ref[:, 1:].reshape(3, 4, 4, 32), atol=TOLERANCE, rtol=0)


def test_gap_model_without_top_and_errors(rng):
    model = keras_vit.ViT(image_size=(16, 24), patch_size=8, hidden_size=16, num_layers=2,
                          num_heads=2, mlp_dim=32, classifier="gap", include_top=False)
    features = keras_vit.feature_extractor(model, blocks=(1,), output="spatial", norm=True)
    x = rng.uniform(0, 255, (2, 16, 24, 3)).astype("float32")
    maps = _numpy(features(x))  # one block: one output
    tokens = _numpy(model(x))  # no pooling: the normalised last block's tokens
    np.testing.assert_allclose(maps, tokens.reshape(2, 2, 3, 16), atol=1e-5)
    for bad, match in ((dict(blocks=2), "out of range"), (dict(blocks=[]), "no encoder block"),
                       (dict(output="maps"), "Unknown output")):
        with pytest.raises(ValueError, match=match):
            keras_vit.feature_extractor(model, **bad)
    with pytest.raises(ValueError, match="not built by keras_vit.ViT"):
        keras_vit.feature_extractor(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_extractor_saves_loads_and_shares_weights(hf, tmp_path):
    model = _classifier(hf["path"])
    features = keras_vit.feature_extractor(model, blocks=[0, -1], output="spatial", norm=True)
    before = _numpy(features(hf["images"]))
    features.save(tmp_path / "features.keras")
    back = keras.saving.load_model(tmp_path / "features.keras")
    for got, want in zip(_numpy(back(hf["images"])), before):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # The model itself is unchanged (it still saves, loads and classifies as before).
    logits = _numpy(model(hf["images"]))
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(_numpy(keras.saving.load_model(tmp_path / "model.keras")(
        hf["images"])), logits, atol=1e-6)
    # Shared weights: changing the model's first block changes the extractor's output.
    block = model.get_layer("encoderblock_0")
    block.mlp.dense_1.bias.assign(np.linspace(-1, 1, 32).astype("float32"))
    assert np.abs(_numpy(features(hf["images"]))[0] - before[0]).max() > 0.1
