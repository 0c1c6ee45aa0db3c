"""`RunConfig`: the resolved settings of one train/finetune run, saved as config.json."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from applications import recipes
from applications.options import ARCH_KEYS, UsageError
from applications.run_files import (  # noqa: F401  (this module's interface)
    CONFIG_FILE,
    _json_default,
    load,
    write_json_atomic,
)


@dataclasses.dataclass
class RunConfig:
    """Everything that determines a run; written to OUTPUT/config.json.

    Field names equal the command-line flags (with '-' as '_').
    """

    command: str
    dataset: str
    output: str
    # model
    model: str | None = None
    image_size: Any = 224
    patch_size: Any = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    classifier: str | None = None
    position_embedding: str | None = None
    representation_size: int | None = None
    # The later ViTs' options (keras_vit.ViT's names); None: the paper's.
    num_register_tokens: int | None = None
    layer_scale_init_value: float | None = None
    no_embed_class: bool | None = None
    class_token: bool | None = None
    fc_norm: bool | None = None
    gelu_approximate: bool | None = None
    input_normalization: Any = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_depth_rate: float = 0.0
    include_preprocessing: bool = True
    remat: bool = False
    weights: str | None = None
    init: str | None = None
    # data
    data_dir: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 512
    # optimisation
    epochs: int | None = None
    steps: int | None = None
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    weight_decay_on: str = "kernels"
    layer_decay: float | None = None
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.999
    clipnorm: float = 1.0
    decay: str = "cosine"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.1
    max_warmup_steps: int = 10_000
    label_smoothing: float = 0.0
    ema: float = 0.0
    # augmentation
    crop_min_area: float = 0.05
    flip: bool | None = None
    randaugment: Any = None
    mixup: float = 0.0
    cutmix: float = 0.0
    augment: Any = None
    # run
    checkpoint_every: int = 1
    steps_per_execution: int = 1
    seed: int = 0
    mixed_precision: str | None = None
    verbose: Any = "auto"

    def to_json(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunConfig":
        """Inverse of `to_json`; unknown keys are ignored, pairs become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        # Runs saved before kernel-only weight decay decayed every variable: --resume keeps it.
        kwargs.setdefault("weight_decay_on", "all")
        for key in ("image_size", "patch_size", "randaugment"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def architecture(self) -> dict:
        """ViT() architecture kwargs: the variant's, then the explicit overrides."""
        import keras_vit

        arch: dict[str, Any] = {}
        if self.model:
            arch.update({**keras_vit.VARIANTS, **keras_vit.FAMILY_VARIANTS}[self.model])
        for key in ARCH_KEYS:
            value = getattr(self, key)
            if value is not None:
                arch[key] = value
        missing = [k for k in ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
                   if k not in arch]
        if missing:
            raise UsageError(
                "No --model given and the architecture is incomplete: set --model "
                f"(one of {', '.join(keras_vit.VARIANTS)}) or all of "
                + ", ".join("--" + k.replace("_", "-") for k in missing) + "."
            )
        arch.setdefault("classifier", "token")
        arch.setdefault("position_embedding", "learned_1d")
        return arch


def resolve(command: str, explicit: dict) -> RunConfig:
    """Merges recipe defaults, the dataset's preset and explicit flags.

    Args:
        command: "train" or "finetune".
        explicit: The flags the user gave ({name: value}).

    Returns:
        The `RunConfig`.

    Raises:
        UsageError: For an unknown variant name.
    """
    dataset = explicit.get("dataset") or "digits"
    values = recipes.defaults(command, dataset)
    if "model" in explicit or any(k in explicit for k in ("weights", "init")):
        # An explicit variant replaces the preset's custom architecture.
        for key in ARCH_KEYS:
            if key != "image_size":
                values.pop(key, None)
    start = explicit.get("init") or explicit.get("weights")
    if command == "finetune" and start and "model" not in explicit:
        # The source checkpoint fixes the architecture; flags may still
        # override (they must then match its shapes).
        from applications import weights as weights_lib

        source = weights_lib.source_architecture(start, with_image_size=True)
        saved_size = source.pop("image_size", None)
        values.update(source)
        values["model"] = None
        if explicit.get("init") and "image_size" not in explicit and saved_size:
            # A saved model (e.g. pretrain's backbone) is fine-tuned at the resolution it was
            # built for, not the recipe's 384 px: the recipe's resolution is for checkpoints
            # pre-trained at 224, and a digits backbone at 384 px would take 36,864 tokens.
            values["image_size"] = saved_size
    values.update(explicit)
    values["dataset"] = dataset
    values["command"] = command
    values.setdefault("output", os.path.join("runs", _slug(dataset)))
    if values.get("model"):
        values["model"] = canonical_variant(values["model"])
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: v for k, v in values.items() if k in names})


def canonical_variant(name: str) -> str:
    """Maps "ViTB16", "vit-b/16", "B16", "ViT-B_16" to the key of keras_vit.VARIANTS, and a
    later ViT's name ("DINOv2S14", "dinov2-s14") to its key of keras_vit.FAMILY_VARIANTS.

    Raises:
        UsageError: Listing the valid names.
    """
    import keras_vit

    def norm(s: str) -> str:
        s = "".join(c for c in s.lower() if c.isalnum())
        return s[3:] if s.startswith("vit") else s

    table = {norm(k): k for k in keras_vit.VARIANTS}
    table.update({norm(k).replace("r50", "r50b"): k for k in keras_vit.VARIANTS if "R50" in k})
    table.update({norm(k): k for k in keras_vit.FAMILY_VARIANTS})
    key = norm(name)
    if key in table:
        return table[key]
    raise UsageError(
        f"Unknown model variant {name!r}; valid: "
        f"{', '.join(list(keras_vit.VARIANTS) + list(keras_vit.FAMILY_VARIANTS))}."
    )


def save(config: RunConfig, extra: dict | None = None) -> str:
    """Writes OUTPUT/config.json atomically; returns its path."""
    os.makedirs(config.output, exist_ok=True)
    path = os.path.join(config.output, CONFIG_FILE)
    data = config.to_json()
    data.update(extra or {})
    write_json_atomic(path, data)
    return path


def _slug(dataset: str) -> str:
    base = os.path.basename(os.path.normpath(dataset)) or "dataset"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in base)
