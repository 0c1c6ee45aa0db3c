"""DINOv2 (with and without registers), SigLIP and MAE load with HF-transformers parity.

Each family's HF model (`Dinov2Model`, `Dinov2WithRegistersModel`, `SiglipVisionModel`,
`ViTMAEModel` with mask ratio 0) gets random weights of a small config and is written the
ways its weights are published: `save_pretrained` (the hub's HF layout) and the original
layout, whose names and array layouts are spelled out here from each project's code (the
DINOv2 `.pth` of facebookresearch/dinov2, timm's DINOv2-with-registers safetensors, SigLIP's
big_vision `.npz` and timm's SigLIP safetensors, the MAE `.pth` of facebookresearch/mae).
Every file must give HF's `last_hidden_state` and pooled output within 1e-4 (relative to the
largest value) on this backend, at the config's resolution and at another one, where each
family's code resamples its position embedding its own way. The HF models run once per
module (PyTorch, float32, eval mode).
"""

import keras
import numpy as np
import pytest
from conftest import once, require

torch = require("torch")
transformers = require("transformers")
require("safetensors.torch")

import keras_vit  # noqa: E402
from family_files import (  # noqa: E402
    D, FAMILIES, HEADS, dinov2_original, dinov2_timm_registers, hf_model, mae_original, nchw,
    randomise, relative_error, save_safetensors, save_torch, siglip_big_vision, siglip_timm,
    state_of)
from keras_vit.formats import read_checkpoint  # noqa: E402

TOLERANCE = 1e-4
ARCH = dict(hidden_size=D, num_layers=2, num_heads=HEADS, mlp_dim=64)


def _hf_outputs(family, model, images):
    native = FAMILIES[family][0]
    with torch.no_grad():
        pixels = nchw(images)
        if family in ("dinov2", "dinov2_registers"):
            out = model(pixel_values=pixels)
            return out.last_hidden_state.numpy(), out.pooler_output.numpy()
        interpolate = images.shape[1] != native
        if family == "siglip":
            out = model(pixel_values=pixels, interpolate_pos_encoding=interpolate)
            return out.last_hidden_state.numpy(), out.pooler_output.numpy()
        # MAE shuffles the patches by argsort(noise) even at mask ratio 0: increasing noise
        # keeps them in order. ViTMAEModel has no pooled output: the class token's row.
        patches = (images.shape[1] // FAMILIES[family][2]) ** 2
        noise = torch.arange(patches, dtype=torch.float32).expand(len(images), patches)
        out = model(pixel_values=pixels, noise=noise, interpolate_pos_encoding=interpolate)
        assert not out.mask.any()
        return out.last_hidden_state.numpy(), out.last_hidden_state[:, 0].numpy()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    rng = np.random.default_rng(0)
    out = {}
    for seed, family in enumerate(FAMILIES):
        native, other, _, _ = FAMILIES[family]
        # MAE's position embedding is its fixed sin-cos table (a frozen parameter).
        model = randomise(hf_model(family), seed, keep=("position_embeddings",) if family == "mae" else ())
        files = {"hf": str(root / family)}
        model.save_pretrained(files["hf"])
        s = state_of(model)
        if family.startswith("dinov2"):
            original = dinov2_original(s, registers=family == "dinov2_registers")
            files["original"] = save_torch(original, root / f"{family}_pretrain.pth")
            if family == "dinov2_registers":
                files["timm"] = save_safetensors(dinov2_timm_registers(original),
                                                  root / f"{family}_timm.safetensors")
        elif family == "siglip":
            big_vision = siglip_big_vision(s)
            np.savez(root / "siglip_big_vision.npz", **big_vision)
            files["big_vision"] = str(root / "siglip_big_vision.npz")
            files["timm"] = save_safetensors(siglip_timm(s), root / "siglip_timm.safetensors")
        else:
            files["original"] = save_torch(mae_original(s), root / "mae_pretrain.pth", wrap="model")
        images = {size: rng.uniform(-1, 1, (2, size, size, 3)).astype("float32")
                  for size in (native, other)}
        expected = {size: _hf_outputs(family, model, x) for size, x in images.items()}
        out[family] = dict(files=files, images=images, expected=expected, state=s,
                           config=model.config)
    return out


def _keras_outputs(family, weights, size, **overrides):
    native, _, patch, options = FAMILIES[family]
    pooling = "map" if family == "siglip" else "token"
    model = keras_vit.ViT(image_size=size, patch_size=patch, **ARCH, **options, include_top=False,
                          pooling=pooling, last_block_class_token_only=False,
                          include_preprocessing=False, weights=weights, **overrides)
    both = keras.Model(model.inputs, [model.get_layer("encoder_norm").output, model.output])
    return model, both


CASES = [(f, layout, size) for f in FAMILIES for layout, size in
         [("hf", "native"), ("hf", "other")] + [(lay, "native") for lay in
                                                 {"dinov2": ["original"],
                                                  "dinov2_registers": ["original", "timm"],
                                                  "siglip": ["big_vision", "timm"],
                                                  "mae": ["original"]}[f]]]


@pytest.mark.parametrize("family, layout, size", CASES, ids=lambda v: str(v))
def test_matches_hf(sources, family, layout, size):
    source = sources[family]
    native, other = FAMILIES[family][:2]
    px = native if size == "native" else other
    model, both = _keras_outputs(family, source["files"][layout], px)
    tokens, pooled = [keras.ops.convert_to_numpy(y) for y in both(source["images"][px])]
    want_tokens, want_pooled = source["expected"][px]
    assert tokens.shape == want_tokens.shape and pooled.shape == want_pooled.shape
    errors = relative_error(tokens, want_tokens), relative_error(pooled, want_pooled)
    print(f"\n[parity] {keras.backend.backend()} {family} {layout} {px}px: last_hidden_state "
          f"{errors[0]:.1e}, pooled {errors[1]:.1e}")
    assert max(errors) < TOLERANCE
    blocks = [l for l in model.layers if isinstance(l, keras_vit.TransformerBlock)]
    assert all(b.gelu_approximate == (family == "siglip") for b in blocks)  # from the weights


@once
def test_each_layout_converts_to_the_same_arrays(sources):
    """Backend-independent: every published layout of a family is the same checkpoint."""
    for family, source in sources.items():
        reference = read_checkpoint(source["files"]["hf"]).params
        for layout, path in source["files"].items():
            ckpt = read_checkpoint(path, num_heads=HEADS)
            params = ckpt.params
            if family == "dinov2_registers" and layout == "timm":
                # timm folded the class row into the class token: unfold to compare.
                params = dict(params)
                pos = reference["Transformer/posembed_input/pos_embedding"]
                params["cls"] = params["cls"] - pos[:, :1]
                params["Transformer/posembed_input/pos_embedding"] = np.concatenate(
                    [pos[:, :1], params["Transformer/posembed_input/pos_embedding"]], axis=1)
            assert sorted(params) == sorted(reference), (family, layout)
            for key, value in reference.items():
                np.testing.assert_allclose(np.asarray(params[key]).ravel(), value.ravel(),
                                           rtol=0, atol=1e-6, err_msg=f"{family} {layout} {key}")


@once
def test_each_family_records_its_own_resampling_and_gelu(sources):
    expected = {("dinov2", "hf"): ("bicubic_no_antialias", False),
                ("dinov2", "original"): ("dinov2", False),
                ("dinov2_registers", "hf"): ("bicubic", False),
                ("dinov2_registers", "original"): ("dinov2", False),
                ("dinov2_registers", "timm"): ("bicubic", False),
                ("siglip", "hf"): ("bicubic_no_antialias", True),
                ("siglip", "big_vision"): ("official", True),
                ("siglip", "timm"): ("bicubic", True),
                ("mae", "hf"): ("bicubic_no_antialias", False),
                ("mae", "original"): ("bicubic", False)}
    for family, source in sources.items():
        for layout, path in source["files"].items():
            ckpt = read_checkpoint(path, num_heads=HEADS)
            assert (ckpt.pos_embed_resample, ckpt.gelu_approximate) == expected[family, layout], \
                (family, layout)


@once
def test_mae_table_is_the_sincos_option(sources):
    """HF's ViTMAE position table (its own sin-cos init, kept frozen) is what
    `position_embedding="sincos_2d"` computes: a MAE file's table could be left out."""
    table = sources["mae"]["state"]["embeddings.position_embeddings"]
    model = keras_vit.ViT(image_size=32, patch_size=8, **ARCH, include_top=False,
                          position_embedding="sincos_2d")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        model.get_layer("embedding").pos_embedding), table, atol=1e-6)


