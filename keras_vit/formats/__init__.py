"""Checkpoint formats, all converted to the official `.npz` key layout (see `keras_vit.checkpoint`).

`read_checkpoint(path, num_heads)` recognises:

- official ViT / AugReg `.npz` files and big_vision `.npz` files (`params/` prefix, Linen
  names, scanned `encoderblock` stacks);
- HF `transformers` ViT: a `save_pretrained` directory (`config.json` with `model.safetensors`,
  a sharded `model.safetensors.index.json` or `pytorch_model.bin`), or one such file; also
  `Dinov2Model`, `Dinov2WithRegistersModel`, `SiglipVisionModel` (or a whole `SiglipModel`)
  and `ViTMAEModel` checkpoints (`keras_vit.formats.hf_families`);
- timm ViT: a `.safetensors` / `.bin` / `.pth` state dict (fused `qkv`), or a timm hub directory,
  including timm's DINOv2, SigLIP, MAE and DeiT-III files and the original DINOv2, MAE and
  DeiT-III `.pth` files, which use timm's names (`keras_vit.formats.timm`);
- Keras `.weights.h5` files (loaded by Keras itself; no conversion).

The result records what the source implies for the model: HF and timm checkpoints were trained
with exact (erf) GELU, the official ones with the tanh approximation.
"""

import dataclasses
import os

import numpy as np

from keras_vit import checkpoint as _checkpoint

FORMATS = ("official", "big_vision", "hf", "timm", "keras")


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read into the official key layout, with what its source implies.

    Attributes:
        path: where it was read from.
        format: one of `FORMATS`.
        params: {official key: np.ndarray}; None for `keras` files.
        gelu_approximate: the GELU the weights were trained with (True: tanh approximation,
            False: exact erf); None when unknown (`keras` files).
        pos_embed_resample: the resampling the source's own code uses (one of
            `keras_vit.checkpoint.POS_EMBED_RESAMPLE`).
        layer_norm_epsilon: the source's LayerNorm epsilon, where it says (HF configs).
        config: the HF `config.json`, when there is one.
        input_normalization: the input normalisation the weights expect (`ViT`'s
            `input_normalization`), where the source says: None (the paper's [-1, 1], or
            not known), `"imagenet"` or a (mean, std) pair.
    """

    path: str
    format: str
    params: dict = None
    gelu_approximate: bool = None
    pos_embed_resample: str = "official"
    layer_norm_epsilon: float = None
    config: dict = None
    input_normalization: object = None

    # -- facts read from the arrays ---------------------------------------------------------
    @property
    def num_classes(self):
        """Width of the `head`, or None when the checkpoint has no head."""
        bias = (self.params or {}).get("head/bias")
        return None if bias is None else int(np.shape(bias)[-1])

    @property
    def representation_size(self):
        bias = (self.params or {}).get("pre_logits/bias")
        return None if bias is None else int(np.shape(bias)[-1])

    @property
    def head_is_zero(self):
        """True for the zeroed heads of the original ImageNet-21k files (not a classifier)."""
        kernel = (self.params or {}).get("head/kernel")
        return kernel is not None and not np.any(kernel)

    @property
    def num_tokens(self):
        pos = (self.params or {}).get(_checkpoint.POS_EMBED_KEY)
        return None if pos is None else int(np.shape(pos)[1])


def detect_format(path):
    """The format of `path` from its name and (for state dicts) its keys, without converting."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _state_format(_dir_state_keys(path), path)
    if path.endswith(".weights.h5"):
        return "keras"
    if path.endswith(".npz"):
        return "official"  # or big_vision: told apart while reading
    if path.endswith((".safetensors", ".bin", ".pth", ".pt")):
        return _state_format(_read_state(path).keys(), path)
    raise ValueError(
        f"Cannot tell the format of {path!r}: expected a .npz (official / big_vision), "
        ".safetensors / .bin / .pth (HF transformers or timm), .weights.h5 (Keras) file, or a "
        "HF / timm checkpoint directory."
    )


