"""`weights=` for `keras_vit.ViT` and the variants, and `keras_vit.load_weights`.

`weights` may be:

- a registry name (`"imagenet"`, `"imagenet21k"`, `"augreg-in21k-ft-in1k-224"`, ...; see
  `keras_vit.list_weights(variant)`), resolved for the variant whose architecture the model
  has, downloaded and verified (`keras_vit.weights.download`);
- a path: official / big_vision `.npz`, HF transformers directory or `.safetensors` / `.bin`,
  timm `.safetensors` / `.bin` / `.pth`, or a Keras `.weights.h5`.

The `keras.applications` rules, with one addition for fine-tuning:

- `include_top=True` loads the checkpoint's classifier; `classes` must then equal its width,
  else a ValueError (as Keras raises for `weights="imagenet"` with `classes != 1000`).
- `head="new"` (with `include_top=True`) keeps everything but the classifier: the model gets
  the paper's zero-initialised head with `classes` outputs (and no `pre_logits`, as in the
  paper's fine-tuning, unless `representation_size` is given).
- The paper's ImageNet-21k files have a zeroed head (and `pre_logits`): using them with
  `include_top=True` and no `head="new"` raises, naming the alternatives.
- When no `image_size` / `input_shape` / `input_tensor` is given, the model is built at the
  checkpoint's native resolution (384 for the 384 px fine-tuned files; read from the
  position embedding for files); any other size resamples the position embedding. A model of
  any image size (`input_shape=(None, None, 3)`) stores the embedding at that resolution too.
- `gelu_approximate` left as None takes the GELU the weights were trained with (tanh for the
  official/AugReg/big_vision files, exact erf for HF and timm); an explicit different choice
  warns. `pos_embed_resample` left as None takes the source's algorithm ("official" scipy
  zoom; "bicubic" antialiased for timm files).
- A checkpoint of another patch size loads with `patch_embed_resample="pi"` (FlexiViT's
  PI-resize of `embedding/kernel`, `keras_vit.patch_resize`); the model's default
  resolution is then the checkpoint's own (the same image, cut into more or fewer patches).
"""

import dataclasses
import math
import os
import warnings

import numpy as np

from keras_vit import checkpoint as _checkpoint
from keras_vit.formats import Checkpoint, read_checkpoint
from keras_vit.weights import registry
from keras_vit.weights.download import fetch

HEAD_CHOICES = (None, "checkpoint", "new")
_PATH_SUFFIXES = (".npz", ".h5", ".safetensors", ".bin", ".pth", ".pt", ".json")
_ARCH_KEYS = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
              "resnet_num_layers", "resnet_width_factor")


def cache_dir_default():
    """`$KERAS_VIT_CACHE_DIR`, else Keras' own cache root (`$KERAS_HOME` or `~/.keras`)."""
    return os.environ.get("KERAS_VIT_CACHE_DIR") or None


# --------------------------------------------------------------------------- architecture


def _normalize_arch(arch):
    out = dict(arch)
    patch = out.get("patch_size")
    if isinstance(patch, (tuple, list)) and len(set(patch)) == 1:
        out["patch_size"] = int(patch[0])
    layers = out.get("resnet_num_layers")
    out["resnet_num_layers"] = None if layers is None else tuple(layers)
    out["resnet_width_factor"] = out.get("resnet_width_factor", 1) if layers is not None else 1
    return {k: out.get(k) for k in _ARCH_KEYS}


def _options(arch):
    """The later ViTs' options that tell a family's variant from a paper variant's size."""
    return (arch.get("num_register_tokens") or 0, arch.get("layer_scale_init_value") is not None,
            bool(arch.get("no_embed_class")), arch.get("classifier") == "map",
            arch.get("position_embedding") == "sincos_2d")


def match_variant(arch):
    """The `VARIANTS` or `FAMILY_VARIANTS` name with exactly this architecture (size and the
    later ViTs' options, which are off in `arch` unless given), or None."""
    from keras_vit.architectures import FAMILY_VARIANTS, VARIANTS  # noqa: PLC0415

    size, options = _normalize_arch(arch), _options(arch)
    for name, config in {**VARIANTS, **FAMILY_VARIANTS}.items():
        if _normalize_arch(config) == size and _options(config) == options:
            return name
    return None