def test_original_dinov2_resamples_as_dinov2_does(sources):
    """The original DINOv2 file at another size: DINOv2's own interpolation (scale factor
    (g + 0.1) / G, no antialias), here recomputed with torch from the file's table."""
    source = sources["dinov2"]
    pos = torch.from_numpy(source["state"]["embeddings.position_embeddings"])
    grid = pos[:, 1:].reshape(1, 4, 4, D).permute(0, 3, 1, 2)
    resampled = torch.nn.functional.interpolate(grid, scale_factor=(6.1 / 4, 6.1 / 4),
                                                mode="bicubic", antialias=False)
    expected = torch.cat([pos[:, :1], resampled.permute(0, 2, 3, 1).reshape(1, 36, D)], dim=1)
    model, _ = _keras_outputs("dinov2", source["files"]["original"], 42)
    actual = keras.ops.convert_to_numpy(model.get_layer("embedding").pos_embedding)
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-6, rtol=0)
    hf_size = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic",
                                              align_corners=False)
    assert np.abs(actual[0, 1:] - hf_size.permute(0, 2, 3, 1).reshape(36, D).numpy()).max() > 1e-3


def test_missing_options_are_named(sources):
    with pytest.raises(ValueError, match=r"LayerScale_1/scale.*layer_scale_init_value"):
        keras_vit.ViT(image_size=28, patch_size=7, **ARCH, include_top=False,
                      weights=sources["dinov2"]["files"]["hf"])
    with pytest.raises(ValueError, match=r"'registers'.*num_register_tokens"):
        keras_vit.ViT(image_size=28, patch_size=7, **ARCH, include_top=False,
                      layer_scale_init_value=1.0,
                      weights=sources["dinov2_registers"]["files"]["hf"])
    with pytest.raises(ValueError, match=r"MAPHead_0/.*classifier='map'"):
        keras_vit.ViT(image_size=32, patch_size=8, **ARCH, classifier="gap", classes=3,
                      head="new", weights=sources["siglip"]["files"]["hf"])
