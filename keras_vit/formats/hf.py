"""HF `transformers` ViT checkpoints -> the official key layout.

Reads `ViTModel` / `ViTForImageClassification` weights, as saved by `save_pretrained`
(`model.safetensors`, sharded `model.safetensors.index.json`, or `pytorch_model.bin`) with the
checkpoint names (`vit.encoder.layer.{i}.attention.attention.query.weight`, ...) or the names
of the transformers 5 modules (`vit.layers.{i}.attention.q_proj.weight`, ...).

Mapping (torch Linear weights are (out, in) and get transposed):

    embeddings.cls_token                     -> cls
    embeddings.position_embeddings           -> Transformer/posembed_input/pos_embedding
    embeddings.patch_embeddings.projection   -> embedding (OIHW -> HWIO)
    encoder.layer.{i}.layernorm_before       -> encoderblock_{i}/LayerNorm_0
    encoder.layer.{i}.attention.attention.{query,key,value}
                                             -> .../MultiHeadDotProductAttention_1/{query,key,value}
                                                ((D, D) -> (D, H, D/H))
    encoder.layer.{i}.attention.output.dense -> .../MultiHeadDotProductAttention_1/out
    encoder.layer.{i}.layernorm_after        -> .../LayerNorm_2
    encoder.layer.{i}.intermediate.dense     -> .../MlpBlock_3/Dense_0
    encoder.layer.{i}.output.dense           -> .../MlpBlock_3/Dense_1
    layernorm                                -> Transformer/encoder_norm
    pooler.dense                             -> pre_logits (Dense + tanh, as the 21k checkpoints)
    classifier                               -> head

HF ViT uses exact (erf) GELU (`hidden_act="gelu"`) and LayerNorm epsilon `layer_norm_eps`
(1e-12 by default; keras_vit uses the official 1e-6, a relative difference of about 1e-6 on
unit-variance activations). Build the Keras model with `gelu_approximate=False` to match.
"""

import json
import os
import re

import numpy as np

from keras_vit.formats import _torch_layout as tl

# hidden_act -> gelu_approximate
_GELU = {"gelu": False, "gelu_python": False, "gelu_new": True, "gelu_pytorch_tanh": True,
         "gelu_fast": True}

_BLOCK = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.")


def is_hf_state(keys):
    return any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings.") for k in keys)


