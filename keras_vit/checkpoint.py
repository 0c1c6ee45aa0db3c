"""Loading checkpoints in the official ViT layout, matched by name, never by position.

Every source format is first turned into a flat dict `{official key: array}` (the layout of the
`.npz` files published with the paper, keys joined by '/'); `assign_checkpoint` then checks the
whole dict against the model (missing, extra and mis-shaped keys are named) before it writes a
single variable, so a failed load leaves the model as it was.
"""

import os

import keras
import numpy as np
import scipy.ndimage

from keras_vit.layers.attention_pooling import MultiheadAttentionPooling
from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.register_tokens import RegisterTokens
from keras_vit.layers.resnet import ResidualUnit
from keras_vit.layers.transformer_block import TransformerBlock

POS_EMBED_KEY = "Transformer/posembed_input/pos_embedding"
# How a position embedding is resampled to another grid, each as a source's own code does.
POS_EMBED_RESAMPLE = ("official", "bicubic", "bicubic_no_antialias", "dinov2")
_HEAD_PREFIXES = ("head/", "pre_logits/")


# --------------------------------------------------------------------------- model -> keys


def official_variables(model):
    """Maps each official checkpoint key to the model variable it fills.

    Covers the patch embedding, class token, position embedding(s), encoder blocks, final
    norm, `pre_logits`, `head` and the hybrid ResNet stem. Keys for this library's extensions
    (2-D and relative position embeddings) follow the same scheme, and so do those of the
    later ViTs' options: `registers` (1, R, D), `Transformer/encoderblock_{i}/LayerScale_1/scale`
    and `.../LayerScale_3/scale` (D,), `MAPHead_0/...` (big_vision's names for the attention-
    pooling head) and `fc_norm/{scale,bias}`.
    """
    variables = {}
    blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
    for layer in model.layers:
        if isinstance(layer, PatchEncoder):
            variables["embedding/kernel"] = layer.kernel
            variables["embedding/bias"] = layer.bias
            if layer.use_class_token:
                variables["cls"] = layer.cls
            if layer.position_embedding in ("learned_1d", "sincos_2d"):
                variables[POS_EMBED_KEY] = layer.pos_embedding
            elif layer.position_embedding == "learned_2d":
                variables[POS_EMBED_KEY + "_row"] = layer.pos_embedding_row
                variables[POS_EMBED_KEY + "_col"] = layer.pos_embedding_col
        elif isinstance(layer, RegisterTokens):
            variables["registers"] = layer.registers
        elif isinstance(layer, MultiheadAttentionPooling):
            variables.update({f"MAPHead_0/{k}": v for k, v in layer.official_variables().items()})
        elif isinstance(layer, ResidualUnit):
            prefix = layer.name.replace("_unit", "/unit") + "/"  # block1_unit1 -> block1/unit1/
            for part in ("1", "2", "3", "_proj"):
                if part == "_proj" and not layer.needs_projection:
                    continue
                conv, norm = getattr(layer, f"conv{part}"), getattr(layer, f"gn{part}")
                variables[f"{prefix}conv{part}/kernel"] = conv.kernel
                variables[f"{prefix}gn{part}/scale"] = norm.gamma
                variables[f"{prefix}gn{part}/bias"] = norm.beta
        elif layer.name == "conv_root":
            variables["conv_root/kernel"] = layer.kernel
        elif layer.name in ("gn_root", "encoder_norm", "fc_norm"):
            prefix = "Transformer/encoder_norm" if layer.name == "encoder_norm" else layer.name
            variables[f"{prefix}/scale"] = layer.gamma
            variables[f"{prefix}/bias"] = layer.beta
        elif layer.name in ("pre_logits", "head"):
            variables[f"{layer.name}/kernel"] = layer.kernel
            variables[f"{layer.name}/bias"] = layer.bias
    for i, block in enumerate(blocks):
        variables.update(_block_variables(block, f"Transformer/encoderblock_{i}/"))
    return variables


def official_arrays(model):
    """The model's weights as NumPy arrays under official checkpoint keys."""
    return {key: keras.ops.convert_to_numpy(v) for key, v in official_variables(model).items()}


