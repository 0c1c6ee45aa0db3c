"""timm `VisionTransformer` checkpoints (`timm/vit_*` safetensors) -> the official key layout.

    cls_token, pos_embed                -> cls, Transformer/posembed_input/pos_embedding
    patch_embed.proj                    -> embedding (OIHW -> HWIO)
    blocks.{i}.norm1 / norm2            -> encoderblock_{i}/LayerNorm_0 / LayerNorm_2
    blocks.{i}.attn.qkv  (3D, D) fused  -> .../MultiHeadDotProductAttention_1/{query,key,value}
                                           (split in q, k, v order; (D, D) -> (D, H, D/H))
    blocks.{i}.attn.proj                -> .../MultiHeadDotProductAttention_1/out
    blocks.{i}.mlp.fc1 / fc2            -> .../MlpBlock_3/Dense_0 / Dense_1
    norm                                -> Transformer/encoder_norm
    pre_logits.fc (old timm)            -> pre_logits
    head                                -> head
    patch_embed.backbone.* (R50 hybrid) -> conv_root, gn_root, block{s}/unit{u}/...

The later ViTs' parts (timm's `vision_transformer.py` and `deit.py`), which the original
DINOv2, MAE and DeiT-III `.pth` files share (with the names in brackets):

    reg_token (register_tokens)         -> registers
    blocks.{i}.ls1.gamma (gamma_1)      -> encoderblock_{i}/LayerScale_1/scale
    blocks.{i}.ls2.gamma (gamma_2)      -> encoderblock_{i}/LayerScale_3/scale
    fc_norm                             -> fc_norm
    attn_pool.latent, q, kv (k; v), proj, norm, mlp.fc1 / fc2
                                        -> MAPHead_0/probe, .../query, key, value, out,
                                           LayerNorm_0, MlpBlock_0/Dense_0 / 1

`pos_embed` is stored as the file has it: (1, N, D) for DeiT-III, SigLIP and timm's DINOv2
with registers (whose class token already holds its position, `no_embed_class`), (1, 1 + N, D)
otherwise; `keras_vit.checkpoint.adapt_class_position` moves the class row where the model
keeps it. `mask_token` (DINOv2, MAE pre-training) and MAE's decoder (`decoder_*`) are not read.

timm uses exact (erf) GELU and LayerNorm epsilon 1e-6: build the Keras model with
`gelu_approximate=False` to reproduce its outputs; SigLIP (an `attn_pool`) was trained with
the tanh GELU. timm resamples position embeddings with bicubic + antialias interpolation
(`pos_embed_resample="bicubic"`); an original DINOv2 file (with its `mask_token`) resamples as
DINOv2's own code (`"dinov2"`). Checkpoints with parts keras_vit does not implement (qk-norm,
SwiGLU, ...) are refused with the offending keys named.
"""

import re

import numpy as np

from keras_vit.formats import _torch_layout as tl

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_STAGE_UNIT = re.compile(r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")


_GAMMA = re.compile(r"^(blocks\.\d+\.)gamma_([12])$")


def is_timm_state(keys):
    return "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys)


def gelu_approximate(state):
    """The GELU the weights were trained with: tanh for SigLIP (an attention-pooling head,
    from big_vision), exact erf for timm's other ViTs."""
    return any(k.removeprefix("module.").startswith("attn_pool.") for k in state)


def pos_embed_resample(state):
    """DINOv2's own resampling for an original DINOv2 file (which keeps its `mask_token`;
    timm's copies drop it), else timm's bicubic with antialiasing."""
    keys = {k.removeprefix("module.") for k in state}
    return "dinov2" if "mask_token" in keys and "blocks.0.ls1.gamma" in keys else "bicubic"


def convert(state, num_heads, source="timm checkpoint"):
    """timm ViT state dict (NumPy arrays) -> official-layout params."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The original DINOv2 and DeiT-III names of the same arrays.
    state = {_GAMMA.sub(r"\1ls\2.gamma", k).replace("register_tokens", "reg_token"): v
             for k, v in state.items()}
    m = tl.KeyMapper(state, source)
    if m.has("cls_token"):
        m.put("cls", m.take("cls_token"))
    if m.has("reg_token"):
        m.put("registers", m.take("reg_token"))
    m.put("Transformer/posembed_input/pos_embedding", m.take("pos_embed"))
    m.put("embedding/kernel", tl.conv_kernel(m.take("patch_embed.proj.weight")))
    m.put("embedding/bias", m.take("patch_embed.proj.bias"))
    if any(k.startswith("patch_embed.backbone.") for k in state):
        _backbone(m, state)
    blocks = sorted({int(match.group(1)) for k in state if (match := _BLOCK.match(k))})
    if blocks != list(range(len(blocks))):
        raise ValueError(f"{source}: blocks are not numbered 0..L-1 ({blocks}).")
    for i in blocks:
        _block(m, i, num_heads)
    # A model with fc_norm has no final norm (timm: `norm` is an Identity then).
    norms = [("fc_norm", "fc_norm")] if m.has("fc_norm.weight") else []
    if m.has("norm.weight") or not norms:
        norms.append(("norm", "Transformer/encoder_norm"))
    for timm_name, official in norms:
        m.put(f"{official}/scale", m.take(f"{timm_name}.weight"))
        m.put(f"{official}/bias", m.take(f"{timm_name}.bias"))
    if m.has("attn_pool.latent"):
        _attention_pool(m, num_heads)
    for timm_name, official in (("pre_logits.fc", "pre_logits"), ("head", "head")):
        if m.has(f"{timm_name}.weight"):
            m.put(f"{official}/kernel", tl.dense_kernel(m.take(f"{timm_name}.weight")))
            m.put(f"{official}/bias", m.take(f"{timm_name}.bias"))
    return m.finish(ignore=("mask_token", "decoder"))


def _attention_pool(m, num_heads):
    """timm's `AttentionPoolLatent` (SigLIP's MAP head) -> big_vision's `MAPHead_0` names."""
    head = "MAPHead_0/"
    mha = head + "MultiHeadDotProductAttention_0/"
    latent = m.take("attn_pool.latent")
    if latent.shape[1] != 1:
        raise ValueError(f"{m.source}: 'attn_pool.latent' has {latent.shape[1]} queries; "
                         "keras_vit's attention pooling has one.")
    m.put(head + "probe", latent)
    kernel, bias = tl.attention_in(m.take("attn_pool.q.weight"), m.take("attn_pool.q.bias"),
                                   num_heads)
    m.put(mha + "query/kernel", kernel)
    m.put(mha + "query/bias", bias)
    kv_weight, kv_bias = m.take("attn_pool.kv.weight"), m.take("attn_pool.kv.bias")
    for name, w, b in zip(("key", "value"), np.split(kv_weight, 2), np.split(kv_bias, 2)):
        kernel, b = tl.attention_in(w, b, num_heads)
        m.put(f"{mha}{name}/kernel", kernel)
        m.put(f"{mha}{name}/bias", b)
    m.put(mha + "out/kernel", tl.attention_out(m.take("attn_pool.proj.weight"), num_heads))
    m.put(mha + "out/bias", m.take("attn_pool.proj.bias"))
    m.put(head + "LayerNorm_0/scale", m.take("attn_pool.norm.weight"))
    m.put(head + "LayerNorm_0/bias", m.take("attn_pool.norm.bias"))
    for fc, dense in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
        m.put(f"{head}MlpBlock_0/{dense}/kernel", tl.dense_kernel(m.take(f"attn_pool.mlp.{fc}.weight")))
        m.put(f"{head}MlpBlock_0/{dense}/bias", m.take(f"attn_pool.mlp.{fc}.bias"))


