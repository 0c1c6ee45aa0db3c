"""The later ViTs' options on `ViT(...)` and their layers: off, the paper's model is unchanged
(bit for bit); on, each does what its paper says, checked against NumPy written from the
papers (DeiT-III: LayerScale and a patch-only position embedding, against the float64
reference reading the published DeiT-III arrays), and saves to `.keras` on every backend.
HF-transformers parity of the families these options build is in test_families_parity.py."""

import keras
import numpy as np
import pytest

import keras_vit
from conftest import once, require
from keras_vit.layers import LayerScale, MultiheadAttentionPooling, RegisterTokens, TokenPooling
from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.sincos import sincos_2d_position_embedding
from numpy_vit import deit3_forward, make_deit3_state, relative_error

SMALL = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)
OFF = dict(num_register_tokens=0, layer_scale_init_value=None, no_embed_class=False,
           class_token=None, fc_norm=False)
TOLERANCE = 1e-5


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        base = 1.0 if w.path.endswith(("gamma", "scale")) else 0.0
        w.assign((base + 0.3 * rng.standard_normal(w.shape)).astype("float32"))
    return model


# --------------------------------------------------------------------------- options off


@pytest.mark.parametrize("kwargs", [dict(), dict(classifier="gap"),
                                    dict(include_top=False, pooling="avg")],
                         ids=["token", "gap", "avg"])
def test_options_off_are_the_paper_model_bit_for_bit(kwargs, rng):
    """Every option at its default builds the same layers and weights and gives identical
    outputs (the paper's model itself is checked against NumPy in test_reference.py)."""
    paper = _randomise(keras_vit.ViT(**SMALL, classes=10, **kwargs))
    off = keras_vit.ViT(**SMALL, classes=10, **OFF, **kwargs)
    assert [type(l).__name__ for l in off.layers] == [type(l).__name__ for l in paper.layers]
    assert [w.path for w in off.weights] == [w.path for w in paper.weights]
    assert not any(isinstance(l, (RegisterTokens, LayerScale, MultiheadAttentionPooling))
                   for l in off._flatten_layers())
    off.set_weights(paper.get_weights())
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(numpy(off(x)), numpy(paper(x)))


def test_neutral_options_equal_the_paper_model_bit_for_bit(rng):
    """LayerScale of ones and a patch-only position embedding whose class row was zero are
    the paper's function exactly (x * 1 = x, x + 0 = x)."""
    paper = _randomise(keras_vit.ViT(**SMALL, classes=10, classifier_activation=None))
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = numpy(paper(x))
    scaled = keras_vit.ViT(**SMALL, classes=10, classifier_activation=None,
                           layer_scale_init_value=1.0)
    values = {w.path: v for w, v in zip(paper.weights, paper.get_weights())}
    for w in scaled.weights:
        if w.path in values:
            w.assign(values[w.path])
    np.testing.assert_array_equal(numpy(scaled(x)), expected)
    pos = paper.get_layer("embedding").pos_embedding
    pos.assign(np.concatenate([np.zeros((1, 1, 32), "float32"), numpy(pos)[:, 1:]], axis=1))
    expected = numpy(paper(x))
    patch_only = keras_vit.ViT(**SMALL, classes=10, classifier_activation=None,
                               no_embed_class=True)
    for w in patch_only.weights:
        value = numpy(pos)[:, 1:] if w.path.endswith("pos_embedding") else values[w.path]
        w.assign(value)
    np.testing.assert_array_equal(numpy(patch_only(x)), expected)


# --------------------------------------------------------------------------- DeiT-III


@pytest.fixture(scope="module")
def deit3(tmp_path_factory):
    """Random weights written as the published DeiT-III `.pth` ({"model": state dict}) and as
    timm's `deit3_*` safetensors (`ls1.gamma` / `ls2.gamma` names)."""
    save_file = require("safetensors.numpy").save_file
    rng = np.random.default_rng(3)
    state = make_deit3_state(rng)
    root = tmp_path_factory.mktemp("deit3")
    timm_state = {k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma"): v
                  for k, v in state.items()}
    save_file(timm_state, str(root / "deit3_tiny.safetensors"))
    torch = require("torch")  # the original files are torch pickles
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}},
               root / "deit_3_tiny_224_1k.pth")
    paths = {"timm": str(root / "deit3_tiny.safetensors"),
             "original": str(root / "deit_3_tiny_224_1k.pth")}
    # DeiT-III normalises with ImageNet mean and std: inputs of that range.
    images = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    logits, tokens = deit3_forward(state, images)
    return dict(paths=paths, images=images, logits=logits, tokens=tokens)