def save_npz(model, path):
    """Writes `model` as an `.npz` in the official layout, which `ViT(weights=path)` and the
    official tools read (float32, keys joined with '/')."""
    np.savez(path, **official_arrays(model))
    return path


def _block_variables(block, prefix):
    attention = block.attention
    variables = {
        f"{prefix}LayerNorm_0/scale": block.layer_norm_0.gamma,
        f"{prefix}LayerNorm_0/bias": block.layer_norm_0.beta,
        f"{prefix}LayerNorm_2/scale": block.layer_norm_2.gamma,
        f"{prefix}LayerNorm_2/bias": block.layer_norm_2.beta,
        f"{prefix}MlpBlock_3/Dense_0/kernel": block.mlp.dense_0.kernel,
        f"{prefix}MlpBlock_3/Dense_0/bias": block.mlp.dense_0.bias,
        f"{prefix}MlpBlock_3/Dense_1/kernel": block.mlp.dense_1.kernel,
        f"{prefix}MlpBlock_3/Dense_1/bias": block.mlp.dense_1.bias,
    }
    mha = f"{prefix}MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value", "out"):
        variables[f"{mha}{name}/kernel"] = getattr(attention, f"{name}_kernel")
        variables[f"{mha}{name}/bias"] = getattr(attention, f"{name}_bias")
    if attention.relative_position:
        variables[f"{mha}relative_embedding"] = attention.relative_embedding
    if getattr(block, "layer_scale_init_value", None) is not None:
        variables[f"{prefix}LayerScale_1/scale"] = block.layer_scale_1.scale
        variables[f"{prefix}LayerScale_3/scale"] = block.layer_scale_3.scale
    return variables


# --------------------------------------------------------------------------- files -> keys


