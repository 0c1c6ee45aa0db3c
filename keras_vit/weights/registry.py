"""The published checkpoints of the ViT paper and its AugReg follow-up, by variant and name;
and the later ViTs' (DINOv2, SigLIP, MAE, DeiT-III) on the Hugging Face hub (`HubWeightsEntry`,
`FAMILY_REGISTRY`, at the end; docs/later_vits.md).

Sources (all files live under https://storage.googleapis.com/vit_models/):

- `imagenet21k/` and `imagenet21k+imagenet2012/`: the paper's release (README of
  google-research/vision_transformer). The ImageNet-21k files carry `pre_logits` and a
  *zeroed* 21843-class head (fine-tuning starting points, not classifiers); the fine-tuned
  files carry a 1000-class head, no `pre_logits`, at 384 px unless named `-224`.
- `augreg/`: "How to train your ViT?" (Steiner et al. 2021). `augreg-in21k` and
  `augreg-in21k-ft-in1k-384` are the checkpoints the vision_transformer README recommends
  (best pre-training metrics; its ImageNet top-1 is recorded); `augreg-in21k-ft-in1k-224` and
  `augreg-in1k-*` are the files timm 1.0.31 uses for its `augreg_*` weights (the README names
  none at 224). AugReg ImageNet-21k files have a trained 21843-class head and no `pre_logits`.

No SHA-256 is published for any of these files, so `sha256` is None everywhere: downloads are
then checked for completeness (zip CRCs) rather than against a hash; pass your own hash to
`keras_vit.weights.download_weights(..., sha256=...)` to pin one.

Short names per variant: `"imagenet"` is the ImageNet-1k fine-tuned file with the best
published top-1 (AugReg where it exists); `"imagenet21k"` is the paper's ImageNet-21k file
(`augreg-in21k` for Ti/S, which the paper did not release).
"""

import dataclasses
import os
import re
import urllib.parse

BASE_URL = "https://storage.googleapis.com/vit_models/"

