"""`keras-vit pretrain`: self-supervised masked patch prediction (paper Sec. 4.6).

Trains `keras_vit.MaskedPatchPrediction` on a dataset's training images (labels ignored) and
saves the backbone for fine-tuning:

    keras-vit pretrain --dataset digits --output runs/mpp
    keras-vit finetune --dataset digits --init runs/mpp/backbone.keras --output runs/ft
    keras_vit.ViT(..., weights="runs/mpp/backbone.npz", include_top=False)

`--output` receives `backbone.keras`, `backbone.npz` (official layout), `metrics.json` (the
masked-patch loss on the test split next to the loss of always predicting the training
split's marginal colour distribution) and `training_curves.png`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

# Digits-sized backbone, as the `keras-vit train` digits preset.
DIGITS_ARCH = dict(image_size=8, patch_size=2, hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128)


def add_parser(subparsers):
    from applications import options
    from keras_vit.masked_patch_prediction import TARGETS

    p = subparsers.add_parser("pretrain", help="self-supervised masked patch prediction",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--output", required=True)
    options.add_model_options(p)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--weight-decay-on", choices=("kernels", "all"), default="kernels",
                   help="kernels (default): weight matrices only; all: every variable")
    p.add_argument("--mask-ratio", type=float, default=0.5)
    p.add_argument("--target", choices=TARGETS, default="mean_color")
    p.add_argument("--seed", type=int, default=0)
    return p


def architecture(args):
    """The backbone: --model's variant, else a small default, with the explicit overrides."""
    from applications import config as config_lib
    from applications.options import ARCH_KEYS
    from keras_vit import VARIANTS

    if getattr(args, "model", None):
        variant = config_lib.canonical_variant(args.model)
        if variant not in VARIANTS:
            raise config_lib.UsageError(
                f"pretrain trains the paper's variants ({', '.join(VARIANTS)}); {variant} is "
                "a later ViT, to fine-tune with `keras-vit finetune --model` instead.")
        arch = dict(VARIANTS[variant], image_size=224)
    elif args.dataset == "digits":
        arch = dict(DIGITS_ARCH)
    else:
        arch = dict(image_size=32, patch_size=4, hidden_size=192, num_layers=6, num_heads=3,
                    mlp_dim=768)
    for key in ARCH_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            arch[key] = value
    return arch


def pretrain(source, arch, *, epochs, batch_size, lr, weight_decay=0.05, mask_ratio=0.5,
             target="mean_color", seed=0, verbose=0, weight_decay_on="kernels"):
    """Pre-trains a backbone on `source`'s training images.

    Returns:
        (MaskedPatchPrediction model, keras History, pipeline config).
    """
    import keras

    import keras_vit
    import tf_data
    from applications.modeling import group
    from keras_vit.schedules import WarmupDecay

    keras.utils.set_random_seed(seed)
    config = tf_data.PipelineConfig(image_size=(arch["image_size"],) * 2, batch_size=batch_size,
                                    seed=seed, crop_area=(0.5, 1.0), repeat=False)
    tf_data.check_batch_size(source, "train", batch_size)
    train = tf_data.build_dataset(source, "train", config, training=True)
    steps = tf_data.steps_per_epoch(source, "train", batch_size)
    backbone = keras_vit.ViT(**arch, include_top=False, name="backbone")
    mpp = keras_vit.MaskedPatchPrediction(backbone, mask_ratio=mask_ratio, target=target, seed=seed)
    schedule = WarmupDecay(lr, total_steps=steps * epochs, warmup_steps=steps * max(1, epochs // 10))
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=1.0)
    mpp.compile(optimizer=group(optimizer, weight_decay_on=weight_decay_on))
    history = mpp.fit(train, epochs=epochs, verbose=verbose)
    return mpp, history, config


def loss_and_marginal(mpp, source, config):
    """Masked-patch loss on the test split, and the loss of the best constant predictor.

    The constant predictor outputs the training split's marginal target distribution (add-one
    smoothed); its cross-entropy on the test split's targets is the bar the model must beat.
    """
    import tf_data

    def targets(role):
        dataset = tf_data.build_dataset(source, role, config, training=False)
        return np.concatenate([np.asarray(mpp.targets(images)).reshape(-1)
                               for images, _ in dataset.as_numpy_iterator()])

    train_targets, test_targets = targets("train"), targets("test")
    counts = np.bincount(train_targets, minlength=mpp.classes) + 1.0
    marginal = -np.mean(np.log(counts[test_targets] / counts.sum()))
    test = tf_data.build_dataset(source, "test", config, training=False)
    loss = mpp.evaluate(test, verbose=0, return_dict=True)["loss"]
    return float(loss), float(marginal)


def run(args, log=print) -> int:
    import keras

    import tf_data
    from applications import reporting
    from keras_vit.checkpoint import save_npz

    if args.target == "pixels":
        log("note: the marginal-distribution baseline applies to colour targets only")
    arch = architecture(args)  # a bad --model fails before the data loads
    source = tf_data.load_source(args.dataset, data_dir=args.data_dir)
    os.makedirs(args.output, exist_ok=True)
    start = time.time()
    mpp, history, config = pretrain(
        source, arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, mask_ratio=args.mask_ratio, target=args.target,
        seed=args.seed, verbose=2, weight_decay_on=args.weight_decay_on)
    seconds = time.time() - start
    mpp.backbone.save(os.path.join(args.output, "backbone.keras"))
    save_npz(mpp.backbone, os.path.join(args.output, "backbone.npz"))
    metrics = dict(dataset=args.dataset, backend=keras.backend.backend(), architecture=arch,
                   target=args.target, mask_ratio=args.mask_ratio, epochs=args.epochs,
                   weight_decay=args.weight_decay, weight_decay_on=args.weight_decay_on,
                   train_seconds=round(seconds, 1),
                   first_epoch_loss=float(history.history["loss"][0]),
                   final_train_loss=float(history.history["loss"][-1]))
    if args.target != "pixels":
        test_loss, marginal = loss_and_marginal(mpp, source, config)
        metrics.update(test_loss=test_loss, marginal_distribution_loss=marginal)
        log(f"masked-patch loss on test: {test_loss:.3f} (marginal-colour predictor: {marginal:.3f})")
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    reporting.plot_curves(args.output, [{"epoch": i + 1, "loss": v}
                                        for i, v in enumerate(history.history["loss"])],
                          title="masked patch prediction")
    log(f"wrote {args.output}/backbone.keras, backbone.npz, metrics.json")
    return 0
