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

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

import keras_vit  # noqa: E402
from conftest import once  # noqa: E402
from keras_vit.formats import read_checkpoint  # noqa: E402

TOLERANCE = 1e-4
D, LAYERS, HEADS, MLP = 32, 2, 4, 64
ARCH = dict(hidden_size=D, num_layers=LAYERS, num_heads=HEADS, mlp_dim=MLP)


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _randomise(model, seed, keep=()):
    """Informative random values everywhere (HF zero-initialises biases, LayerScale is 1)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in keep):
                continue
            norm_weight = name.endswith("weight") and ("norm" in name or "layernorm" in name)
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.1) + float(norm_weight))
    return model.eval()


def _nchw(images):
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _qkv(s, prefix, names=("q_proj", "k_proj", "v_proj")):
    return (np.concatenate([s[f"{prefix}{n}.weight"] for n in names]),
            np.concatenate([s[f"{prefix}{n}.bias"] for n in names]))


def _save_torch(state, path, wrap=None):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    torch.save({wrap: tensors} if wrap else tensors, path)
    return str(path)


def _save_safetensors(state, path):
    safetensors_torch.save_file(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, str(path))
    return str(path)


# --------------------------------------------------------------------------- the sources


def _dinov2_original(s, registers):
    """facebookresearch/dinov2's state dict (`dinov2_vits14_pretrain.pth` names): fused
    `attn.qkv`, `ls1`/`ls2.gamma`, `pos_embed` with the class row, `mask_token` kept."""
    out = {"cls_token": s["embeddings.cls_token"], "pos_embed": s["embeddings.position_embeddings"],
           "mask_token": s["embeddings.mask_token"],
           "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": s["layernorm.weight"], "norm.bias": s["layernorm.bias"]}
    if registers:
        out["register_tokens"] = s["embeddings.register_tokens"]
    for i in range(LAYERS):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        out[q + "attn.qkv.weight"], out[q + "attn.qkv.bias"] = _qkv(s, p + "attention.")
        out[q + "attn.proj.weight"] = s[p + "attention.o_proj.weight"]
        out[q + "attn.proj.bias"] = s[p + "attention.o_proj.bias"]
        out[q + "ls1.gamma"] = s[p + "layer_scale1.lambda1"]
        out[q + "ls2.gamma"] = s[p + "layer_scale2.lambda1"]
        for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            out[f"{q}{name}.weight"], out[f"{q}{name}.bias"] = s[f"{p}{name}.weight"], s[f"{p}{name}.bias"]
    return out


def _dinov2_timm_registers(original):
    """timm's `vit_*_reg4_dinov2` safetensors (`_convert_dinov2`): `reg_token`, the class
    token's position row folded into it, `pos_embed` over the patches only, no mask token."""
    out = {k: v for k, v in original.items() if k not in ("mask_token", "register_tokens")}
    out["reg_token"] = original["register_tokens"]
    out["cls_token"] = original["cls_token"] + original["pos_embed"][:, :1]
    out["pos_embed"] = original["pos_embed"][:, 1:]
    return out


