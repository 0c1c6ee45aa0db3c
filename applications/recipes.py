"""Default hyper-parameters: the paper's two recipes and the `digits` preset.

Every value here can be overridden by a command-line flag of the same name.
Values are resolved in order: recipe -> dataset preset -> explicit flags.
"""

from __future__ import annotations

# Pre-training from scratch (paper Sec. 4.1 / App. B.1): Adam(W) b1 0.9,
# b2 0.999, linear warmup then decay, clip at global norm 1, dropout 0.1,
# weight decay 0.1. The paper uses batch 4096 and lr 1e-3..3e-3 at res 224;
# batch 512 and lr 1e-3 are a default one machine can hold.
TRAIN = dict(
    model="ViTB16",
    image_size=224,
    batch_size=512,
    epochs=300,
    lr=1e-3,
    optimizer="adamw",
    beta_1=0.9,
    beta_2=0.999,
    weight_decay=0.1,
    momentum=0.9,
    clipnorm=1.0,
    decay="cosine",
    warmup_fraction=0.1,
    max_warmup_steps=10_000,
    dropout_rate=0.1,
    attention_dropout_rate=0.0,
    stochastic_depth_rate=0.0,
    crop_min_area=0.05,
    flip=None,  # the dataset's default: on, off for digits
    randaugment=None,
    mixup=0.0,
    cutmix=0.0,
    label_smoothing=0.0,
    ema=0.0,
    include_preprocessing=True,
    seed=0,
)

# Fine-tuning (paper App. B.1.1): SGD momentum 0.9, batch 512, cosine decay,
# no weight decay, clip at global norm 1, zero-initialised new head, res 384,
# lr from {0.003, 0.01, 0.03, 0.06}, 500 warmup steps.
FINETUNE = dict(
    TRAIN,
    image_size=384,
    epochs=10,
    lr=0.01,
    optimizer="sgd",
    weight_decay=0.0,
    warmup_fraction=0.1,
    max_warmup_steps=500,
    dropout_rate=0.0,
)

# `digits` is 1,259 training images of 8x8 pixels: a small ViT on a 4x4 grid of
# 2x2-pixel patches, global average pooling and strong weight decay. `make train`
# adds --mixup 0.2 --ema 0.998 and runs 120 epochs; not in the preset because
# short runs (the tests' few epochs) would end on an EMA still close to the
# initial weights. The variants tried and their accuracies: benchmarks/RESULTS.md
# ("The digits preset", 2026-12-01). A gentle crop (at least 80% of the area) replaces the 5% inception crop,
# which on 8x8 digits would crop the digit away. No flips (the source says
# so): a mirrored digit is another digit.
DIGITS_DATA = dict(batch_size=64, crop_min_area=0.8)
DIGITS_TRAIN = dict(
    DIGITS_DATA,
    model=None,
    image_size=8,
    patch_size=2,
    hidden_size=64,
    num_layers=4,
    num_heads=4,
    mlp_dim=128,
    classifier="gap",
    position_embedding="learned_1d",
    epochs=150,
    lr=1e-3,
    weight_decay=0.3,
    dropout_rate=0.1,
    # Epochs take ~1.1 s here (after a first epoch of compilation); a .keras
    # snapshot (~0.2 s) every epoch would add a fifth. The --resume state is
    # still committed after every epoch.
    checkpoint_every=25,
)

# dataset -> (preset for train, preset for finetune)
# Fine-tuning on digits keeps their own 8 px (the recipe's 384 px would make 8x8 images
# 2,304 times larger and, with 2x2 patches, 36,864 tokens).
DIGITS_FINETUNE = dict(DIGITS_DATA, image_size=8)
PRESETS = {"digits": (DIGITS_TRAIN, DIGITS_FINETUNE)}


def defaults(command: str, dataset: str) -> dict:
    """Returns the default options of `command` ("train"/"finetune") for `dataset`."""
    base = dict(FINETUNE if command == "finetune" else TRAIN)
    train_preset, finetune_preset = PRESETS.get(dataset, ({}, {}))
    base.update(finetune_preset if command == "finetune" else train_preset)
    return base