def model_options(model):
    """The later ViTs' options of a model built by `keras_vit.ViT`, as `ViT` arguments
    (those `match_variant` compares)."""
    from keras_vit.layers.attention_pooling import MultiheadAttentionPooling  # noqa: PLC0415
    from keras_vit.layers.patch_encoder import PatchEncoder  # noqa: PLC0415
    from keras_vit.layers.register_tokens import RegisterTokens  # noqa: PLC0415
    from keras_vit.layers.transformer_block import TransformerBlock  # noqa: PLC0415

    encoder = next(l for l in model.layers if isinstance(l, PatchEncoder))
    block = next(l for l in model.layers if isinstance(l, TransformerBlock))
    registers = next((l for l in model.layers if isinstance(l, RegisterTokens)), None)
    options = dict(num_register_tokens=registers.num_tokens if registers else 0,
                   layer_scale_init_value=block.layer_scale_init_value,
                   no_embed_class=encoder.no_embed_class,
                   position_embedding=encoder.position_embedding)
    if any(isinstance(l, MultiheadAttentionPooling) for l in model.layers):
        options["classifier"] = "map"
    return options


def model_architecture(model):
    """Reads the architecture arguments back from a model built by `keras_vit.ViT`."""
    from keras_vit.layers.patch_encoder import PatchEncoder  # noqa: PLC0415
    from keras_vit.layers.resnet import ResidualUnit  # noqa: PLC0415
    from keras_vit.layers.transformer_block import TransformerBlock  # noqa: PLC0415

    encoder = next((l for l in model.layers if isinstance(l, PatchEncoder)), None)
    blocks = [l for l in model.layers if isinstance(l, TransformerBlock)]
    if encoder is None or not blocks:
        raise ValueError(f"Model '{model.name}' was not built by keras_vit.ViT (no PatchEncoder).")
    units = {}
    width = None
    for layer in model.layers:
        if isinstance(layer, ResidualUnit):
            stage = int(layer.name.split("_")[0].removeprefix("block"))
            units[stage] = units.get(stage, 0) + 1
        elif layer.name == "conv_root":
            width = layer.filters
    return {
        "patch_size": tuple(encoder.patch_size),
        "hidden_size": encoder.hidden_size,
        "num_layers": len(blocks),
        "num_heads": blocks[0].num_heads,
        "mlp_dim": blocks[0].mlp_dim,
        "resnet_num_layers": tuple(units[s] for s in sorted(units)) if width else None,
        "resnet_width_factor": width / 64 if width else 1,
    }


def _stem_stride(arch):
    layers = arch.get("resnet_num_layers")
    return 1 if layers is None else 2 ** (2 + max(len(layers) - 1, 0))


def native_image_size(ckpt, arch, classifier="token"):
    """The square input size the checkpoint's position embedding was trained at (with the
    checkpoint's own patch size, which may differ from the model's)."""
    tokens = ckpt.num_tokens
    if tokens is None:
        return None
    # Whether a class row leads, from the table itself (square grids): DeiT-III's has none.
    prefix = _checkpoint.prefix_rows_of(ckpt.params[_checkpoint.POS_EMBED_KEY])
    side = math.isqrt(tokens - (int(classifier == "token") if prefix is None else prefix))
    patch = arch["patch_size"]
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    kernel = (ckpt.params or {}).get("embedding/kernel")
    if kernel is not None and np.ndim(kernel) == 4:
        patch = int(np.shape(kernel)[0])
    return side * patch * _stem_stride(arch)


def check_patch_embed_resample(patch_embed_resample):
    from keras_vit.patch_resize import PATCH_EMBED_RESAMPLE  # noqa: PLC0415

    if patch_embed_resample is not None and patch_embed_resample not in PATCH_EMBED_RESAMPLE:
        raise ValueError(f"Unknown patch_embed_resample {patch_embed_resample!r}; expected None "
                         f"or one of {', '.join(map(repr, PATCH_EMBED_RESAMPLE))}.")


# --------------------------------------------------------------------------- resolving