def _siglip_big_vision(s):
    """big_vision's two-tower `.npz` (`params/img/...`, Linen names, blocks scanned into one
    stacked `encoderblock`, `pos_embedding` (1, N, D), `MAPHead_0`), text tower alongside."""
    h, dh = HEADS, D // HEADS
    stack = lambda fn: np.stack([fn(i) for i in range(LAYERS)])  # noqa: E731
    img, blk = "params/img/", "params/img/Transformer/encoderblock/"
    mha = blk + "MultiHeadDotProductAttention_0/"
    layer = lambda i, name: s[f"encoder.layers.{i}.{name}"]  # noqa: E731
    out = {img + "embedding/kernel": s["embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0),
           img + "embedding/bias": s["embeddings.patch_embedding.bias"],
           img + "pos_embedding": s["embeddings.position_embedding.weight"][None],
           img + "Transformer/encoder_norm/scale": s["post_layernorm.weight"],
           img + "Transformer/encoder_norm/bias": s["post_layernorm.bias"],
           "params/txt/Encoder_0/encoder_norm/scale": np.ones(8, "float32"),
           "params/t": np.ones(1, "float32"), "params/b": np.zeros(1, "float32")}
    for ln, hf in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
        out[f"{blk}{ln}/scale"] = stack(lambda i: layer(i, hf + ".weight"))
        out[f"{blk}{ln}/bias"] = stack(lambda i: layer(i, hf + ".bias"))
    for name, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        out[f"{mha}{name}/kernel"] = stack(lambda i: layer(i, f"self_attn.{hf}.weight").T.reshape(D, h, dh))
        out[f"{mha}{name}/bias"] = stack(lambda i: layer(i, f"self_attn.{hf}.bias").reshape(h, dh))
    out[mha + "out/kernel"] = stack(lambda i: layer(i, "self_attn.out_proj.weight").T.reshape(h, dh, D))
    out[mha + "out/bias"] = stack(lambda i: layer(i, "self_attn.out_proj.bias"))
    for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        out[f"{blk}MlpBlock_0/{dense}/kernel"] = stack(lambda i: layer(i, f"mlp.{fc}.weight").T)
        out[f"{blk}MlpBlock_0/{dense}/bias"] = stack(lambda i: layer(i, f"mlp.{fc}.bias"))
    head, hmha = img + "MAPHead_0/", img + "MAPHead_0/MultiHeadDotProductAttention_0/"
    out[head + "probe"] = s["head.probe"]
    for name, w, b in zip(("query", "key", "value"), np.split(s["head.attention.in_proj_weight"], 3),
                          np.split(s["head.attention.in_proj_bias"], 3)):
        out[f"{hmha}{name}/kernel"] = w.T.reshape(D, h, dh)
        out[f"{hmha}{name}/bias"] = b.reshape(h, dh)
    out[hmha + "out/kernel"] = s["head.attention.out_proj.weight"].T.reshape(h, dh, D)
    out[hmha + "out/bias"] = s["head.attention.out_proj.bias"]
    out[head + "LayerNorm_0/scale"] = s["head.layernorm.weight"]
    out[head + "LayerNorm_0/bias"] = s["head.layernorm.bias"]
    for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        out[f"{head}MlpBlock_0/{dense}/kernel"] = s[f"head.mlp.{fc}.weight"].T
        out[f"{head}MlpBlock_0/{dense}/bias"] = s[f"head.mlp.{fc}.bias"]
    return out


def _siglip_timm(s):
    """timm's `vit_*_siglip_*` safetensors: fused `attn.qkv`, `attn_pool.latent`, `.q`, `.kv`."""
    out = {"patch_embed.proj.weight": s["embeddings.patch_embedding.weight"],
           "patch_embed.proj.bias": s["embeddings.patch_embedding.bias"],
           "pos_embed": s["embeddings.position_embedding.weight"][None],
           "norm.weight": s["post_layernorm.weight"], "norm.bias": s["post_layernorm.bias"],
           "attn_pool.latent": s["head.probe"],
           "attn_pool.q.weight": s["head.attention.in_proj_weight"][:D],
           "attn_pool.q.bias": s["head.attention.in_proj_bias"][:D],
           "attn_pool.kv.weight": s["head.attention.in_proj_weight"][D:],
           "attn_pool.kv.bias": s["head.attention.in_proj_bias"][D:],
           "attn_pool.proj.weight": s["head.attention.out_proj.weight"],
           "attn_pool.proj.bias": s["head.attention.out_proj.bias"],
           "attn_pool.norm.weight": s["head.layernorm.weight"],
           "attn_pool.norm.bias": s["head.layernorm.bias"]}
    for fc in ("fc1", "fc2"):
        out[f"attn_pool.mlp.{fc}.weight"] = s[f"head.mlp.{fc}.weight"]
        out[f"attn_pool.mlp.{fc}.bias"] = s[f"head.mlp.{fc}.bias"]
    for i in range(LAYERS):
        p, q = f"encoder.layers.{i}.", f"blocks.{i}."
        out[q + "attn.qkv.weight"], out[q + "attn.qkv.bias"] = _qkv(s, p + "self_attn.")
        out[q + "attn.proj.weight"] = s[p + "self_attn.out_proj.weight"]
        out[q + "attn.proj.bias"] = s[p + "self_attn.out_proj.bias"]
        for timm, hf in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"),
                         ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[f"{q}{timm}.weight"], out[f"{q}{timm}.bias"] = s[f"{p}{hf}.weight"], s[f"{p}{hf}.bias"]
    return out


def _mae_original(s):
    """facebookresearch/mae's pre-training checkpoint ({"model": ...}, timm names; the fixed
    sin-cos `pos_embed` stored), with its decoder, which keras_vit does not read."""
    out = {"cls_token": s["embeddings.cls_token"], "pos_embed": s["embeddings.position_embeddings"],
           "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": s["layernorm.weight"], "norm.bias": s["layernorm.bias"],
           "mask_token": np.zeros((1, 1, 16), "float32"),
           "decoder_embed.weight": np.zeros((16, D), "float32"),
           "decoder_pos_embed": np.zeros((1, 17, 16), "float32")}
    for i in range(LAYERS):
        p, q = f"layers.{i}.", f"blocks.{i}."
        out[q + "attn.qkv.weight"], out[q + "attn.qkv.bias"] = _qkv(s, p + "attention.")
        out[q + "attn.proj.weight"] = s[p + "attention.o_proj.weight"]
        out[q + "attn.proj.bias"] = s[p + "attention.o_proj.bias"]
        for timm, hf in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                         ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[f"{q}{timm}.weight"], out[f"{q}{timm}.bias"] = s[f"{p}{hf}.weight"], s[f"{p}{hf}.bias"]
    return out


FAMILIES = {
    # name: (native size, other size, patch, keras_vit options)
    "dinov2": (28, 42, 7, dict(layer_scale_init_value=1.0)),
    "dinov2_registers": (28, 42, 7, dict(layer_scale_init_value=1.0, num_register_tokens=2)),
    "siglip": (32, 48, 8, dict(classifier="map")),
    "mae": (32, 48, 8, dict(position_embedding="sincos_2d")),
}


def _hf_model(family):
    native, _, patch, _ = FAMILIES[family]
    common = dict(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  image_size=native, patch_size=patch)
    if family == "dinov2":
        return transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=MLP // D, **common))
    if family == "dinov2_registers":
        return transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            mlp_ratio=MLP // D, num_register_tokens=2, **common))
    if family == "siglip":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
            intermediate_size=MLP, **common))
    model = transformers.ViTMAEModel(transformers.ViTMAEConfig(  # HF's default eps 1e-12 kept
        intermediate_size=MLP, mask_ratio=0.0, **common))
    # HF's own sin-cos initialisation (which its post_init skips once the patch projection is
    # initialised, leaving zeros): the table MAE checkpoints hold.
    model.embeddings.patch_embeddings.projection._is_hf_initialized = False
    model.embeddings.initialize_weights()
    assert model.embeddings.position_embeddings.abs().sum() > 1
    return model


def _hf_outputs(family, model, images):
    native = FAMILIES[family][0]
    with torch.no_grad():
        pixels = _nchw(images)
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
        model = _randomise(_hf_model(family), seed, keep=("position_embeddings",) if family == "mae" else ())
        files = {"hf": str(root / family)}
        model.save_pretrained(files["hf"])
        s = _state(model)
        if family.startswith("dinov2"):
            original = _dinov2_original(s, registers=family == "dinov2_registers")
            files["original"] = _save_torch(original, root / f"{family}_pretrain.pth")
            if family == "dinov2_registers":
                files["timm"] = _save_safetensors(_dinov2_timm_registers(original),
                                                  root / f"{family}_timm.safetensors")
        elif family == "siglip":
            big_vision = _siglip_big_vision(s)
            np.savez(root / "siglip_big_vision.npz", **big_vision)
            files["big_vision"] = str(root / "siglip_big_vision.npz")
            files["timm"] = _save_safetensors(_siglip_timm(s), root / "siglip_timm.safetensors")
        else:
            files["original"] = _save_torch(_mae_original(s), root / "mae_pretrain.pth", wrap="model")
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