PREPROCESSING = (
    "RGB in [0, 255] scaled to [-1, 1] (x / 127.5 - 1: keras_vit.preprocess_input, or the "
    "model's own Rescaling with include_preprocessing=True); images resized to {res} x {res}"
)


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint.

    Attributes:
        variant: the `keras_vit` constructor it fits ("ViTB16", ...).
        name: its name for that variant (`weights=name`).
        path: the file's path under `BASE_URL`.
        source: where the file (and its numbers) are documented.
        pretraining: "imagenet21k" or "imagenet2012".
        finetuning: "imagenet2012" or None.
        resolution: native input size in pixels; None where unpublished (then read from the
            file's position embedding).
        num_classes: width of the stored head (21843 or 1000).
        has_pre_logits: whether the file has a `pre_logits` layer (paper's 21k files).
        head_usable: False for zeroed heads (they predict nothing).
        top1: published ImageNet top-1 (%) or None.
        top1_source: where `top1` was published.
        sha256: published SHA-256, or None (none is published).
    """

    variant: str
    name: str
    path: str
    source: str
    pretraining: str
    finetuning: str
    resolution: int
    num_classes: int
    has_pre_logits: bool
    head_usable: bool = True
    top1: float = None
    top1_source: str = None
    sha256: str = None

    @property
    def url(self):
        """Download URL; `$KERAS_VIT_WEIGHTS_URL` replaces `BASE_URL` (for mirrors)."""
        base = os.environ.get("KERAS_VIT_WEIGHTS_URL") or BASE_URL
        return base.rstrip("/") + "/" + urllib.parse.quote(self.path)

    @property
    def filename(self):
        """Its name in the Keras cache (unique across the bucket)."""
        return self.path.replace("/", "_")

    @property
    def preprocessing(self):
        return PREPROCESSING.format(res=self.resolution or "the native resolution")

    @property
    def gelu_approximate(self):
        return True  # every file here was trained by the official JAX code (tanh GELU)


_PAPER = "ViT paper release (google-research/vision_transformer README)"
_PAPER_T5 = "paper Table 5 (ImageNet-21k pre-training, fine-tuned at 384)"
_README_224 = "vision_transformer README ('expected to achieve', -224 models)"
_AUGREG_README = "AugReg, recommended checkpoint (vision_transformer README)"
_AUGREG_TIMM = "AugReg, file used by timm 1.0.31 pretrained cfgs"
_AUGREG_TOP1 = "vision_transformer README, AugReg recommended-checkpoint table"

_ARCH = {  # variant -> (official file stem, AugReg stem)
    "ViTTi16": (None, "Ti_16"), "ViTS16": (None, "S_16"), "ViTS32": (None, "S_32"),
    "ViTB8": ("ViT-B_8", "B_8"), "ViTB16": ("ViT-B_16", "B_16"), "ViTB32": ("ViT-B_32", "B_32"),
    "ViTL16": ("ViT-L_16", "L_16"), "ViTL32": ("ViT-L_32", None), "ViTH14": ("ViT-H_14", None),
    "ViTR50B16": ("R50+ViT-B_16", None),
}

# variant -> (fine-tuned resolution of imagenet21k+imagenet2012/<stem>.npz, its top-1)
_PAPER_FINETUNED = {
    "ViTB16": (384, 83.97), "ViTB32": (384, 81.28), "ViTL16": (384, 85.15),
    "ViTL32": (384, None), "ViTR50B16": (384, None),
    "ViTB8": (None, None),  # resolution not published: read from the file
}
_PAPER_224 = {"ViTB16": 81.2, "ViTL16": 82.7}

# AugReg: variant -> (pre-training run, fine-tune suffix at 384, README top-1)
_AUGREG_RECOMMENDED = {
    "ViTL16": ("L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0", "lr_0.01", 85.59),
    "ViTB16": ("B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "lr_0.03", 85.49),
    "ViTS16": ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "lr_0.03", 83.73),
    "ViTTi16": ("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "lr_0.03", 78.22),
    "ViTB32": ("B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "lr_0.01", 83.59),
    "ViTS32": ("S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0", "lr_0.01", 79.58),
}
# timm's ImageNet-1k fine-tunes at 224 (pre-training run--fine-tuning run).
_AUGREG_TIMM_224 = {
    "ViTTi16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224",
    "ViTS32": "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224",
    "ViTS16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224",
    "ViTB32": "B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224",
    "ViTB16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224",
    "ViTB8": "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224",
    "ViTL16": "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224",
}
_AUGREG_TIMM_21K = {"ViTB8": "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"}
# ImageNet-1k-only AugReg runs (timm's `augreg_in1k`).
_AUGREG_IN1K = {
    "ViTS16": "S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01",
    "ViTB32": "B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01",
    "ViTB16": "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01",
}


def _build():
    entries = {}

    def add(entry):
        entries.setdefault(entry.variant, {})[entry.name] = entry

    for variant, (stem, _) in _ARCH.items():
        if stem is None:
            continue
        add(WeightsEntry(variant, "imagenet21k", f"imagenet21k/{stem}.npz", _PAPER,
                         "imagenet21k", None, 224, 21843, has_pre_logits=True, head_usable=False))
        if variant in _PAPER_FINETUNED:
            res, top1 = _PAPER_FINETUNED[variant]
            add(WeightsEntry(variant, "imagenet21k+imagenet2012",
                             f"imagenet21k+imagenet2012/{stem}.npz", _PAPER, "imagenet21k",
                             "imagenet2012", res, 1000, False, top1=top1,
                             top1_source=_PAPER_T5 if top1 else None))
        if variant in _PAPER_224:
            add(WeightsEntry(variant, "imagenet21k+imagenet2012-224",
                             f"imagenet21k+imagenet2012/{stem}-224.npz", _PAPER, "imagenet21k",
                             "imagenet2012", 224, 1000, False, top1=_PAPER_224[variant],
                             top1_source=_README_224))
    for variant, (run, lr, top1) in _AUGREG_RECOMMENDED.items():
        add(WeightsEntry(variant, "augreg-in21k", f"augreg/{run}.npz", _AUGREG_README,
                         "imagenet21k", None, 224, 21843, False))
        add(WeightsEntry(variant, "augreg-in21k-ft-in1k-384",
                         f"augreg/{run}--imagenet2012-steps_20k-{lr}-res_384.npz", _AUGREG_README,
                         "imagenet21k", "imagenet2012", 384, 1000, False, top1=top1,
                         top1_source=_AUGREG_TOP1))
    for variant, run in _AUGREG_TIMM_21K.items():
        add(WeightsEntry(variant, "augreg-in21k", f"augreg/{run}.npz", _AUGREG_TIMM,
                         "imagenet21k", None, 224, 21843, False))
    for variant, run in _AUGREG_TIMM_224.items():
        add(WeightsEntry(variant, "augreg-in21k-ft-in1k-224", f"augreg/{run}.npz", _AUGREG_TIMM,
                         "imagenet21k", "imagenet2012", 224, 1000, False))
    for variant, run in _AUGREG_IN1K.items():
        for res in (224, 384):
            add(WeightsEntry(variant, f"augreg-in1k-{res}", f"augreg/{run}-res_{res}.npz",
                             _AUGREG_TIMM, "imagenet2012", "imagenet2012", res, 1000, False))
    return {variant: entries[variant] for variant in _ARCH}


REGISTRY = _build()

# Short names, per variant.
ALIASES = {
    "ViTTi16": {"imagenet": "augreg-in21k-ft-in1k-384", "imagenet21k": "augreg-in21k"},
    "ViTS16": {"imagenet": "augreg-in21k-ft-in1k-384", "imagenet21k": "augreg-in21k"},
    "ViTS32": {"imagenet": "augreg-in21k-ft-in1k-384", "imagenet21k": "augreg-in21k"},
    "ViTB8": {"imagenet": "augreg-in21k-ft-in1k-224"},  # no published top-1: AugReg preferred
    "ViTB16": {"imagenet": "augreg-in21k-ft-in1k-384"},
    "ViTB32": {"imagenet": "augreg-in21k-ft-in1k-384"},
    "ViTL16": {"imagenet": "augreg-in21k-ft-in1k-384"},
    "ViTL32": {"imagenet": "imagenet21k+imagenet2012"},
    "ViTH14": {},
    "ViTR50B16": {"imagenet": "imagenet21k+imagenet2012"},
}


def canonical_variant(variant):
    """'ViT-B/16', 'B_16', 'vitb16', 'R50+ViT-B/16' ... -> 'ViTB16' / 'ViTR50B16'."""
    key = re.sub(r"[^a-z0-9]", "", str(variant).lower())
    key = key if key.startswith("vit") or key.startswith("r50") else "vit" + key
    key = key.replace("r50vit", "vitr50")
    for name in REGISTRY:
        if name.lower() == key:
            return name
    plain = re.sub(r"[^a-z0-9]", "", str(variant).lower())
    for name in FAMILY_REGISTRY:
        if name.lower() == plain:
            return name
    raise ValueError(
        f"Unknown variant {variant!r}; pretrained weights exist for: "
        f"{', '.join(list(REGISTRY) + list(FAMILY_REGISTRY))}."
    )


def _tables(variant):
    """(entries, aliases) of a canonical variant name."""
    if variant in FAMILY_REGISTRY:
        return FAMILY_REGISTRY[variant], FAMILY_ALIASES.get(variant, {})
    return REGISTRY[variant], ALIASES[variant]


def list_weights(variant=None):
    """Names accepted by `weights=` for a variant (short names first), or a dict for all.

    Example:

    >>> list_weights("ViTL32")
    ['imagenet', 'imagenet21k', 'imagenet21k+imagenet2012']
    """
    if variant is None:
        return {v: list_weights(v) for v in list(REGISTRY) + list(FAMILY_REGISTRY)}
    entries, aliases = _tables(canonical_variant(variant))
    return sorted(aliases) + sorted(n for n in entries if n not in aliases)


def is_weights_name(variant, name):
    """Whether `name` is a registry name or short name for `variant`."""
    entries, aliases = _tables(canonical_variant(variant))
    return name in aliases or name in entries


def get_weights_entry(variant, name):
    """The `WeightsEntry` a `weights=` name stands for; a ValueError listing valid names."""
    variant = canonical_variant(variant)
    entries, aliases = _tables(variant)
    entry = entries.get(aliases.get(name, name))
    if entry is None:
        raise ValueError(
            f"Unknown weights {name!r} for {variant}. Valid names: "
            f"{', '.join(list_weights(variant))}; or a path to a checkpoint file/directory."
        )
    return entry


def all_entries():
    """The paper's and AugReg's entries (`family_entries` lists the later ViTs')."""
    return [entry for per_variant in REGISTRY.values() for entry in per_variant.values()]


def family_entries():
    return [entry for per_variant in FAMILY_REGISTRY.values() for entry in per_variant.values()]


# --------------------------------------------------------------------------- later ViTs

HF_URL = "https://huggingface.co"
_NORMALIZATION_TEXT = {
    None: "RGB in [0, 255] scaled to [-1, 1] (x / 127.5 - 1)",
    "imagenet": "RGB in [0, 255] normalised with ImageNet's mean and std ((x / 255 - mean) / "
                "std, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225))",
}


@dataclasses.dataclass(frozen=True)
class HubWeightsEntry(WeightsEntry):
    """A later ViT's checkpoint on the Hugging Face hub: one `model.safetensors` (no PyTorch
    needed to read it).

    Attributes (besides `WeightsEntry`'s; `path` is `{repo}/resolve/{revision}/model.safetensors`):
        repo: the hub repository (`facebook/dinov2-small`, `timm/...`).
        revision: the branch or commit of the file.
        layout: `"hf"` (a transformers `save_pretrained` file) or `"timm"`.
        tanh_gelu: whether the weights were trained with the tanh-approximate GELU.
        normalization: the input normalisation they expect (`ViT(input_normalization=...)`).
        license: the weights' license, as timm's pretrained configuration or the model card
            states it.
    """

    repo: str = None
    revision: str = "main"
    layout: str = "hf"
    tanh_gelu: bool = False
    normalization: str = None
    license: str = None

    @property
    def url(self):
        """Download URL; `$HF_ENDPOINT` (huggingface_hub's own variable, for mirrors)
        replaces `https://huggingface.co`."""
        base = os.environ.get("HF_ENDPOINT") or HF_URL
        return base.rstrip("/") + "/" + urllib.parse.quote(self.path)

    @property
    def source_url(self):
        return f"{HF_URL}/{self.repo}"

    @property
    def gelu_approximate(self):
        return self.tanh_gelu

    @property
    def preprocessing(self):
        size = self.resolution or "the native resolution"
        return f"{_NORMALIZATION_TEXT[self.normalization]}; images resized to {size} x {size}"


def _hub(variant, name, repo, layout, pretraining, resolution, finetuning=None, classes=None,
         source=None, license=None):
    from keras_vit.architectures import FAMILY_VARIANTS  # noqa: PLC0415 (plain data)

    arch = FAMILY_VARIANTS[variant]
    return HubWeightsEntry(
        variant, name, f"{repo}/resolve/main/model.safetensors", source, pretraining,
        finetuning, resolution, classes, has_pre_logits=False, repo=repo, layout=layout,
        tanh_gelu=arch.get("gelu_approximate", True),
        normalization=arch.get("input_normalization"), license=license)


_DINOV2_SOURCE = "DINOv2 (Oquab et al. 2023), HF transformers port by Meta (model card)"
_DINOV2_REG_SOURCE = "DINOv2 with registers (Darcet et al. 2024), HF transformers port by Meta"
_SIGLIP_SOURCE = "SigLIP (Zhai et al. 2023) image tower from big_vision, as converted by timm"
_MAE_SOURCE = "MAE (He et al. 2022) pre-trained encoder (mae_pretrain_vit_*.pth), timm's copy"
_DEIT3_SOURCE = "DeiT-III (Touvron et al. 2022) deit_3_*.pth, timm's copy"


def _build_families():
    entries = {}

    def add(entry):
        entries.setdefault(entry.variant, {})[entry.name] = entry

    for size, name in (("S", "small"), ("B", "base"), ("L", "large")):
        add(_hub(f"DINOv2{size}14", "lvd142m", f"facebook/dinov2-{name}", "hf", "lvd142m", 518,
                 source=_DINOV2_SOURCE, license="apache-2.0"))
        add(_hub(f"DINOv2{size}14Reg4", "lvd142m", f"facebook/dinov2-with-registers-{name}", "hf",
                 "lvd142m", 518, source=_DINOV2_REG_SOURCE, license="apache-2.0"))
    for res in (224, 256, 384, 512):
        add(_hub("SigLIPB16", "webli" if res == 224 else f"webli-{res}",
                 f"timm/vit_base_patch16_siglip_{res}.webli", "timm", "webli", res,
                 source=_SIGLIP_SOURCE, license="apache-2.0"))
    for res in (384, 224):
        add(_hub("SigLIPSo400m14", "webli" if res == 384 else f"webli-{res}",
                 f"timm/vit_so400m_patch14_siglip_{res}.webli", "timm", "webli", res,
                 source=_SIGLIP_SOURCE, license="apache-2.0"))
    for variant, timm_name in (("MAEB16", "vit_base_patch16_224"),
                               ("MAEL16", "vit_large_patch16_224"),
                               ("MAEH14", "vit_huge_patch14_224")):
        add(_hub(variant, "in1k", f"timm/{timm_name}.mae", "timm", "imagenet2012", 224,
                 source=_MAE_SOURCE, license="cc-by-nc-4.0"))
    for size, name in (("S", "small"), ("B", "base"), ("L", "large")):
        for res in (224, 384):
            suffix = "" if res == 224 else f"-{res}"
            for tag, pretraining, ours in (("fb_in1k", "imagenet2012", "in1k"),
                                           ("fb_in22k_ft_in1k", "imagenet21k", "in21k-ft-in1k")):
                add(_hub(f"DeiT3{size}16", ours + suffix,
                         f"timm/deit3_{name}_patch16_{res}.{tag}", "timm", pretraining, res,
                         finetuning="imagenet2012", classes=1000, source=_DEIT3_SOURCE,
                         license="apache-2.0"))
    return entries


FAMILY_REGISTRY = _build_families()
# DeiT-III's "imagenet": the ImageNet-21k pre-trained classifier at 224 px (no top-1 is
# recorded here to rank them by).
FAMILY_ALIASES = {f"DeiT3{size}16": {"imagenet": "in21k-ft-in1k"} for size in "SBL"}
