"""Other checkpoint formats give the same function as their source: HF transformers, timm, big_vision.

The reference is HF `ViTForImageClassification` (PyTorch, eval mode) with random weights; the
timm and big_vision files are made here from the same weights, following each project's own
layout, and must reproduce the same logits.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

import keras_vit  # noqa: E402
from keras_vit.formats import detect_format, read_checkpoint  # noqa: E402
from keras_vit.formats.safetensors_io import read_safetensors  # noqa: E402

TOLERANCE = 1e-4
ARCH = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)
CLASSES = 10


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def make_hf_model(image_size=32, layer_norm_eps=1e-6, seed=0):
    config = transformers.ViTConfig(
        hidden_size=ARCH["hidden_size"], num_hidden_layers=ARCH["num_layers"],
        num_attention_heads=ARCH["num_heads"], intermediate_size=ARCH["mlp_dim"],
        image_size=image_size, patch_size=ARCH["patch_size"], num_labels=CLASSES,
        hidden_act="gelu", layer_norm_eps=layer_norm_eps,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # informative random values everywhere (HF zero-inits biases)
        for name, p in model.named_parameters():
            noise = torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.1)
            p.copy_(noise + (1.0 if "layernorm" in name and name.endswith("weight") else 0.0))
    return model


def hf_logits(model, images):
    with torch.no_grad():
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        return model(pixel_values=pixels).logits.numpy()


def keras_logits(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def build(weights, **kwargs):
    kwargs.setdefault("image_size", 32)
    return keras_vit.ViT(**ARCH, classes=CLASSES, classifier_activation=None,
                         include_preprocessing=False, weights=weights, **kwargs)


def to_timm(state):
    """HF ViT names -> timm VisionTransformer names, q/k/v fused into qkv (timm's layout)."""
    s = {k.removeprefix("vit."): v.detach().clone() for k, v in state.items()}
    out = {
        "cls_token": s["embeddings.cls_token"],
        "pos_embed": s["embeddings.position_embeddings"],
        "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": s["layernorm.weight"], "norm.bias": s["layernorm.bias"],
        "head.weight": s["classifier.weight"], "head.bias": s["classifier.bias"],
    }
    for i in range(ARCH["num_layers"]):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        att = p + "attention.attention."
        for part in ("weight", "bias"):
            out[q + f"attn.qkv.{part}"] = torch.cat(
                [s[att + f"{n}.{part}"] for n in ("query", "key", "value")], dim=0)
            out[q + f"attn.proj.{part}"] = s[p + f"attention.output.dense.{part}"]
            out[q + f"norm1.{part}"] = s[p + f"layernorm_before.{part}"]
            out[q + f"norm2.{part}"] = s[p + f"layernorm_after.{part}"]
            out[q + f"mlp.fc1.{part}"] = s[p + f"intermediate.dense.{part}"]
            out[q + f"mlp.fc2.{part}"] = s[p + f"output.dense.{part}"]
    return {k: v.contiguous() for k, v in out.items()}


def to_big_vision(state):
    """HF ViT -> a big_vision `.npz` dict: `params/` prefix, Linen names, scanned blocks, and
    big_vision's position embedding (patch rows only; the class token carries its own)."""
    s = {k.removeprefix("vit."): v.detach().numpy().astype(np.float32) for k, v in state.items()}
    d, h = ARCH["hidden_size"], ARCH["num_heads"]
    pos = s["embeddings.position_embeddings"]
    out = {
        "params/cls": s["embeddings.cls_token"] + pos[:, :1],
        "params/pos_embedding": pos[:, 1:],
        "params/embedding/kernel": s["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
        "params/embedding/bias": s["embeddings.patch_embeddings.projection.bias"],
        "params/Transformer/encoder_norm/scale": s["layernorm.weight"],
        "params/Transformer/encoder_norm/bias": s["layernorm.bias"],
        "params/head/kernel": s["classifier.weight"].T,
        "params/head/bias": s["classifier.bias"],
    }
    blocks = {}

    def put(key, value):
        blocks.setdefault(key, []).append(value)

    for i in range(ARCH["num_layers"]):
        p = f"encoder.layer.{i}."
        att = p + "attention.attention."
        put("LayerNorm_0/scale", s[p + "layernorm_before.weight"])
        put("LayerNorm_0/bias", s[p + "layernorm_before.bias"])
        put("LayerNorm_1/scale", s[p + "layernorm_after.weight"])
        put("LayerNorm_1/bias", s[p + "layernorm_after.bias"])
        for n in ("query", "key", "value"):
            put(f"MultiHeadDotProductAttention_0/{n}/kernel", s[att + f"{n}.weight"].T.reshape(d, h, d // h))
            put(f"MultiHeadDotProductAttention_0/{n}/bias", s[att + f"{n}.bias"].reshape(h, d // h))
        put("MultiHeadDotProductAttention_0/out/kernel",
            s[p + "attention.output.dense.weight"].T.reshape(h, d // h, d))
        put("MultiHeadDotProductAttention_0/out/bias", s[p + "attention.output.dense.bias"])
        put("MlpBlock_0/Dense_0/kernel", s[p + "intermediate.dense.weight"].T)
        put("MlpBlock_0/Dense_0/bias", s[p + "intermediate.dense.bias"])
        put("MlpBlock_0/Dense_1/kernel", s[p + "output.dense.weight"].T)
        put("MlpBlock_0/Dense_1/bias", s[p + "output.dense.bias"])
    for key, values in blocks.items():
        out["params/Transformer/encoderblock/" + key] = np.stack(values)
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The HF model, its save_pretrained directory, derived timm / big_vision files, inputs."""
    root = tmp_path_factory.mktemp("formats")
    model = make_hf_model()
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir)
    state = model.state_dict()
    legacy = {k: v for k, v in read_safetensors(hf_dir / "model.safetensors")[0].items()}
    timm_path = root / "vit_tiny_test.safetensors"
    safetensors_torch.save_file(to_timm({k: torch.from_numpy(v) for k, v in legacy.items()}),
                                str(timm_path))
    bv_path = root / "big_vision.npz"
    np.savez(bv_path, **to_big_vision({k: torch.from_numpy(v) for k, v in legacy.items()}))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    return dict(model=model, hf_dir=hf_dir, state=state, legacy=legacy, timm=timm_path,
                big_vision=bv_path, images=images, expected=hf_logits(model, images), root=root)


# --------------------------------------------------------------------------- HF transformers


def test_hf_directory_matches_transformers(source):
    model = build(str(source["hf_dir"]))
    blocks = [l for l in model.layers if isinstance(l, keras_vit.TransformerBlock)]
    assert blocks and all(b.gelu_approximate is False for b in blocks)  # picked from config
    assert relative_error(keras_logits(model, source["images"]), source["expected"]) < TOLERANCE


def test_hf_safetensors_file_without_config(source):
    model = build(str(source["hf_dir"] / "model.safetensors"))
    assert relative_error(keras_logits(model, source["images"]), source["expected"]) < TOLERANCE


def test_hf_pytorch_bin_directory(source, tmp_path):
    shutil.copy(source["hf_dir"] / "config.json", tmp_path / "config.json")
    torch.save({k: torch.from_numpy(v) for k, v in source["legacy"].items()},
               tmp_path / "pytorch_model.bin")
    assert detect_format(tmp_path) == "hf"
    model = build(str(tmp_path))
    assert relative_error(keras_logits(model, source["images"]), source["expected"]) < TOLERANCE


def test_hf_transformers5_module_names(source, tmp_path):
    """The in-memory names of transformers 5 (`vit.layers.{i}.attention.q_proj`, ...)."""
    state = {k: v.detach().contiguous() for k, v in source["state"].items()}
    assert any(".q_proj." in k for k in state)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, str(path))
    model = build(str(path))
    assert relative_error(keras_logits(model, source["images"]), source["expected"]) < TOLERANCE


def test_hf_default_layer_norm_eps_1e12_within_tolerance(tmp_path):
    """HF's default LayerNorm epsilon (1e-12) against keras_vit's official 1e-6."""
    hf = make_hf_model(layer_norm_eps=1e-12, seed=1)
    hf.save_pretrained(tmp_path)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    model = build(str(tmp_path))
    assert relative_error(keras_logits(model, images), hf_logits(hf, images)) < TOLERANCE


def test_load_weights_into_existing_model_warns_on_tanh_gelu(source):
    model = keras_vit.ViT(**ARCH, image_size=32, classes=CLASSES, classifier_activation=None,
                          include_preprocessing=False, gelu_approximate=True)
    with pytest.warns(UserWarning, match="exact"):
        keras_vit.load_weights(model, str(source["hf_dir"]))
    error = relative_error(keras_logits(model, source["images"]), source["expected"])
    assert 1e-6 < error < 1e-2  # loaded (close) but not exact: the GELU differs


def test_hf_config_heads_must_match_model(source):
    arch = dict(ARCH, num_heads=2)
    with pytest.raises(ValueError, match="num_attention_heads=4"):
        keras_vit.ViT(**arch, image_size=32, classes=CLASSES, weights=str(source["hf_dir"]))


def test_hf_unsupported_activation_is_refused(source, tmp_path):
    shutil.copy(source["hf_dir"] / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((source["hf_dir"] / "config.json").read_text())
    config["hidden_act"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        build(str(tmp_path))


# --------------------------------------------------------------------------- timm


def test_timm_safetensors_matches_transformers(source):
    assert detect_format(source["timm"]) == "timm"
    ckpt = read_checkpoint(source["timm"], num_heads=ARCH["num_heads"])
    assert ckpt.gelu_approximate is False and ckpt.pos_embed_resample == "bicubic"
    model = build(str(source["timm"]))
    assert relative_error(keras_logits(model, source["images"]), source["expected"]) < TOLERANCE


def test_timm_resampled_like_timm(source):
    """At 48 px a timm file's position embedding is resampled as timm does (bicubic,
    antialias): compare with HF at 48 px holding torch's own resampled table."""
    posemb = source["state"]["vit.embeddings.position_embeddings"].detach()
    grid = posemb[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", antialias=True,
                                           align_corners=False)
    resampled = torch.cat([posemb[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 36, -1)], dim=1)
    hf48 = make_hf_model(image_size=48)
    state = {k: v for k, v in source["state"].items() if "position_embeddings" not in k}
    hf48.load_state_dict({**state, "vit.embeddings.position_embeddings": resampled})
    images = np.random.default_rng(2).uniform(-1, 1, (2, 48, 48, 3)).astype("float32")
    model = build(str(source["timm"]), image_size=48)
    assert relative_error(keras_logits(model, images), hf_logits(hf48, images)) < TOLERANCE
    # The official (bilinear, aligned corners) resampling gives a measurably different model.
    official = build(str(source["timm"]), image_size=48, pos_embed_resample="official")
    assert relative_error(keras_logits(official, images), hf_logits(hf48, images)) > 1e-3


def test_timm_unknown_parts_are_named(source, tmp_path):
    state = {k: torch.from_numpy(v) for k, v in read_safetensors(source["timm"])[0].items()}
    state["blocks.0.ls1.gamma"] = torch.ones(ARCH["hidden_size"])
    path = tmp_path / "layer_scale.safetensors"
    safetensors_torch.save_file(state, str(path))
    with pytest.raises(ValueError, match=r"blocks\.0\.ls1\.gamma"):
        build(str(path))


# --------------------------------------------------------------------------- big_vision


def test_big_vision_npz_matches_transformers(source):
    assert read_checkpoint(source["big_vision"]).format == "big_vision"
    with pytest.warns(UserWarning, match="tanh-approximate"):  # big_vision trains with tanh
        model = build(str(source["big_vision"]), gelu_approximate=False)
    assert relative_error(keras_logits(model, source["images"]), source["expected"]) < TOLERANCE


# --------------------------------------------------------------------------- file handling


def test_safetensors_reader_widens_bfloat16(tmp_path):
    values = torch.randn(3, 5).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    safetensors_torch.save_file({"w": values, "i": torch.arange(4)}, str(path))
    tensors, _ = read_safetensors(path)
    np.testing.assert_array_equal(tensors["w"], values.float().numpy())
    np.testing.assert_array_equal(tensors["i"], np.arange(4))


def test_truncated_safetensors_is_refused(source, tmp_path):
    data = (source["hf_dir"] / "model.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        build(str(path))


def test_unrecognised_files_and_missing_paths(tmp_path):
    odd = tmp_path / "weights.onnx"
    odd.write_bytes(b"0")
    with pytest.raises(ValueError, match="Cannot tell the format"):
        build(str(odd))
    with pytest.raises(ValueError, match="does not exist"):
        build(str(tmp_path / "missing.npz"))
    not_vit = tmp_path / "other.safetensors"
    safetensors_torch.save_file({"conv.weight": torch.zeros(2, 2)}, str(not_vit))
    with pytest.raises(ValueError, match="neither a HF"):
        build(str(not_vit))
    assert not os.path.exists(tmp_path / "missing.npz")


def test_timm_hybrid_keys_round_trip():
    """timm's R50-hybrid names (`patch_embed.backbone.stem/stages...`, as timm's own .npz
    loader fills them) map back onto the official arrays exactly."""
    from keras_vit.formats import timm as timm_format
    from keras_vit.weights.shapes import official_shapes

    rng = np.random.default_rng(3)
    official = {k: rng.standard_normal(s).astype("float32") for k, s in official_shapes(
        **ARCH, image_size=64, classes=CLASSES, resnet_num_layers=(1, 2),
        resnet_width_factor=0.5).items()}
    d, h = ARCH["hidden_size"], ARCH["num_heads"]
    conv = lambda k: k.transpose(3, 2, 0, 1)  # noqa: E731  HWIO -> OIHW
    state = {"cls_token": official["cls"],
             "pos_embed": official["Transformer/posembed_input/pos_embedding"],
             "patch_embed.proj.weight": conv(official["embedding/kernel"]),
             "patch_embed.proj.bias": official["embedding/bias"],
             "patch_embed.backbone.stem.conv.weight": conv(official["conv_root/kernel"]),
             "patch_embed.backbone.stem.norm.weight": official["gn_root/scale"].ravel(),
             "patch_embed.backbone.stem.norm.bias": official["gn_root/bias"].ravel(),
             "norm.weight": official["Transformer/encoder_norm/scale"],
             "norm.bias": official["Transformer/encoder_norm/bias"],
             "head.weight": official["head/kernel"].T, "head.bias": official["head/bias"]}
    for key, array in official.items():
        if key.startswith("block"):
            block, unit, layer, part = key.split("/")
            prefix = f"patch_embed.backbone.stages.{int(block[5:]) - 1}.blocks.{int(unit[4:]) - 1}."
            name = {"conv_proj": "downsample.conv", "gn_proj": "downsample.norm"}.get(
                layer, layer.replace("gn", "norm"))
            tensor = conv(array) if part == "kernel" else array.ravel()
            state[prefix + name + {"kernel": ".weight", "scale": ".weight", "bias": ".bias"}[part]] = tensor
    for i in range(ARCH["num_layers"]):
        p, q = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = p + "MultiHeadDotProductAttention_1/"
        state[q + "attn.qkv.weight"] = np.concatenate(
            [official[f"{mha}{n}/kernel"].reshape(d, d).T for n in ("query", "key", "value")])
        state[q + "attn.qkv.bias"] = np.concatenate(
            [official[f"{mha}{n}/bias"].ravel() for n in ("query", "key", "value")])
        state[q + "attn.proj.weight"] = official[mha + "out/kernel"].reshape(d, d).T
        state[q + "attn.proj.bias"] = official[mha + "out/bias"]
        for ln, t in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            state[q + t + ".weight"] = official[f"{p}{ln}/scale"]
            state[q + t + ".bias"] = official[f"{p}{ln}/bias"]
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            state[q + f"mlp.{fc}.weight"] = official[f"{p}MlpBlock_3/{dense}/kernel"].T
            state[q + f"mlp.{fc}.bias"] = official[f"{p}MlpBlock_3/{dense}/bias"]
    converted = timm_format.convert(state, num_heads=h)
    assert set(converted) == set(official)
    for key, array in official.items():
        np.testing.assert_array_equal(converted[key].ravel(), array.ravel(), err_msg=key)
        assert tuple(s for s in converted[key].shape if s != 1) == tuple(s for s in array.shape if s != 1)


def test_file_weights_default_to_their_native_resolution(source):
    model = keras_vit.ViT(**ARCH, classes=CLASSES, weights=str(source["hf_dir"]))
    assert model.input_shape == (None, 32, 32, 3)  # not the 224 default
