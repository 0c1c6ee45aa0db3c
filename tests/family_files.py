"""Random small HF models of the later ViT families and their weights written in each family's
published layouts (names and array layouts spelled out from each project's code), shared by
test_families_parity.py and test_families_weights.py. Nothing here imports keras_vit."""

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

D, LAYERS, HEADS, MLP = 32, 2, 4, 64


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def randomise(model, seed, keep=()):
    """Informative random values everywhere (HF zero-initialises biases, LayerScale is 1)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in keep):
                continue
            norm_weight = name.endswith("weight") and ("norm" in name or "layernorm" in name)
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.1) + float(norm_weight))
    return model.eval()


def nchw(images):
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def state_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def qkv(s, prefix, names=("q_proj", "k_proj", "v_proj")):
    return (np.concatenate([s[f"{prefix}{n}.weight"] for n in names]),
            np.concatenate([s[f"{prefix}{n}.bias"] for n in names]))


def save_torch(state, path, wrap=None):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    torch.save({wrap: tensors} if wrap else tensors, path)
    return str(path)


def save_safetensors(state, path):
    save_file(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, str(path))
    return str(path)


# --------------------------------------------------------------------------- the sources


def dinov2_original(s, registers):
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
        out[q + "attn.qkv.weight"], out[q + "attn.qkv.bias"] = qkv(s, p + "attention.")
        out[q + "attn.proj.weight"] = s[p + "attention.o_proj.weight"]
        out[q + "attn.proj.bias"] = s[p + "attention.o_proj.bias"]
        out[q + "ls1.gamma"] = s[p + "layer_scale1.lambda1"]
        out[q + "ls2.gamma"] = s[p + "layer_scale2.lambda1"]
        for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            out[f"{q}{name}.weight"], out[f"{q}{name}.bias"] = s[f"{p}{name}.weight"], s[f"{p}{name}.bias"]
    return out


def dinov2_timm_registers(original):
    """timm's `vit_*_reg4_dinov2` safetensors (`_convert_dinov2`): `reg_token`, the class
    token's position row folded into it, `pos_embed` over the patches only, no mask token."""
    out = {k: v for k, v in original.items() if k not in ("mask_token", "register_tokens")}
    out["reg_token"] = original["register_tokens"]
    out["cls_token"] = original["cls_token"] + original["pos_embed"][:, :1]
    out["pos_embed"] = original["pos_embed"][:, 1:]
    return out


def siglip_big_vision(s):
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


def siglip_timm(s):
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
        out[q + "attn.qkv.weight"], out[q + "attn.qkv.bias"] = qkv(s, p + "self_attn.")
        out[q + "attn.proj.weight"] = s[p + "self_attn.out_proj.weight"]
        out[q + "attn.proj.bias"] = s[p + "self_attn.out_proj.bias"]
        for timm, hf in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"),
                         ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[f"{q}{timm}.weight"], out[f"{q}{timm}.bias"] = s[f"{p}{hf}.weight"], s[f"{p}{hf}.bias"]
    return out


def mae_original(s):
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
        out[q + "attn.qkv.weight"], out[q + "attn.qkv.bias"] = qkv(s, p + "attention.")
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


def hf_model(family, native=None, patch=None):
    """HF's model of `family` at the small size (HF's own initialisation, to be randomised)."""
    native = native or FAMILIES[family][0]
    patch = patch or FAMILIES[family][2]
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