def read_config(directory, model_types=("vit",)):
    """A HF directory's config.json (None without one); `model_types` are those accepted."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    model_type = config.get("model_type", "vit")
    if model_type not in model_types:
        raise ValueError(
            f"{path}: model_type {model_type!r} is not a HF model keras_vit converts; expected "
            f"one of {', '.join(model_types)}."
        )
    if model_type == "siglip":  # a whole SigLIP: the vision tower's settings
        config = {**config.get("vision_config", {}), "model_type": "siglip"}
    return config


def gelu_approximate_from_config(config):
    act = (config or {}).get("hidden_act", "gelu")
    if act not in _GELU:
        raise ValueError(f"HF config hidden_act={act!r} is not a GELU keras_vit can reproduce.")
    return _GELU[act]


def load_state(directory):
    """The raw state dict of a `save_pretrained` directory."""
    from keras_vit.formats.safetensors_io import read_safetensors  # noqa: PLC0415

    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(single):
        return read_safetensors(single)[0]
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(read_safetensors(os.path.join(directory, shard))[0])
        return state
    if os.path.exists(binary):
        return read_torch_bin(binary)
    raise ValueError(
        f"{directory} has no model.safetensors, model.safetensors.index.json or "
        "pytorch_model.bin: not a HF transformers checkpoint directory."
    )


def read_torch_bin(path):
    try:
        import torch  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(f"Reading {path} needs PyTorch (or convert it to safetensors).") from error
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}


def convert(state, num_heads, source="HF checkpoint"):
    """HF ViT state dict (NumPy arrays) -> official-layout params."""
    if any(k.startswith(("vit.embeddings.patch_embeddings.backbone", "embeddings.patch_embeddings.backbone"))
           for k in state):
        raise ValueError(f"{source}: HF ViT-hybrid checkpoints are not supported; use the official "
                         "R50+ViT-B_16 .npz (weights='imagenet21k' on ViTR50B16).")
    state = {k.removeprefix("vit."): v for k, v in state.items()}
    m = tl.KeyMapper(state, source)
    m.put("cls", m.take("embeddings.cls_token"))
    m.put("Transformer/posembed_input/pos_embedding", m.take("embeddings.position_embeddings"))
    m.put("embedding/kernel", tl.conv_kernel(m.take("embeddings.patch_embeddings.projection.weight")))
    m.put("embedding/bias", m.take("embeddings.patch_embeddings.projection.bias"))
    blocks = sorted({int(match.group(1)) for k in state if (match := _BLOCK.match(k))})
    if blocks != list(range(len(blocks))):
        raise ValueError(f"{source}: encoder layers are not numbered 0..L-1 ({blocks}).")
    for i in blocks:
        _block(m, i, num_heads)
    m.put("Transformer/encoder_norm/scale", m.take("layernorm.weight"))
    m.put("Transformer/encoder_norm/bias", m.take("layernorm.bias"))
    for hf, official in (("pooler.dense", "pre_logits"), ("classifier", "head")):
        if m.has(f"{hf}.weight"):
            m.put(f"{official}/kernel", tl.dense_kernel(m.take(f"{hf}.weight")))
            m.put(f"{official}/bias", m.take(f"{hf}.bias"))
    return m.finish(ignore=("embeddings.mask_token",))


def _block(m, i, num_heads):
    out = f"Transformer/encoderblock_{i}/"
    mha = out + "MultiHeadDotProductAttention_1/"
    legacy = m.has(f"encoder.layer.{i}.layernorm_before.weight")
    p = f"encoder.layer.{i}." if legacy else f"layers.{i}."
    names = {
        "ln0": "layernorm_before", "ln2": "layernorm_after",
        "query": "attention.attention.query" if legacy else "attention.q_proj",
        "key": "attention.attention.key" if legacy else "attention.k_proj",
        "value": "attention.attention.value" if legacy else "attention.v_proj",
        "out": "attention.output.dense" if legacy else "attention.o_proj",
        "fc1": "intermediate.dense" if legacy else "mlp.fc1",
        "fc2": "output.dense" if legacy else "mlp.fc2",
    }
    m.put(out + "LayerNorm_0/scale", m.take(p + names["ln0"] + ".weight"))
    m.put(out + "LayerNorm_0/bias", m.take(p + names["ln0"] + ".bias"))
    for name in ("query", "key", "value"):
        weight = m.take(p + names[name] + ".weight")
        bias_key = p + names[name] + ".bias"
        # qkv_bias=False checkpoints: a zero bias is the same function.
        bias = m.take(bias_key) if m.has(bias_key) else np.zeros(weight.shape[0], weight.dtype)
        kernel, bias = tl.attention_in(weight, bias, num_heads)
        m.put(f"{mha}{name}/kernel", kernel)
        m.put(f"{mha}{name}/bias", bias)
    m.put(mha + "out/kernel", tl.attention_out(m.take(p + names["out"] + ".weight"), num_heads))
    m.put(mha + "out/bias", m.take(p + names["out"] + ".bias"))
    m.put(out + "LayerNorm_2/scale", m.take(p + names["ln2"] + ".weight"))
    m.put(out + "LayerNorm_2/bias", m.take(p + names["ln2"] + ".bias"))
    for hf, dense in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
        m.put(f"{out}MlpBlock_3/{dense}/kernel", tl.dense_kernel(m.take(p + names[hf] + ".weight")))
        m.put(f"{out}MlpBlock_3/{dense}/bias", m.take(p + names[hf] + ".bias"))