def _deit3(weights, **kwargs):
    kwargs = {**dict(layer_scale_init_value=1e-6, no_embed_class=True), **kwargs}
    return keras_vit.ViT(**SMALL, classes=10, classifier_activation=None,
                         include_preprocessing=False, weights=weights, **kwargs)


@pytest.mark.parametrize("layout", ["original", "timm"])
def test_deit3_matches_the_numpy_reference(deit3, layout):
    model = _deit3(deit3["paths"][layout])
    blocks = [l for l in model.layers if isinstance(l, keras_vit.TransformerBlock)]
    assert all(b.gelu_approximate is False for b in blocks)  # timm-layout files: exact GELU
    logits = numpy(model(deit3["images"]))
    error = relative_error(logits, deit3["logits"])
    print(f"\n[deit3] {keras.backend.backend()} {layout}: logits relative error {error:.1e}")
    assert error < TOLERANCE
    tokens = numpy(keras.Model(model.inputs, model.get_layer("encoder_norm").output)(
        deit3["images"]))
    # The classifier's last block computed the class row only; the reference's row 0 is it.
    assert relative_error(tokens[:, 0], deit3["tokens"][:, 0]) < TOLERANCE
    features = _deit3(deit3["paths"][layout], include_top=False)
    assert relative_error(numpy(features(deit3["images"])), deit3["tokens"]) < TOLERANCE


def test_deit3_file_into_a_model_with_a_class_position_row(deit3):
    """The patch-only table loads into the paper's layout as a zero class row: the same
    function (and back: a class row folds into the class token)."""
    model = _deit3(deit3["paths"]["timm"], no_embed_class=False, include_top=False)
    assert model.get_layer("embedding").pos_embedding.shape == (1, 17, 32)
    assert relative_error(numpy(model(deit3["images"])), deit3["tokens"]) < TOLERANCE
    back = _deit3(None, include_top=False, gelu_approximate=False)
    keras_vit.load_weights(back, _official_arrays_path(model, deit3))
    assert relative_error(numpy(back(deit3["images"])), deit3["tokens"]) < TOLERANCE


def _official_arrays_path(model, deit3):
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "with_class_row.npz")
    keras_vit.checkpoint.save_npz(model, path)
    return path


# --------------------------------------------------------------------------- each piece


def test_register_tokens_sit_between_the_class_token_and_the_patches(rng):
    model = keras_vit.ViT(**SMALL, include_top=False, num_register_tokens=3)
    embed = keras.Model(model.inputs, model.get_layer("registers").output)
    registers = rng.standard_normal((1, 3, 32)).astype("float32")
    model.get_layer("registers").registers.assign(registers)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    tokens = numpy(embed(x))
    before = numpy(keras.Model(model.inputs, model.get_layer("embedding").output)(x))
    assert tokens.shape == (2, 1 + 3 + 16, 32) and model.output_shape == (None, 20, 32)
    np.testing.assert_array_equal(tokens[:, 0], before[:, 0])
    np.testing.assert_array_equal(tokens[:, 1:4], np.broadcast_to(registers, (2, 3, 32)))
    np.testing.assert_array_equal(tokens[:, 4:], before[:, 1:])
    # Registers carry no position embedding: the class and patch rows had theirs already.
    assert model.get_layer("embedding").pos_embedding.shape == (1, 17, 32)