def looks_like_path(weights):
    """Whether a `weights=` string is meant as a path (a separator, a file suffix, a leading
    dot) rather than a registry name."""
    text = os.fspath(weights)
    return os.sep in text or text.endswith(_PATH_SUFFIXES) or text.startswith(".")


def resolve(weights, arch, cache_dir=None):
    """(Checkpoint, WeightsEntry or None) for a registry name, a `WeightsEntry` or a path.

    An entry is taken as it is: a variant's constructor passes its own entry when the
    architecture differs from the variant's (another patch size, FlexiViT), where matching the
    architecture would name another variant's weights (B/16 at /8 is B/8's size)."""
    if isinstance(weights, registry.WeightsEntry):
        return None, weights
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be None, a registry name, a WeightsEntry or a path; "
                        f"got {weights!r}.")
    text = os.fspath(weights)
    if not looks_like_path(text):
        # A registry name wins over a same-named file or folder in the working directory
        # (an "imagenet" data folder, say); write "./imagenet" to mean the path.
        variant = match_variant(arch)
        if variant is not None and registry.is_weights_name(variant, text):
            return None, registry.get_weights_entry(variant, text)
    if os.path.exists(text):
        return read_checkpoint(text, num_heads=arch["num_heads"]), None
    if looks_like_path(text):
        raise ValueError(f"Weights file {text!r} does not exist.")
    return None, registry_entry(text, arch)


def registry_entry(name, arch):
    variant = match_variant(arch)
    if variant is None:
        raise ValueError(
            f"weights={name!r} is not a file, and registry weights exist only for the "
            f"standard variants ({', '.join(registry.REGISTRY)}) and the later ViTs "
            f"({', '.join(registry.FAMILY_REGISTRY)}); this architecture "
            f"({_normalize_arch(arch)}) is none of them. Use a variant constructor such as "
            "keras_vit.ViTB16 or keras_vit.DINOv2S14, or pass a checkpoint path."
        )
    return registry.get_weights_entry(variant, name)


def fetch_entry(entry, cache_dir=None):
    """Downloads a registry file (checked against its hash where the registry has one) and
    reads it; a cached file that does not read is deleted."""
    from keras_vit.architectures import FAMILY_VARIANTS, VARIANTS  # noqa: PLC0415 (plain data)
    from keras_vit.weights.download import integrity_check  # noqa: PLC0415

    path = fetch(entry.url, entry.filename, sha256=entry.sha256,
                 cache_dir=cache_dir or cache_dir_default(), check=integrity_check(entry.filename))
    heads = {**VARIANTS, **FAMILY_VARIANTS}[entry.variant]["num_heads"]
    try:
        return read_checkpoint(path, num_heads=heads)
    except ValueError as error:
        os.remove(path)
        raise ValueError(
            f"The cached file for weights '{entry.name}' ({path}) could not be read and was "
            f"deleted; calling again downloads it afresh. ({error})"
        ) from None


# --------------------------------------------------------------------------- checks


_BUILD_ADVICE = ("Pass include_top=False for features, or include_top=True, head='new', "
                 "classes=K for a fresh zero-initialised head (fine-tuning)")
_LOAD_ADVICE = ("Build the model with include_top=False for features, or call "
                "load_weights(..., head='new') to keep the model's own head (fine-tuning)")


def _head_problem(ckpt_classes, zero_head, classes, source, entry=None, options=_BUILD_ADVICE,
                  shapes=""):
    """The keras.applications-style error for using a checkpoint's head, or None."""
    if zero_head:
        extra = ""
        if entry is not None and entry.variant in registry.ALIASES \
                and "imagenet" in registry.ALIASES[entry.variant]:
            extra = " For an ImageNet-1k classifier use weights='imagenet'."
        return (f"{source} is an ImageNet-21k pre-training checkpoint whose classification "
                f"head is zeroed (it only served as a starting point for fine-tuning) and "
                f"cannot be used as a classifier. {options}.{extra}")
    if ckpt_classes is None:
        return f"{source} has no classification head. {options}."
    if classes != ckpt_classes:
        if options is _LOAD_ADVICE:
            return (f"{source} has a {ckpt_classes}-class head but the model's head has "
                    f"{classes} classes{shapes}. {options}.")
        return (f"{source} has a {ckpt_classes}-class head, so with include_top=True "
                f"`classes` must be {ckpt_classes}; received classes={classes}. {options}.")
    return None


