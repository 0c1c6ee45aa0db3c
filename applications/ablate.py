"""`keras-vit ablate`: the paper's ablations, reproduced in small (seed sections 2 and 3.3).

Studies (each run several seeds; a markdown table of mean +- std test accuracy and a plot):

- `classifier`: class token vs global average pooling (GAP). The paper's point (Appendix
  D.3) is that both work equally well once GAP gets its own learning rate; we run the token
  at the base rate, and GAP both at the base rate and at `--gap-lr-factor` times it.
- `position`: no position embedding vs learned 1-D vs learned 2-D vs relative (Appendix D.4).
- `data_scale`: ViT vs a ResNet baseline of similar size trained on growing fractions of the
  training split (the paper's "ViT needs data" finding, Sec. 4.3, in small).
- `pretraining` (not in the default set): fine-tuning on a small labelled share
  (`--label-fraction`) from scratch vs from a backbone pre-trained by masked patch prediction
  (Sec. 4.6) on all training images without labels; same fine-tuning budget for both.

Every run reports two numbers: the test accuracy of the trained classifier, and, as the
paper's position-embedding table does, the few-shot linear accuracy of its frozen
representation (`keras_vit.evaluation`: the closed-form least squares on `--fewshot-shots`
images per class of the training split, averaged over `--fewshot-seeds` draws, scored on the
test split).

Runs on the embedded `digits` data by default, or on any dataset of the pipeline.

    keras-vit ablate --output runs/ablate                      # all studies, 3 seeds
    keras-vit ablate --studies position --seeds 5 --epochs 40
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

STUDIES = ("classifier", "position", "data_scale", "pretraining")
DEFAULT_STUDIES = ("classifier", "position", "data_scale")

# A digits-sized ViT (4x4 grid of 2x2 patches) and the recipe of `keras-vit train` for digits.
VIT = dict(image_size=8, patch_size=2, hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128)


@dataclasses.dataclass(frozen=True)
class Setting:
    study: str
    name: str
    model: str = "vit"  # or "resnet"
    arch: dict = dataclasses.field(default_factory=dict)
    lr_factor: float = 1.0
    train_fraction: float = 1.0
    pretrained: bool = False


def settings(study, gap_lr_factor, fractions, label_fraction=0.1):
    if study == "classifier":
        return [
            Setting(study, "token", arch=dict(classifier="token")),
            Setting(study, "gap (token's lr)", arch=dict(classifier="gap")),
            Setting(study, f"gap ({gap_lr_factor:g}x lr)", arch=dict(classifier="gap"),
                    lr_factor=gap_lr_factor),
        ]
    if study == "position":
        return [Setting(study, name, arch=dict(position_embedding=name))
                for name in ("none", "learned_1d", "learned_2d", "relative")]
    if study == "pretraining":
        share = f"{100 * label_fraction:g}% labels"
        return [Setting(study, f"scratch, {share}", train_fraction=label_fraction),
                Setting(study, f"MPP-pretrained, {share}", train_fraction=label_fraction,
                        pretrained=True)]
    return [Setting(study, f"{model} {100 * f:g}%", model=model, train_fraction=f)
            for f in fractions for model in ("vit", "resnet")]


def add_parser(subparsers):
    p = subparsers.add_parser("ablate", help="the paper's ablations on small data, several seeds",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", default=",".join(DEFAULT_STUDIES),
                   help=f"comma-separated subset of {', '.join(STUDIES)}")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gap-lr-factor", type=float, default=3.0)
    p.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    p.add_argument("--label-fraction", type=float, default=0.1,
                   help="pretraining study: share of labelled training images")
    p.add_argument("--pretrain-epochs", type=int, default=100,
                   help="pretraining study: epochs of masked patch prediction")
    p.add_argument("--image-size", type=int, help="default: 8 for digits, else 32")
    p.add_argument("--weight-decay-on", choices=("kernels", "all"), default="kernels",
                   help="AdamW's decay (0.05) on weight matrices only (default) or on all")
    p.add_argument("--fewshot-shots", type=int, default=5,
                   help="images per class of the few-shot linear evaluation (5; 0: skip it)")
    p.add_argument("--fewshot-seeds", type=int, default=3, help="draws of those shots (3)")
    p.add_argument("--output", default="runs/ablate")
    return p


def run(args, log=print) -> int:
    from applications.options import UsageError

    studies = [s for s in args.studies.split(",") if s]
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        raise UsageError(f"Unknown studies {unknown}; valid: {', '.join(STUDIES)}.")
    fractions = [float(f) for f in args.fractions.split(",")]
    if any(not 0 < f <= 1 for f in fractions):
        raise UsageError(f"--fractions must lie in (0, 1], got {args.fractions}.")
    if args.seeds < 1 or args.epochs < 1:
        raise UsageError("--seeds and --epochs must be positive.")
    if args.fewshot_shots < 0 or args.fewshot_seeds < 1:
        raise UsageError("--fewshot-shots must be >= 0 and --fewshot-seeds >= 1.")

    import tf_data

    source = tf_data.load_source(args.dataset, data_dir=args.data_dir)
    size = args.image_size or (8 if args.dataset == "digits" else 32)
    os.makedirs(args.output, exist_ok=True)
    results = []
    start = time.time()
    for study in studies:
        for setting in settings(study, args.gap_lr_factor, fractions, args.label_fraction):
            accuracies, fewshot = [], []
            for seed in range(args.seeds):
                accuracy, linear = train_and_test(setting, source, size, seed, args)
                accuracies.append(accuracy)
                fewshot.append(linear)
            row = dict(study=study, setting=setting.name, model=setting.model,
                       fraction=setting.train_fraction, accuracies=accuracies,
                       mean=float(np.mean(accuracies)), std=float(np.std(accuracies)))
            line = f"{study:>10} | {setting.name:<18} | {100 * row['mean']:.2f} +- {100 * row['std']:.2f}"
            if args.fewshot_shots:
                row.update(fewshot_shots=args.fewshot_shots, fewshot=fewshot,
                           fewshot_mean=float(np.mean(fewshot)), fewshot_std=float(np.std(fewshot)))
                line += (f" | {args.fewshot_shots}-shot {100 * row['fewshot_mean']:.2f} +- "
                         f"{100 * row['fewshot_std']:.2f}")
            results.append(row)
            log(line)
    table = markdown_table(results, args, time.time() - start)
    log("\n" + table)
    with open(os.path.join(args.output, "ablation.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.output, "ablation.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(results, os.path.join(args.output, "ablation.png"))
    return 0


def train_and_test(setting, source, size, seed, args):
    """Trains one setting with one seed; returns its test accuracy and the few-shot linear
    accuracy of its frozen representation (mean over the shot draws; None when skipped)."""
    import keras

    import tf_data
    from applications.modeling import group
    from keras_vit.schedules import WarmupDecay

    keras.utils.set_random_seed(seed)
    config = tf_data.PipelineConfig(image_size=(size, size), batch_size=args.batch_size, seed=seed,
                                    crop_area=(0.5, 1.0), repeat=False)
    # A fixed subset per seed: the same images every epoch, shuffled and augmented anew.
    train_source = tf_data.subset(source, "train", setting.train_fraction, seed=seed)
    tf_data.check_batch_size(train_source, "train", args.batch_size)
    train = tf_data.build_dataset(train_source, "train", config, training=True)
    steps = tf_data.steps_per_epoch(train_source, "train", args.batch_size)
    test = tf_data.build_dataset(source, "test", config, training=False)
    classes = len(source.class_names)
    model = build(setting, (size, size, 3), classes)
    if setting.pretrained:
        load_pretrained_backbone(model, source, setting, size, seed, args)
    schedule = WarmupDecay(args.lr * setting.lr_factor, total_steps=steps * args.epochs,
                           warmup_steps=steps * max(1, args.epochs // 10))
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.05, global_clipnorm=1.0)
    model.compile(optimizer=group(optimizer, weight_decay_on=getattr(args, "weight_decay_on",
                                                                     "kernels")),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(train, epochs=args.epochs, verbose=0)
    accuracy = float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    shots = getattr(args, "fewshot_shots", 0)
    if not shots:
        return accuracy, None
    return accuracy, fewshot_linear(model, source, config, shots, args.fewshot_seeds)


def fewshot_linear(model, source, config, shots, seeds):
    """Few-shot linear accuracy of `model`'s frozen representation (what its head reads):
    shots drawn from the training split, scored on the test split; mean over the draws."""
    import tf_data
    from keras_vit import evaluation

    representation = evaluation.representation_model(model)
    train_x, train_y = evaluation.extract(
        representation, tf_data.build_dataset(source, "train", config, training=False))
    test_x, test_y = evaluation.extract(
        representation, tf_data.build_dataset(source, "test", config, training=False))
    result = evaluation.fewshot_accuracy(train_x, train_y, test_x, test_y, shots=(shots,),
                                         seeds=seeds, num_classes=len(source.class_names))
    return result[shots]["mean"]


def load_pretrained_backbone(model, source, setting, size, seed, args):
    """Masked-patch pre-training on all training images (no labels), into `model`'s backbone."""
    from applications.pretrain import pretrain
    from keras_vit import checkpoint

    arch = {**VIT, **setting.arch, "image_size": size}
    mpp, _, _ = pretrain(source, arch, epochs=args.pretrain_epochs, batch_size=args.batch_size,
                         lr=args.lr, seed=seed)
    # The classifier keeps its zero-initialised head (paper); everything else is copied.
    checkpoint.assign_checkpoint(model, checkpoint.official_arrays(mpp.backbone),
                                 source="masked patch prediction", skip_head=True)


