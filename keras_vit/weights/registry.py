"""The published checkpoints of the ViT paper and its AugReg follow-up, by variant and name.

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
    raise ValueError(
        f"Unknown variant {variant!r}; pretrained weights exist for: {', '.join(REGISTRY)}."
    )


def list_weights(variant=None):
    """Names accepted by `weights=` for a variant (short names first), or a dict for all.

    Example:

    >>> list_weights("ViTL32")
    ['imagenet', 'imagenet21k', 'imagenet21k+imagenet2012']
    """
    if variant is None:
        return {v: list_weights(v) for v in REGISTRY}
    variant = canonical_variant(variant)
    names = sorted(ALIASES[variant]) + sorted(n for n in REGISTRY[variant] if n not in ALIASES[variant])
    return names


def is_weights_name(variant, name):
    """Whether `name` is a registry name or short name for `variant`."""
    variant = canonical_variant(variant)
    return name in ALIASES[variant] or name in REGISTRY[variant]


def get_weights_entry(variant, name):
    """The `WeightsEntry` a `weights=` name stands for; a ValueError listing valid names."""
    variant = canonical_variant(variant)
    target = ALIASES[variant].get(name, name)
    entry = REGISTRY[variant].get(target)
    if entry is None:
        raise ValueError(
            f"Unknown weights {name!r} for {variant}. Valid names: "
            f"{', '.join(list_weights(variant))}; or a path to a checkpoint file/directory."
        )
    return entry


def all_entries():
    return [entry for per_variant in REGISTRY.values() for entry in per_variant.values()]
