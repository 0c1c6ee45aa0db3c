"""HF `transformers` checkpoints of the later plain ViTs -> the official key layout.

- `Dinov2Model` / `Dinov2WithRegistersModel` (`facebook/dinov2-*`,
  `facebook/dinov2-with-registers-*`; also inside `*ForImageClassification`, prefix `dinov2.`):

      embeddings.cls_token / position_embeddings    -> cls / Transformer/posembed_input/...
      embeddings.register_tokens                    -> registers
      embeddings.patch_embeddings.projection        -> embedding (OIHW -> HWIO)
      encoder.layer.{i}.norm1 / norm2               -> encoderblock_{i}/LayerNorm_0 / _2
      encoder.layer.{i}.attention.attention.{query,key,value} (or attention.{q,k,v}_proj)
                                                    -> .../MultiHeadDotProductAttention_1/...
      encoder.layer.{i}.attention.output.dense (or attention.o_proj) -> .../out
      encoder.layer.{i}.layer_scale1 / 2.lambda1    -> .../LayerScale_1 / _3/scale
      encoder.layer.{i}.mlp.fc1 / fc2               -> .../MlpBlock_3/Dense_0 / _1
      layernorm                                     -> Transformer/encoder_norm

  `embeddings.mask_token` (masked-image modelling during training) and the classifier of
  `Dinov2ForImageClassification` (which reads [class token; mean of the patches]) are not
  used. DINOv2-g's SwiGLU MLP (`use_swiglu_ffn`) is refused: keras_vit has no SwiGLU block.

- `SiglipVisionModel` (or the vision tower of a whole `SiglipModel`, prefix `vision_model.`;
  the text tower is not read):

      embeddings.patch_embedding                    -> embedding
      embeddings.position_embedding.weight (N, D)   -> Transformer/posembed_input/... (1, N, D)
      encoder.layers.{i}.layer_norm1 / 2            -> encoderblock_{i}/LayerNorm_0 / _2
      encoder.layers.{i}.self_attn.{q,k,v,out}_proj -> .../MultiHeadDotProductAttention_1/...
      encoder.layers.{i}.mlp.fc1 / fc2              -> .../MlpBlock_3/Dense_0 / _1
      post_layernorm                                -> Transformer/encoder_norm
      head.probe, head.attention.in_proj (q; k; v), head.attention.out_proj,
      head.layernorm, head.mlp.fc1 / fc2            -> MAPHead_0/... (big_vision's names)

- `ViTMAEModel` / `ViTMAEForPreTraining` (`facebook/vit-mae-*`): the encoder has ViT's names
  (`keras_vit.formats.hf`); the decoder (`decoder.*`) is not read. The position embedding is
  MAE's fixed sin-cos table, stored in the file.

Facts each family's code implies (recorded on the `Checkpoint`): the GELU (`hidden_act`:
DINOv2 and MAE exact, SigLIP `gelu_pytorch_tanh`) and how it resamples the position embedding
for another input size (`interpolate_pos_encoding`): torch bicubic without antialiasing for
Dinov2, SigLIP and ViTMAE (`"bicubic_no_antialias"`), with antialiasing for
Dinov2WithRegisters (`"bicubic"`).
"""

import re

import numpy as np

from keras_vit.formats import _torch_layout as tl

# model_type -> (the family, default hidden_act, pos_embed_resample of its own code)
MODEL_TYPES = {
    "dinov2": ("dinov2", "gelu", "bicubic_no_antialias"),
    "dinov2_with_registers": ("dinov2", "gelu", "bicubic"),
    "siglip": ("siglip", "gelu_pytorch_tanh", "bicubic_no_antialias"),
    "siglip_vision_model": ("siglip", "gelu_pytorch_tanh", "bicubic_no_antialias"),
    "vit_mae": ("vit_mae", "gelu", "bicubic_no_antialias"),
}

_DINOV2_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.")
_SIGLIP_BLOCK = re.compile(r"^encoder\.layers\.(\d+)\.")