def build(setting, input_shape, classes):
    import keras_vit
    from applications.baselines import small_resnet

    if setting.model == "resnet":
        return small_resnet(input_shape, classes)
    arch = {**VIT, **setting.arch}
    if input_shape[0] != VIT["image_size"]:
        arch.update(image_size=input_shape[0], patch_size=max(2, input_shape[0] // 4))
    return keras_vit.ViT(**arch, classes=classes)


def markdown_table(results, args, seconds):
    import keras

    shots = getattr(args, "fewshot_shots", 0)
    lines = [
        f"Test accuracy (%) on `{args.dataset}`, mean +- std over {args.seeds} seeds, "
        f"{args.epochs} epochs each; backend {keras.backend.backend()}; {seconds / 60:.1f} min.",
    ]
    if shots:
        lines.append(f"{shots}-shot linear: the closed-form least squares on the frozen "
                     f"representation of {shots} training images per class, mean over "
                     f"{args.fewshot_seeds} draws per trained model.")
    lines += ["", "| study | setting | accuracy | runs |" + (f" {shots}-shot linear | runs |"
                                                             if shots else ""),
              "|---|---|---|---|" + ("---|---|" if shots else "")]
    for r in results:
        runs = ", ".join(f"{100 * a:.1f}" for a in r["accuracies"])
        line = f"| {r['study']} | {r['setting']} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} | {runs} |"
        if shots:
            few = ", ".join(f"{100 * a:.1f}" for a in r["fewshot"])
            line += f" {100 * r['fewshot_mean']:.2f} +- {100 * r['fewshot_std']:.2f} | {few} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(dict.fromkeys(r["study"] for r in results))
    fig, axes = plt.subplots(1, len(studies), figsize=(5 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies):
        rows = [r for r in results if r["study"] == study]
        if study == "data_scale":
            for model in ("vit", "resnet"):
                sub = [r for r in rows if r["model"] == model]
                ax.errorbar([100 * r["fraction"] for r in sub], [100 * r["mean"] for r in sub],
                            yerr=[100 * r["std"] for r in sub], marker="o", capsize=3, label=model)
            ax.set_xlabel("share of the training split (%)")
            ax.set_xscale("log")
            ax.legend()
        else:
            ax.bar(range(len(rows)), [100 * r["mean"] for r in rows],
                   yerr=[100 * r["std"] for r in rows], capsize=3, color="tab:blue")
            ax.set_xticks(range(len(rows)), [r["setting"] for r in rows], rotation=20, ha="right")
            low = min(100 * (r["mean"] - r["std"]) for r in rows)
            ax.set_ylim(max(0, low - 5), 100)
        ax.set_title(study)
        ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
