"""Pretrained starting points for fine-tuning: checkpoints, registry names, saved models.

The new model always keeps its own zero-initialised head for the new classes
(paper: "we remove the whole head (two linear layers) and replace it by a
single zero-initialized D x K layer"); `pre_logits` is dropped. The position
embedding is resampled to the new resolution by `keras_vit`'s checkpoint
code (`scipy.ndimage.zoom(order=1)` as vit_jax for official files).

Sources:

* ``--weights``: anything `keras_vit.load_weights` reads -- a registry name
  for the chosen ``--model`` ("imagenet21k", ...; downloaded and verified),
  an official/big_vision ``.npz``, HF or timm files -- plus a keras-vit run's
  ``.weights.h5`` (rebuilt via the run's config.json) or ``.keras`` file.
* ``--init``: a saved ``.keras`` model (any keras_vit ViT, any resolution).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from applications import run_files
from applications.options import UsageError

_DROPPED_PREFIXES = ("head/", "pre_logits/")


def load_pretrained(model: keras.Model, spec: str) -> None:
    """Loads a pretrained backbone into `model`, keeping its new zero head.

    Args:
        model: A `keras_vit.ViT` with the target classes and resolution.
        spec: --weights (see module docstring).

    Raises:
        UsageError: For a missing file or a checkpoint that does not fit.
    """
    if spec.endswith(".keras"):
        transfer_from_saved_model(model, spec)
        return
    if _looks_like_path(spec) and not os.path.exists(spec):
        raise UsageError(
            f"Weights {spec!r} not found. Pass an existing checkpoint file (official .npz, "
            "HF/timm file, a run's .keras/.weights.h5) or a registry name for --model "
            "(keras_vit.list_weights(variant) lists them)."
        )
    if spec.endswith(".weights.h5") and _has_run_config(spec):
        _assign(model, _params_from_run_weights(spec), spec)
        return
    import keras_vit

    try:
        keras_vit.load_weights(model, spec, head="new")
    except ValueError as e:
        raise UsageError(f"Cannot fine-tune from {spec!r}: {e}") from e


def transfer_from_saved_model(model: keras.Model, path: str) -> None:
    """Copies a saved `.keras` ViT's backbone into `model` (new head, new size)."""
    if not os.path.isfile(path):
        raise UsageError(f"Saved model {path!r} does not exist.")
    import keras_vit  # noqa: F401  (registers the layers for deserialisation)

    source = keras.saving.load_model(path, compile=False)
    _assign(model, _official_params(source), path)


def source_architecture(spec: str, with_image_size: bool = False) -> dict:
    """The ViT architecture of a fine-tuning source, without `image_size` unless asked.

    Read from the run's config.json next to a saved model when there is one,
    else from the saved model's layers or the official checkpoint's shapes.
    `with_image_size`: also the resolution a saved model (`.keras`, or a run's config.json)
    was built for; a checkpoint file alone does not fix one.

    Raises:
        UsageError: When it cannot be determined (then --model is needed).
    """
    if not os.path.exists(spec):
        if _looks_like_path(spec):
            raise UsageError(f"Weights {spec!r} not found.")
        raise UsageError(
            f"--weights {spec!r} is a registry name: pass --model too (one of the "
            "variants, e.g. ViTB16), since the registry is per variant."
        )
    if _has_run_config(spec):
        saved = run_files.load(os.path.dirname(os.path.abspath(spec)))
        return {k: v for k, v in saved["architecture"].items()
                if with_image_size or k != "image_size"}
    if spec.endswith(".keras"):
        import keras_vit  # noqa: F401
        from keras_vit.weights.loading import model_architecture

        model = keras.saving.load_model(spec, compile=False)
        arch = {k: v for k, v in model_architecture(model).items() if v is not None}
        size = tuple(model.input_shape[1:3])
        if with_image_size and None not in size:
            arch["image_size"] = size[0] if size[0] == size[1] else size
        return arch
    if spec.endswith(".npz"):
        from keras_vit import checkpoint

        try:
            return architecture_from_params(checkpoint.read_npz(spec))
        except ValueError as e:
            raise UsageError(str(e)) from e
    if os.path.isdir(spec) or spec.endswith((".safetensors", ".bin", ".pth", ".pt")):
        # HF / timm / the original DINOv2, MAE, DeiT-III files: readable without --model when
        # the head count is known (a HF directory's config.json says it).
        from keras_vit.formats import read_checkpoint

        try:
            ckpt = read_checkpoint(spec)
        except ValueError as e:
            raise UsageError(f"Cannot infer the architecture of {spec!r} ({e}); pass --model "
                             "(e.g. DINOv2S14, ViTB16).") from e
        return {**architecture_from_params(ckpt.params), **checkpoint_facts(ckpt)}
    raise UsageError(f"Cannot infer the architecture of {spec!r}; pass --model.")