def _check_gelu(requested, trained, source):
    if trained is None or requested is None or requested == trained:
        return
    names = {True: "tanh-approximate", False: "exact (erf)"}
    warnings.warn(
        f"{source} was trained with {names[trained]} GELU but the model uses "
        f"{names[requested]} GELU (gelu_approximate={requested}); outputs will differ slightly "
        f"from the original. Pass gelu_approximate={trained} to match it.",
        stacklevel=3,
    )


def _check_head_arg(head, include_top):
    if head not in HEAD_CHOICES:
        raise ValueError(f"Unknown head {head!r}; expected None, 'checkpoint' or 'new'.")
    if head == "new" and not include_top:
        raise ValueError("head='new' adds a fresh classifier and needs include_top=True.")


def _source_name(ckpt, entry):
    if entry is not None:
        return f"weights '{entry.name}' ({entry.path})"
    return f"checkpoint {ckpt.path}"


# --------------------------------------------------------------------------- ViT(weights=)


@dataclasses.dataclass
class WeightsPlan:
    """What `ViT(weights=...)` decided before building, and how to load afterwards."""

    checkpoint: Checkpoint
    entry: object
    image_size: object
    representation_size: int
    gelu_approximate: bool
    pos_embed_resample: str
    new_head: bool
    patch_embed_resample: str = None
    input_normalization: object = None

    def load(self, model):
        ckpt = self.checkpoint
        if ckpt.format == "keras":
            _checkpoint.load_weights(model, ckpt.path)
            return model
        _assign(model, ckpt, self.pos_embed_resample, self.new_head,
                _source_name(ckpt, self.entry), self.patch_embed_resample)
        return model


def plan_weights(weights, arch, image_size=None, input_shape=None, input_tensor=None,
                 include_top=True, classes=1000, head=None, representation_size=None,
                 gelu_approximate=None, pos_embed_resample=None, classifier="token",
                 cache_dir=None, patch_embed_resample=None):
    """Resolves `weights` and the build arguments it implies (see the module docstring)."""
    _check_head_arg(head, include_top)
    check_patch_embed_resample(patch_embed_resample)
    new_head = head == "new"
    ckpt, entry = resolve(weights, arch, cache_dir)
    if entry is not None:
        name = weights if isinstance(weights, str) else entry.name  # as the user wrote it
        source = f"weights '{name}' ({entry.path})"
        if include_top and not new_head:  # fail before a multi-GB download
            problem = _head_problem(entry.num_classes, not entry.head_usable, classes, source, entry)
            if problem:
                raise ValueError(problem)
        ckpt = fetch_entry(entry, cache_dir)
    source = _source_name(ckpt, entry)

    if ckpt.format == "keras":
        if new_head:
            raise ValueError("head='new' is not available for Keras .weights.h5 files (they "
                             "must match the model exactly); load them into the model they "
                             "were saved from, then replace its head.")
        return WeightsPlan(ckpt, None, image_size if image_size is not None else 224,
                           representation_size,
                           True if gelu_approximate is None else gelu_approximate,
                           pos_embed_resample or "official", False)

    if include_top and not new_head:
        problem = _head_problem(ckpt.num_classes, ckpt.head_is_zero, classes, source, entry)
        if problem:
            raise ValueError(problem)
        if representation_size is None:
            representation_size = ckpt.representation_size
    if image_size is None and not _fixed_size(input_shape, input_tensor):
        # keras.applications style: the weights' own input size unless told otherwise (for a
        # model of any image size: the grid its position embedding is stored at).
        image_size = (entry.resolution if entry is not None else None) \
            or native_image_size(ckpt, arch, classifier)
    if image_size is None:
        image_size = 224
    _check_gelu(gelu_approximate, ckpt.gelu_approximate, source)
    if gelu_approximate is None:
        gelu_approximate = True if ckpt.gelu_approximate is None else ckpt.gelu_approximate
    normalization = ckpt.input_normalization
    if entry is not None and hasattr(entry, "normalization"):
        normalization = entry.normalization
    return WeightsPlan(ckpt, entry, image_size, representation_size, gelu_approximate,
                       pos_embed_resample or ckpt.pos_embed_resample, new_head,
                       patch_embed_resample, normalization)