def _block(m, i, num_heads):
    p = f"blocks.{i}."
    out = f"Transformer/encoderblock_{i}/"
    mha = out + "MultiHeadDotProductAttention_1/"
    m.put(out + "LayerNorm_0/scale", m.take(p + "norm1.weight"))
    m.put(out + "LayerNorm_0/bias", m.take(p + "norm1.bias"))
    qkv = m.take(p + "attn.qkv.weight")
    if qkv.shape[0] % 3:
        raise ValueError(f"{m.source}: '{p}attn.qkv.weight' has shape {qkv.shape}, not (3D, D).")
    qkv_bias = m.take(p + "attn.qkv.bias") if m.has(p + "attn.qkv.bias") \
        else np.zeros(qkv.shape[0], qkv.dtype)
    for name, weight, bias in zip(("query", "key", "value"), np.split(qkv, 3), np.split(qkv_bias, 3)):
        kernel, bias = tl.attention_in(weight, bias, num_heads)
        m.put(f"{mha}{name}/kernel", kernel)
        m.put(f"{mha}{name}/bias", bias)
    m.put(mha + "out/kernel", tl.attention_out(m.take(p + "attn.proj.weight"), num_heads))
    m.put(mha + "out/bias", m.take(p + "attn.proj.bias"))
    m.put(out + "LayerNorm_2/scale", m.take(p + "norm2.weight"))
    m.put(out + "LayerNorm_2/bias", m.take(p + "norm2.bias"))
    for fc, dense in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
        m.put(f"{out}MlpBlock_3/{dense}/kernel", tl.dense_kernel(m.take(f"{p}mlp.{fc}.weight")))
        m.put(f"{out}MlpBlock_3/{dense}/bias", m.take(f"{p}mlp.{fc}.bias"))
    for ls, name in (("ls1", "LayerScale_1"), ("ls2", "LayerScale_3")):
        if m.has(f"{p}{ls}.gamma"):
            m.put(f"{out}{name}/scale", m.take(f"{p}{ls}.gamma"))


def _backbone(m, state):
    """timm's ResNetV2 stem of `vit_base_r50_s16_*` -> the official BiT names."""
    stem = "patch_embed.backbone.stem."
    m.put("conv_root/kernel", tl.conv_kernel(m.take(stem + "conv.weight")))
    m.put("gn_root/scale", m.take(stem + "norm.weight"))
    m.put("gn_root/bias", m.take(stem + "norm.bias"))
    units = sorted({(int(a), int(b)) for k in state if (match := _STAGE_UNIT.match(k))
                    for a, b in [match.groups()]})
    for s, u in units:
        p = f"patch_embed.backbone.stages.{s}.blocks.{u}."
        out = f"block{s + 1}/unit{u + 1}/"
        for r in (1, 2, 3):
            m.put(f"{out}conv{r}/kernel", tl.conv_kernel(m.take(f"{p}conv{r}.weight")))
            m.put(f"{out}gn{r}/scale", m.take(f"{p}norm{r}.weight"))
            m.put(f"{out}gn{r}/bias", m.take(f"{p}norm{r}.bias"))
        if m.has(p + "downsample.conv.weight"):
            m.put(out + "conv_proj/kernel", tl.conv_kernel(m.take(p + "downsample.conv.weight")))
            m.put(out + "gn_proj/scale", m.take(p + "downsample.norm.weight"))
            m.put(out + "gn_proj/bias", m.take(p + "downsample.norm.bias"))