def model_type_of(keys):
    """The HF model_type a state dict's keys show, or None (plain ViT, or not HF)."""
    keys = list(keys)
    if any(k.removeprefix("dinov2.") == "embeddings.register_tokens" for k in keys):
        return "dinov2_with_registers"
    if any(".layer_scale1." in k or ".mlp.weights_in." in k for k in keys):
        return "dinov2"
    if any(k.removeprefix("vision_model.").startswith("embeddings.patch_embedding.")
           for k in keys):
        return "siglip"
    if any(k.startswith("decoder.") for k in keys) and \
            any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings.") for k in keys):
        return "vit_mae"
    return None


def is_family_state(keys):
    return model_type_of(keys) is not None


def facts(model_type, config):
    """(gelu hidden_act, pos_embed_resample, layer_norm_eps) of a model type and config."""
    _, act, resample = MODEL_TYPES[model_type]
    config = config or {}
    return config.get("hidden_act", act), resample, config.get("layer_norm_eps", 1e-6)


def has_vit_names(model_type):
    """Whether the model's encoder has HF ViT's names (ViTMAE: `keras_vit.formats.hf` reads
    it from `encoder_state`)."""
    return MODEL_TYPES[model_type][0] == "vit_mae"


def encoder_state(state):
    """The encoder's arrays of a `ViTMAEForPreTraining` state dict (its decoder left out)."""
    return {k: v for k, v in state.items() if not k.startswith("decoder.")}


def normalization(model_type):
    """The input normalisation of the family's image processors: ImageNet's mean and std for
    DINOv2 and MAE, [-1, 1] (None) for SigLIP."""
    return None if MODEL_TYPES[model_type][0] == "siglip" else "imagenet"


def convert(state, model_type, num_heads, source="HF checkpoint"):
    """A HF Dinov2 / SigLIP state dict (NumPy arrays) -> official-layout params."""
    family = MODEL_TYPES[model_type][0]
    if family == "dinov2":
        return _dinov2(state, num_heads, source)
    if family == "siglip":
        return _siglip(state, num_heads, source)
    raise ValueError(f"{source}: {model_type} has ViT's names; read it with keras_vit.formats.hf.")


def _qkv_out(m, prefix, names, out_name, num_heads):
    mha = {}
    for name, hf_name in zip(("query", "key", "value"), names):
        kernel, bias = tl.attention_in(m.take(f"{prefix}{hf_name}.weight"),
                                       m.take(f"{prefix}{hf_name}.bias"), num_heads)
        mha[f"{name}/kernel"], mha[f"{name}/bias"] = kernel, bias
    mha["out/kernel"] = tl.attention_out(m.take(f"{prefix}{out_name}.weight"), num_heads)
    mha["out/bias"] = m.take(f"{prefix}{out_name}.bias")
    return mha


def _put_block(m, i, ln0, ln2, mha, fc1, fc2, extra=()):
    out = f"Transformer/encoderblock_{i}/"
    for name, key in (("LayerNorm_0", ln0), ("LayerNorm_2", ln2)):
        m.put(f"{out}{name}/scale", m.take(key + ".weight"))
        m.put(f"{out}{name}/bias", m.take(key + ".bias"))
    for name, value in mha.items():
        m.put(f"{out}MultiHeadDotProductAttention_1/{name}", value)
    for dense, key in (("Dense_0", fc1), ("Dense_1", fc2)):
        m.put(f"{out}MlpBlock_3/{dense}/kernel", tl.dense_kernel(m.take(key + ".weight")))
        m.put(f"{out}MlpBlock_3/{dense}/bias", m.take(key + ".bias"))
    for name, key in extra:
        m.put(out + name, m.take(key))


def _blocks(state, pattern, source):
    blocks = sorted({int(match.group(1)) for k in state if (match := pattern.match(k))})
    if blocks != list(range(len(blocks))):
        raise ValueError(f"{source}: encoder layers are not numbered 0..L-1 ({blocks}).")
    return blocks