def architecture_from_params(params: dict) -> dict:
    """Infers ViT() architecture kwargs from official-layout checkpoint shapes."""
    if any(k.startswith(("conv_root", "block1/")) for k in params):
        raise UsageError("Hybrid (ResNet + ViT) checkpoints need --model ViTR50B16.")
    kernel = np.shape(params["embedding/kernel"])  # (P, P, C, D)
    blocks = {k.split("/")[1] for k in params if k.startswith("Transformer/encoderblock_")}
    prefix = "Transformer/encoderblock_0/"
    query = np.shape(params[prefix + "MultiHeadDotProductAttention_1/query/kernel"])  # (D, H, D/H)
    arch = dict(
        patch_size=int(kernel[0]) if kernel[0] == kernel[1] else (int(kernel[0]), int(kernel[1])),
        hidden_size=int(kernel[3]),
        num_layers=len(blocks),
        num_heads=int(query[1]),
        mlp_dim=int(np.shape(params[prefix + "MlpBlock_3/Dense_0/kernel"])[1]),
        classifier="token" if "cls" in params else "gap",
    )
    pos = "Transformer/posembed_input/pos_embedding"
    if pos + "_row" in params:
        arch["position_embedding"] = "learned_2d"
    elif pos not in params:
        relative = any(k.endswith("relative_embedding") for k in params)
        arch["position_embedding"] = "relative" if relative else "none"
    arch.update(_later_vit_options(params))
    return arch


def _later_vit_options(params: dict) -> dict:
    """The later ViTs' options a checkpoint's arrays show (none for the paper's files)."""
    from keras_vit.checkpoint import POS_EMBED_KEY, prefix_rows_of
    from keras_vit.layers.sincos import is_sincos_2d_table

    options = {}
    if "registers" in params:
        options["num_register_tokens"] = int(np.shape(params["registers"])[1])
    if any(k.endswith("/LayerScale_1/scale") for k in params):
        options["layer_scale_init_value"] = 1e-5  # the loaded values replace it
    if any(k.startswith("MAPHead_0/") for k in params):
        options["classifier"] = "map"
        if "cls" in params:
            options["class_token"] = True
    if "fc_norm/scale" in params:
        options["fc_norm"] = True
        if "cls" in params:
            options["classifier"], options["class_token"] = "gap", True
    pos = params.get(POS_EMBED_KEY)
    if pos is not None and "cls" in params and prefix_rows_of(pos) == 0:
        options["no_embed_class"] = True  # DeiT-III: positions for the patches only
    if pos is not None and is_sincos_2d_table(pos):
        options["position_embedding"] = "sincos_2d"  # MAE's fixed table (stored in its files)
    return options


def checkpoint_facts(ckpt) -> dict:
    """The GELU and input normalisation a converted checkpoint implies, as ViT arguments."""
    facts = {}
    if ckpt.gelu_approximate is not None:
        facts["gelu_approximate"] = ckpt.gelu_approximate
    normalization = getattr(ckpt, "input_normalization", None)
    if normalization is not None:
        facts["input_normalization"] = normalization
    return facts


def _official_params(model: keras.Model) -> dict[str, np.ndarray]:
    """A built ViT's weights as an official-layout {key: array} dict."""
    from keras_vit import checkpoint

    return {k: keras.ops.convert_to_numpy(v)
            for k, v in checkpoint.official_variables(model).items()}


def _params_from_run_weights(path: str) -> dict[str, np.ndarray]:
    """Reads a keras-vit run's `.weights.h5` through a model rebuilt from config.json."""
    import keras_vit

    saved = run_files.load(os.path.dirname(os.path.abspath(path)))
    source = keras_vit.ViT(**saved["architecture"], classes=saved["num_classes"],
                           include_preprocessing=saved.get("include_preprocessing", True))
    source.load_weights(path)
    return _official_params(source)


def _assign(model: keras.Model, params: dict, source: str) -> None:
    """Writes `params` into `model` except head/pre_logits, with clear errors."""
    from keras_vit import checkpoint

    params = {k: v for k, v in params.items() if not k.startswith(_DROPPED_PREFIXES)}
    try:
        checkpoint.assign_checkpoint(model, params, source=source, skip_head=True)
    except ValueError as e:
        raise UsageError(f"Cannot fine-tune from {source}: {e}") from e


def _has_run_config(path: str) -> bool:
    """Whether `path` sits in a keras-vit run directory with its architecture."""
    import json

    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as f:
        return "architecture" in json.load(f)


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or spec.startswith(".") or spec.endswith(
        (".npz", ".h5", ".keras", ".safetensors", ".bin", ".pth", ".pt")
    )