def _fixed_size(input_shape, input_tensor):
    """Whether the input's height and width are given (not None: any size)."""
    shape = input_shape if input_shape is not None else getattr(input_tensor, "shape", None)
    return shape is not None and None not in tuple(shape)[-3:-1]


# --------------------------------------------------------------------------- load_weights


def _assign(model, ckpt, pos_embed_resample, new_head, source, patch_embed_resample=None):
    params = dict(ckpt.params)
    names = {layer.name for layer in model.layers}
    if "pre_logits" not in names and ("head" not in names or new_head):
        params = {k: v for k, v in params.items() if not k.startswith("pre_logits/")}
    _checkpoint.assign_checkpoint(model, params, source=source,
                                  pos_embed_resample=pos_embed_resample,
                                  skip_head=new_head and "head" in names,
                                  patch_embed_resample=patch_embed_resample)


def load_weights(model, weights, pos_embed_resample=None, head=None, cache_dir=None,
                 patch_embed_resample=None):
    """Loads a checkpoint (path or registry name) into an existing `keras_vit` model.

    Args:
        model: a model built by `keras_vit.ViT` or a variant constructor.
        weights: a path (official / big_vision `.npz`, HF directory or file, timm file, Keras
            `.weights.h5`) or a registry name for the model's variant (`"imagenet"`, ...).
        pos_embed_resample: one of `keras_vit.checkpoint.POS_EMBED_RESAMPLE` ("official",
            "bicubic", ...); None takes the source's own algorithm.
        head: None / "checkpoint" (load the classifier; its width must match the model's) or
            "new" (leave the model's head as it is).
        cache_dir: download cache root for registry names.
        patch_embed_resample: None (a checkpoint of another patch size is refused), `"pi"`
            or `"pi_bicubic"`: FlexiViT's PI-resize of the patch embedding for bilinear
            (big_vision) or antialiased bicubic (timm) patch resizing.

    Returns:
        The model. A failed load raises and leaves every weight unchanged.
    """
    check_patch_embed_resample(patch_embed_resample)
    arch = {**model_architecture(model), **model_options(model)}
    names = {layer.name for layer in model.layers}
    has_top = "head" in names
    if head not in HEAD_CHOICES:
        raise ValueError(f"Unknown head {head!r}; expected None, 'checkpoint' or 'new'.")
    new_head = head == "new"
    ckpt, entry = resolve(weights, arch, cache_dir)
    if entry is not None:
        ckpt = fetch_entry(entry, cache_dir)
    source = _source_name(ckpt, entry)
    if ckpt.format == "keras":
        _checkpoint.load_weights(model, ckpt.path)
        return model
    if has_top and not new_head:
        head_layer = model.get_layer("head")
        classes = int(head_layer.units)
        shapes = ""
        if "head/kernel" in ckpt.params:
            shapes = (f" ('head/kernel' has shape {tuple(np.shape(ckpt.params['head/kernel']))} "
                      f"in the checkpoint, model expects {tuple(head_layer.kernel.shape)})")
        problem = _head_problem(ckpt.num_classes, ckpt.head_is_zero, classes, source, entry,
                                options=_LOAD_ADVICE, shapes=shapes)
        if problem:
            raise ValueError(problem)
    blocks = [l for l in model.layers if hasattr(l, "gelu_approximate")]
    if blocks:
        _check_gelu(blocks[0].gelu_approximate, ckpt.gelu_approximate, source)
    _assign(model, ckpt, pos_embed_resample or ckpt.pos_embed_resample, new_head, source,
            patch_embed_resample)
    return model


def convert_to_official(weights, num_heads):
    """The official-layout arrays of any supported checkpoint file (for tools / inspection)."""
    ckpt = read_checkpoint(weights, num_heads=num_heads)
    if ckpt.params is None:
        raise ValueError(f"{weights} is a Keras weights file; it has no official-layout arrays.")
    return {k: np.asarray(v) for k, v in ckpt.params.items()}