def _dinov2(state, num_heads, source):
    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    if any(".mlp.weights_in." in k or ".mlp.gate_proj." in k or ".mlp.w12." in k for k in state):
        raise ValueError(f"{source}: a DINOv2 checkpoint with a SwiGLU MLP (ViT-g/14); keras_vit "
                         "implements the plain MLP of DINOv2 S/B/L only.")
    m = tl.KeyMapper(state, source)
    m.put("cls", m.take("embeddings.cls_token"))
    m.put("Transformer/posembed_input/pos_embedding", m.take("embeddings.position_embeddings"))
    if m.has("embeddings.register_tokens"):
        m.put("registers", m.take("embeddings.register_tokens"))
    m.put("embedding/kernel", tl.conv_kernel(m.take("embeddings.patch_embeddings.projection.weight")))
    m.put("embedding/bias", m.take("embeddings.patch_embeddings.projection.bias"))
    for i in _blocks(state, _DINOV2_BLOCK, source):
        p = f"encoder.layer.{i}."
        legacy = m.has(p + "attention.attention.query.weight")
        names = (("attention.attention.query", "attention.attention.key",
                  "attention.attention.value") if legacy else
                 ("attention.q_proj", "attention.k_proj", "attention.v_proj"))
        out = "attention.output.dense" if legacy else "attention.o_proj"
        mha = _qkv_out(m, p, names, out, num_heads)
        _put_block(m, i, p + "norm1", p + "norm2", mha, p + "mlp.fc1", p + "mlp.fc2",
                   extra=(("LayerScale_1/scale", p + "layer_scale1.lambda1"),
                          ("LayerScale_3/scale", p + "layer_scale2.lambda1")))
    m.put("Transformer/encoder_norm/scale", m.take("layernorm.weight"))
    m.put("Transformer/encoder_norm/bias", m.take("layernorm.bias"))
    return m.finish(ignore=("embeddings.mask_token", "classifier."))


def _siglip(state, num_heads, source):
    state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    m = tl.KeyMapper(state, source)
    m.put("embedding/kernel", tl.conv_kernel(m.take("embeddings.patch_embedding.weight")))
    m.put("embedding/bias", m.take("embeddings.patch_embedding.bias"))
    m.put("Transformer/posembed_input/pos_embedding",
          m.take("embeddings.position_embedding.weight")[None])
    for i in _blocks(state, _SIGLIP_BLOCK, source):
        p = f"encoder.layers.{i}."
        mha = _qkv_out(m, p, ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                       "self_attn.out_proj", num_heads)
        _put_block(m, i, p + "layer_norm1", p + "layer_norm2", mha, p + "mlp.fc1", p + "mlp.fc2")
    m.put("Transformer/encoder_norm/scale", m.take("post_layernorm.weight"))
    m.put("Transformer/encoder_norm/bias", m.take("post_layernorm.bias"))
    if m.has("head.probe"):
        _siglip_head(m, num_heads)
    return m.finish(ignore=("text_model.", "logit_scale", "logit_bias", "classifier."))


def _siglip_head(m, num_heads):
    """HF's `SiglipMultiheadAttentionPoolingHead` (a `torch.nn.MultiheadAttention` with one
    packed (3D, D) input projection) -> big_vision's `MAPHead_0` names."""
    head = "MAPHead_0/"
    mha = head + "MultiHeadDotProductAttention_0/"
    m.put(head + "probe", m.take("head.probe"))
    weight, bias = m.take("head.attention.in_proj_weight"), m.take("head.attention.in_proj_bias")
    for name, w, b in zip(("query", "key", "value"), np.split(weight, 3), np.split(bias, 3)):
        kernel, b = tl.attention_in(w, b, num_heads)
        m.put(f"{mha}{name}/kernel", kernel)
        m.put(f"{mha}{name}/bias", b)
    m.put(mha + "out/kernel", tl.attention_out(m.take("head.attention.out_proj.weight"), num_heads))
    m.put(mha + "out/bias", m.take("head.attention.out_proj.bias"))
    m.put(head + "LayerNorm_0/scale", m.take("head.layernorm.weight"))
    m.put(head + "LayerNorm_0/bias", m.take("head.layernorm.bias"))
    for fc, dense in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
        m.put(f"{head}MlpBlock_0/{dense}/kernel", tl.dense_kernel(m.take(f"head.mlp.{fc}.weight")))
        m.put(f"{head}MlpBlock_0/{dense}/bias", m.take(f"head.mlp.{fc}.bias"))