def read_checkpoint(path, num_heads=None):
    """Reads any supported checkpoint into the official layout.

    Args:
        path: file or directory (see the module docstring).
        num_heads: the model's attention heads; needed to split the (D, D) q/k/v matrices of
            HF and timm files into (D, H, D/H) (HF directories also say it in `config.json`).

    Returns:
        A `Checkpoint`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    if os.path.isdir(path):
        return _read_directory(path, num_heads)
    if path.endswith(".weights.h5"):
        return Checkpoint(path, "keras")
    if path.endswith(".npz"):
        return _read_npz(path)
    if path.endswith((".safetensors", ".bin", ".pth", ".pt")):
        state = _read_state(path)
        return _convert_state(state, _state_format(state.keys(), path), path, num_heads, None)
    detect_format(path)  # raises with the list of formats
    raise AssertionError  # pragma: no cover


def _read_npz(path):
    params = _checkpoint.read_npz(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw_keys = archive.files
    except Exception:  # noqa: BLE001 (read_npz already succeeded; only naming the flavour)
        raw_keys = []
    big_vision = any(k.startswith("params/") or "MultiHeadDotProductAttention_0" in k
                     or k == "pos_embedding" for k in raw_keys)
    return Checkpoint(path, "big_vision" if big_vision else "official", params,
                      gelu_approximate=True, pos_embed_resample="official")


def _read_state(path):
    from keras_vit.formats import hf  # noqa: PLC0415
    from keras_vit.formats.safetensors_io import read_safetensors  # noqa: PLC0415

    if path.endswith(".safetensors"):
        return read_safetensors(path)[0]
    return hf.read_torch_bin(path)


def _dir_state_keys(path):
    from keras_vit.formats import hf  # noqa: PLC0415

    return hf.load_state(path).keys()


def _state_format(keys, path):
    from keras_vit.formats import hf, hf_families, timm  # noqa: PLC0415

    keys = list(keys)
    if hf.is_hf_state(keys) or hf_families.is_family_state(keys):
        return "hf"
    if timm.is_timm_state(keys):
        return "timm"
    shown = ", ".join(sorted(keys)[:8])
    raise ValueError(
        f"{path} is neither a HF transformers ViT nor a timm ViT state dict "
        f"(first keys: {shown or 'none'})."
    )


def _read_directory(path, num_heads):
    import json  # noqa: PLC0415

    from keras_vit.formats import hf, hf_families  # noqa: PLC0415

    state = hf.load_state(path)
    fmt = _state_format(state.keys(), path)
    config = None
    if fmt == "hf":
        config = hf.read_config(path, ("vit",) + tuple(hf_families.MODEL_TYPES))
    elif os.path.exists(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    ckpt = _convert_state(state, fmt, path, num_heads, config)
    normalization = _preprocessor_normalization(path)
    if normalization != "unknown":
        ckpt.input_normalization = normalization
    return ckpt


def _preprocessor_normalization(directory):
    """The input normalisation a HF `preprocessor_config.json` states (`image_mean`,
    `image_std`): None for [-1, 1], "imagenet", a (mean, std) pair, or "unknown"."""
    import json  # noqa: PLC0415

    path = os.path.join(directory, "preprocessor_config.json")
    if not os.path.exists(path):
        return "unknown"
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    mean, std = config.get("image_mean"), config.get("image_std")
    if mean is None or std is None or config.get("do_normalize") is False:
        return "unknown"
    if np.allclose(mean, 0.5) and np.allclose(std, 0.5):
        return None
    if np.allclose(mean, _IMAGENET[0]) and np.allclose(std, _IMAGENET[1]):
        return "imagenet"
    return (tuple(mean), tuple(std))


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _timm_normalization(params):
    """What timm's later-ViT files expect: ImageNet statistics for DINOv2 and DeiT-III (they
    have LayerScale) and MAE (its files hold MAE's fixed sin-cos table); the paper's [-1, 1]
    for the others (AugReg, SigLIP)."""
    from keras_vit.layers.sincos import is_sincos_2d_table  # noqa: PLC0415

    if any(k.endswith("/LayerScale_1/scale") for k in params):
        return "imagenet"
    pos = params.get(_checkpoint.POS_EMBED_KEY)
    return "imagenet" if pos is not None and is_sincos_2d_table(pos) else None


def _convert_state(state, fmt, path, num_heads, config):
    from keras_vit.formats import hf, timm  # noqa: PLC0415

    if fmt == "hf":
        config_heads = (config or {}).get("num_attention_heads")
        if num_heads is None:
            num_heads = config_heads
        elif config_heads is not None and config_heads != num_heads:
            raise ValueError(
                f"{path}: config.json has num_attention_heads={config_heads}, the model "
                f"{num_heads}."
            )
        if num_heads is None:
            raise ValueError(f"{path}: pass num_heads to split the q/k/v matrices (no config.json).")
        from keras_vit.formats import hf_families  # noqa: PLC0415

        model_type = (config or {}).get("model_type") or hf_families.model_type_of(state.keys())
        if model_type in hf_families.MODEL_TYPES:
            if hf_families.has_vit_names(model_type):
                params = hf.convert(hf_families.encoder_state(state), num_heads, source=path)
            else:
                params = hf_families.convert(state, model_type, num_heads, source=path)
            act, resample, eps = hf_families.facts(model_type, config)
            return Checkpoint(path, "hf", params,
                              gelu_approximate=hf.gelu_approximate_from_config({"hidden_act": act}),
                              pos_embed_resample=resample, layer_norm_epsilon=eps, config=config,
                              input_normalization=hf_families.normalization(model_type))
        params = hf.convert(state, num_heads, source=path)
        return Checkpoint(path, "hf", params,
                          gelu_approximate=hf.gelu_approximate_from_config(config),
                          pos_embed_resample="official",
                          layer_norm_epsilon=(config or {}).get("layer_norm_eps", 1e-12),
                          config=config)
    if num_heads is None:
        raise ValueError(f"{path}: pass num_heads to split the fused qkv matrices.")
    params = timm.convert(state, num_heads, source=path)
    return Checkpoint(path, "timm", params, gelu_approximate=timm.gelu_approximate(state),
                      pos_embed_resample=timm.pos_embed_resample(state), layer_norm_epsilon=1e-6,
                      config=config, input_normalization=_timm_normalization(params))