@once
def test_sincos_table_is_maes():
    """Against MAE's own `util/pos_embed.py` (get_2d_sincos_pos_embed, written out here)."""
    def one_d(width, pos):
        omega = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    size, width = 5, 16
    grid = np.stack(np.meshgrid(np.arange(size, dtype=np.float32),
                                np.arange(size, dtype=np.float32)), axis=0)  # w goes first
    table = np.concatenate([one_d(width // 2, grid[0]), one_d(width // 2, grid[1])], axis=1)
    table = np.concatenate([np.zeros([1, width]), table], axis=0)
    np.testing.assert_allclose(sincos_2d_position_embedding(size, size, width, True)[0], table,
                               atol=1e-12)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_position_embedding(2, 2, 6)


def test_sincos_position_embedding_is_fixed():
    model = keras_vit.ViT(**SMALL, include_top=False, position_embedding="sincos_2d")
    pos = model.get_layer("embedding").pos_embedding
    assert not pos.trainable and all(w is not pos for w in model.trainable_weights)
    np.testing.assert_allclose(numpy(pos), sincos_2d_position_embedding(4, 4, 32, True),
                               atol=1e-7)


def test_pooling_leaves_out_registers_and_a_kept_class_token(rng):
    x = rng.standard_normal((2, 7, 4)).astype("float32")
    np.testing.assert_allclose(numpy(TokenPooling("avg", num_prefix_tokens=3)(x)),
                               x[:, 3:].mean(1), atol=1e-6)
    np.testing.assert_array_equal(numpy(TokenPooling("max", num_prefix_tokens=3)(x)),
                                  x[:, 3:].max(1))
    # MAE's fine-tuning: class token kept, GAP over the patches, then fc_norm (no final norm).
    model = keras_vit.ViT(**SMALL, classifier="gap", class_token=True, fc_norm=True,
                          num_register_tokens=2, classes=3)
    names = [layer.name for layer in model.layers]
    assert "encoder_norm" not in names and names.index("fc_norm") == names.index("pool") + 1
    assert model.get_layer("pool").num_prefix_tokens == 3
    assert model.get_layer("embedding").use_class_token
    # The paper's classifier='token' model pools its class token with the patches, as before.
    paper = keras_vit.ViT(**SMALL, include_top=False, pooling="avg", num_register_tokens=2)
    assert paper.get_layer("pool").num_prefix_tokens == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(classifier="token", class_token=False), "reads the class token"),
    (dict(include_top=False, pooling="map"), "pooling='map' reads"),
    (dict(include_top=False, classifier="gap", pooling="token"), "needs a class token"),
    (dict(num_register_tokens=-1), "num_register_tokens must be an int >= 0"),
    (dict(classifier="cls"), "expected one of token, gap, map"),
    (dict(position_embedding="sincos_2d", hidden_size=30, num_heads=3), "divisible by 4"),
])
def test_bad_options_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_vit.ViT(**{**SMALL, **kwargs})


# --------------------------------------------------------------------------- saving


LAYERS = {
    "LayerScale": (lambda: LayerScale(0.1), (2, 5, 8)),
    "RegisterTokens": (lambda: RegisterTokens(2, num_leading_tokens=1), (2, 5, 8)),
    "MultiheadAttentionPooling": (lambda: MultiheadAttentionPooling(2, 12, num_prefix_tokens=1),
                                  (2, 5, 8)),
    "PatchEncoder": (lambda: PatchEncoder(8, 2, grid_size=(2, 2), position_embedding="sincos_2d",
                                          no_embed_class=True), (2, 4, 12)),
    "TokenPooling": (lambda: TokenPooling("avg", num_prefix_tokens=2), (2, 5, 8)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_config_round_trip(name):
    """`get_config` equals `__init__`'s arguments (the `.keras` round trip of every one of
    these layers, inside a model, is the test below)."""
    make, _ = LAYERS[name]
    layer = make()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_model_with_every_option_saves_and_loads(tmp_path, rng):
    """Every new layer inside one model, saved as `.keras` and loaded with `import keras_vit`
    alone (safe mode: no Lambda layers), gives the same outputs."""
    inputs = keras.Input((32, 32, 3))
    model = keras_vit.ViT(
        **SMALL, include_top=False, pooling="map", classifier="map", class_token=True,
        num_register_tokens=2, layer_scale_init_value=1e-5, no_embed_class=True, fc_norm=True,
        position_embedding="sincos_2d", input_normalization="imagenet", input_tensor=inputs)
    tokens = model.get_layer("encoderblock_1").output
    average = TokenPooling("avg", num_prefix_tokens=3, name="avg")(tokens)
    both = _randomise(keras.Model(inputs, [model.output, average]), seed=4)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    both.save(tmp_path / "options.keras")
    loaded = keras.saving.load_model(tmp_path / "options.keras")
    names = {type(layer).__name__ for layer in loaded._flatten_layers()}
    assert {"LayerScale", "RegisterTokens", "MultiheadAttentionPooling", "TokenPooling",
            "PatchEncoder"} <= names
    for got, want in zip(loaded(x), both(x)):
        np.testing.assert_array_equal(numpy(got), numpy(want))
    pos = loaded.get_layer("embedding").pos_embedding
    assert not pos.trainable and pos.shape == (1, 16, 32)