def read_npz(path):
    """Reads an official or big_vision `.npz` into a dict in the official key layout."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            params = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except Exception as error:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ValueError(f"Cannot read {path} as a .npz checkpoint (corrupt or truncated?): {error}")
    return normalize_keys(params, source=str(path))


# big_vision's Linen names -> the official (pre-Linen counter) names inside a block.
_BIG_VISION_BLOCK_NAMES = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def normalize_keys(params, source="checkpoint"):
    """Brings big_vision names (optional `params/` prefix, Linen counters, top-level
    `pos_embedding`, scanned `encoderblock` stacks) to the official layout."""
    if any(k.removeprefix("params/").startswith("img/") for k in params):
        # A two-tower (SigLIP, LiT) big_vision file: the image tower, without the text tower.
        params = {k.removeprefix("params/").removeprefix("img/"): v for k, v in params.items()
                  if k.removeprefix("params/").startswith("img/")}
    out = {}
    for key, value in params.items():
        key = key.removeprefix("params/")
        if key == "pos_embedding":
            key = POS_EMBED_KEY
        parts = key.split("/")
        if len(parts) > 2 and parts[0] == "Transformer" and parts[1].startswith("encoderblock"):
            parts[2] = _BIG_VISION_BLOCK_NAMES.get(parts[2], parts[2]) if _is_linen(params) else parts[2]
            if parts[1] == "encoderblock":  # scanned layers: leading axis is the depth
                for i, layer_value in enumerate(value):
                    out["/".join(["Transformer", f"encoderblock_{i}"] + parts[2:])] = layer_value
                continue
        out["/".join(parts)] = value
    pos = out.get(POS_EMBED_KEY)
    if "pos_embedding" in {k.removeprefix("params/") for k in params} and "cls" in out \
            and pos is not None and pos.ndim == 3 and _is_square(pos.shape[1]):
        # big_vision adds its (1, h*w, D) position embedding *before* prepending the class
        # token, which gets none: the same function as the official layout with a zero
        # class-token row. (A square token count means no class row is stored.)
        out[POS_EMBED_KEY] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    if "embedding/kernel" not in out:
        shown = ", ".join(sorted(params)[:8])
        raise ValueError(
            f"{source} is not a ViT checkpoint: it has no 'embedding/kernel' "
            f"(first keys: {shown or 'none'})."
        )
    return out


def _is_square(n):
    side = int(round(np.sqrt(n)))
    return side * side == n


def _is_linen(params):
    return any("MultiHeadDotProductAttention_0" in key for key in params)


# --------------------------------------------------------------------------- keys -> model


def resample_position_embedding(posemb, grid, num_prefix_tokens, method="official"):
    """Resamples a (1, prefix + g*g, D) position embedding to a (rows, cols) grid.

    Args:
        posemb: the checkpoint's embedding; its grid part must be square.
        grid: the target (rows, cols).
        num_prefix_tokens: 1 when a class-token row leads (it is kept as is), else 0.
        method: `"official"`: `scipy.ndimage.zoom(order=1)`, i.e. bilinear with aligned
            corners, as `vit_jax/checkpoint.py` does; `"bicubic"`: timm's bicubic with
            antialiasing (see `keras_vit.resample`; HF's Dinov2WithRegisters does the same);
            `"bicubic_no_antialias"`: torch bicubic to the new size without antialiasing, as
            HF's Dinov2, SigLIP and ViTMAE and MAE's and DeiT's fine-tuning scripts;
            `"dinov2"`: the original DINOv2 code's, the same kernel with the scale factor
            (g_new + 0.1) / g_old per axis (`interpolate_offset=0.1`, which shifts the
            sampling positions slightly).
    """
    prefix, old = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    side = int(round(np.sqrt(len(old))))
    if side * side != len(old):
        raise ValueError(
            f"Cannot resample a position embedding of {len(old)} patches: not a square grid."
        )
    old = old.reshape(side, side, -1)
    if method == "official":
        zoom = (grid[0] / side, grid[1] / side, 1)
        new = scipy.ndimage.zoom(old.astype(np.float64), zoom, order=1)
    elif method == "bicubic":
        from keras_vit.resample import bicubic_resize  # noqa: PLC0415 (optional path)

        new = bicubic_resize(old.astype(np.float64), grid)
    elif method in ("bicubic_no_antialias", "dinov2"):
        from keras_vit.resample import plain_bicubic_resize  # noqa: PLC0415 (optional path)

        scale = None if method != "dinov2" else tuple((g + 0.1) / side for g in grid)
        new = plain_bicubic_resize(old.astype(np.float64), grid, scale_factor=scale)
    else:
        raise ValueError(f"Unknown pos_embed_resample {method!r}; expected one of "
                         f"{', '.join(map(repr, POS_EMBED_RESAMPLE))}.")
    new = new.reshape(1, grid[0] * grid[1], -1).astype(posemb.dtype)
    return np.concatenate([prefix, new], axis=1)


def resample_position_table(table, length, method="official"):
    """Resamples a (n, D/2) table of the 2-D embedding (`..._row` or `..._col`) to `length`
    rows, as `resample_position_embedding` resamples the matching axis of a grid."""
    from keras_vit import resample  # noqa: PLC0415 (optional path)

    table = np.asarray(table)
    old = len(table)
    if method == "official":
        new = scipy.ndimage.zoom(table.astype(np.float64), (length / old, 1), order=1)
    elif method == "bicubic":
        new = resample.resize_weights(old, length) @ table.astype(np.float64)
    elif method in ("bicubic_no_antialias", "dinov2"):
        scale = (length + 0.1) / old if method == "dinov2" else None
        new = resample.plain_bicubic_weights(old, length, scale) @ table.astype(np.float64)
    else:
        raise ValueError(f"Unknown pos_embed_resample {method!r}; expected one of "
                         f"{', '.join(map(repr, POS_EMBED_RESAMPLE))}.")
    return new.astype(table.dtype)


def assign_checkpoint(model, params, source="checkpoint", pos_embed_resample="official",
                      skip_head=False, patch_embed_resample=None):
    """Writes `params` (official layout) into `model`, all or nothing.

    Args:
        model: a model built by `keras_vit.ViT`.
        params: dict of official keys to arrays.
        source: a name for error messages (usually the file path).
        pos_embed_resample: how to resample the position embedding when the grid differs.
        skip_head: leave `head` untouched (a new head for fine-tuning).
        patch_embed_resample: how to fit a checkpoint's `embedding/kernel` of another patch
            size: None (refuse, naming the option), `"pi"` or `"pi_bicubic"` (FlexiViT's
            PI-resize for bilinear or antialiased-bicubic patch resizing; see
            `keras_vit.patch_resize`).

    Raises:
        ValueError: naming every missing, unexpected or mis-shaped key; the model is unchanged.
    """
    targets = official_variables(model)
    if skip_head:
        targets = {k: v for k, v in targets.items() if not k.startswith("head/")}
    has_top = any(k.startswith(_HEAD_PREFIXES) for k in targets)
    ignored = ()
    if not has_top or skip_head:
        # Without a top (or with a fresh head), the checkpoint's classifier is not wanted.
        ignored = ("head/",) if has_top else _HEAD_PREFIXES
    if not any(layer.name == "head" for layer in model.layers):
        # A headless model without pooled output leaves the pooling's own weights too.
        ignored += tuple(p for p in _POOLING_PREFIXES if not any(k.startswith(p) for k in targets))
    encoder = next(layer for layer in model.layers if isinstance(layer, PatchEncoder))
    params = adapt_class_position(params, encoder)
    if encoder.position_embedding == "sincos_2d" and POS_EMBED_KEY not in params:
        targets.pop(POS_EMBED_KEY)  # a fixed table the file need not store: keep the computed one
    values, problems = {}, []
    for key, variable in targets.items():
        if key not in params:
            problems.append(f"missing key '{key}' (model expects shape {tuple(variable.shape)})")
            continue
        try:
            values[key] = _fit(key, np.asarray(params[key]), variable, encoder, pos_embed_resample,
                               patch_embed_resample)
        except ValueError as error:
            problems.append(str(error))
    extra = sorted(k for k in params if k not in targets and not k.startswith(ignored))
    for key in extra:
        problems.append(f"unexpected key '{key}' with shape {tuple(np.shape(params[key]))}"
                        + _extra_hint(key))
    if problems:
        listed = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(
            f"{source} does not fit model '{model.name}' ({len(problems)} problem(s); "
            f"no weights were changed):\n  - {listed}{more}"
        )
    for key, value in values.items():
        targets[key].assign(value)


def _fit(key, value, variable, encoder, pos_embed_resample, patch_embed_resample=None):
    """The checkpoint array reshaped/resampled for `variable`, or a ValueError naming both."""
    want = tuple(variable.shape)
    if value.shape == want:
        return value
    if key == "embedding/kernel" and value.ndim == 4 and value.shape[2:] == want[2:]:
        from keras_vit.patch_resize import (  # noqa: PLC0415 (optional path)
            PATCH_EMBED_RESAMPLE, pi_resize_patch_embedding)

        if patch_embed_resample is None:
            raise ValueError(
                f"'{key}' has patch size {value.shape[:2]} in the checkpoint, the model "
                f"{want[:2]} (shapes {value.shape} vs {want}); pass "
                "patch_embed_resample='pi' to resample it (FlexiViT's PI-resize)"
            )
        if patch_embed_resample not in PATCH_EMBED_RESAMPLE:
            raise ValueError(
                f"Unknown patch_embed_resample {patch_embed_resample!r}; expected None or one "
                f"of {', '.join(map(repr, PATCH_EMBED_RESAMPLE))}"
            )
        return pi_resize_patch_embedding(value, want[:2],
                                         PATCH_EMBED_RESAMPLE[patch_embed_resample])
    if key == "embedding/kernel" and value.ndim == 4 and value.shape[:2] == want[:2] \
            and value.shape[3] == want[3]:
        raise ValueError(
            f"'{key}': the checkpoint takes {value.shape[2]}-channel inputs but the model "
            f"takes {want[2]} (shapes {value.shape} vs {want})"
        )
    if key == POS_EMBED_KEY and value.ndim == 3 and value.shape[2] == want[2]:
        try:
            return resample_position_embedding(
                value, encoder.grid_size, position_prefix_rows(encoder), pos_embed_resample
            )
        except ValueError as error:
            raise ValueError(
                f"'{key}' has shape {value.shape} in the checkpoint, model expects {want}, "
                f"and cannot be resampled: {error} (a class-token/GAP mismatch?)"
            ) from None
    if key in (POS_EMBED_KEY + "_row", POS_EMBED_KEY + "_col") and value.ndim == 2 \
            and value.shape[1] == want[1]:
        return resample_position_table(value, want[0], pos_embed_resample)
    squeezed = tuple(s for s in value.shape if s != 1)
    if value.size == np.prod(want) and squeezed == tuple(s for s in want if s != 1):
        return value.reshape(want)  # GroupNorm parameters are stored as (1, 1, 1, C)
    raise ValueError(f"'{key}' has shape {value.shape} in the checkpoint, model expects {want}")


def position_prefix_rows(encoder):
    """Rows of a `PatchEncoder`'s 1-D position embedding before the patches' (0 or 1)."""
    return int(encoder.use_class_token and not getattr(encoder, "no_embed_class", False))


def prefix_rows_of(posemb):
    """0 or 1 rows before a square grid in a checkpoint's (1, T, D) position embedding, or
    None when neither T nor T - 1 is a square."""
    tokens = int(np.shape(posemb)[1])
    if _is_square(tokens) and tokens > 1:
        return 0
    if _is_square(tokens - 1):
        return 1
    return None


def adapt_class_position(params, encoder):
    """`params` with the class token's position row moved to where `encoder` keeps it.

    A class row of zeros is the same function as none (`no_embed_class`), and a class row p
    is the same as none with the class token x_class + p (timm folds it so for DINOv2 with
    registers). Both directions are exact; other parameters are returned as they are.
    """
    posemb = params.get(POS_EMBED_KEY)
    if posemb is None or np.ndim(posemb) != 3 or not encoder.use_class_token \
            or encoder.position_embedding not in ("learned_1d", "sincos_2d"):
        return params
    if np.shape(posemb)[1] == encoder.pos_embedding.shape[1]:
        return params  # the model's own layout (and grid)
    have, want = prefix_rows_of(posemb), position_prefix_rows(encoder)
    if have is None or have == want or "cls" not in params:
        return params
    params = dict(params)
    posemb = np.asarray(posemb)
    if want:  # the file has no class row: a zero one
        params[POS_EMBED_KEY] = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
    else:  # fold the file's class row into the class token
        params["cls"] = np.asarray(params["cls"]) + posemb[:, :1].reshape(np.shape(params["cls"]))
        params[POS_EMBED_KEY] = posemb[:, 1:]
    return params


_POOLING_PREFIXES = ("MAPHead_0/", "fc_norm/")
_OPTION_HINTS = {
    "registers": " (the checkpoint has register tokens: build with num_register_tokens=R)",
    "LayerScale_": " (the checkpoint has LayerScale: build with layer_scale_init_value=...)",
    "MAPHead_0/": " (the checkpoint has an attention-pooling head: build with classifier='map')",
    "fc_norm/": " (the checkpoint normalises after pooling: build with fc_norm=True)",
}


def _extra_hint(key):
    for part, hint in _OPTION_HINTS.items():
        if part in key:
            return hint
    if key == "cls":
        return " (the checkpoint has a class token: build with classifier='token')"
    if key.startswith("pre_logits/"):
        return " (the checkpoint has pre_logits: pass its representation_size)"
    if key.startswith(("block", "conv_root", "gn_root")):
        return " (a hybrid checkpoint: build with resnet_num_layers)"
    if "encoderblock_" in key:
        return " (the checkpoint is deeper than the model: check num_layers)"
    return ""


def load_weights(model, weights, pos_embed_resample="official", skip_head=False,
                 patch_embed_resample=None):
    """Loads `weights` (an official/big_vision `.npz` or a Keras `.weights.h5`) into `model`.

    A failed load raises and leaves every weight as it was.
    """
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    if path.endswith(".weights.h5"):
        _load_keras_weights(model, path)
        return model
    if not path.endswith(".npz"):
        raise ValueError(f"Cannot tell the format of {path!r}: expected a .npz or .weights.h5 file.")
    params = read_npz(path)
    assign_checkpoint(model, params, source=path, pos_embed_resample=pos_embed_resample,
                      skip_head=skip_head, patch_embed_resample=patch_embed_resample)
    return model


def _load_keras_weights(model, path):
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    try:
        model.load_weights(path)
    except Exception as error:
        for variable, value in zip(model.weights, before):
            variable.assign(value)
        raise ValueError(f"Cannot load {path} into model '{model.name}': {error}") from error
