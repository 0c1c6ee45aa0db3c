"""Command-line options shared by the subcommands, and their resolution.

Every option defaults to "not given" (`argparse.SUPPRESS`), so that the
resolved configuration can tell explicit flags from defaults: recipe and
dataset preset supply the defaults, explicit flags win, and `--resume`
restores the interrupted run's own configuration.
"""

from __future__ import annotations

import argparse

ARCH_KEYS = (
    "image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
    "classifier", "position_embedding", "representation_size",
    # The later ViTs' options (DINOv2, SigLIP, MAE, DeiT-III): set by a family's --model or
    # read from the --weights checkpoint, saved with the run.
    "num_register_tokens", "layer_scale_init_value", "no_embed_class", "class_token",
    "fc_norm", "gelu_approximate", "input_normalization",
)
CLASSIFIERS = ("token", "gap", "map")
POSITION_EMBEDDINGS = ("learned_1d", "learned_2d", "relative", "none", "sincos_2d")
MIXED_PRECISION = ("auto", "float16", "bfloat16")


class UsageError(ValueError):
    """A bad combination of command-line options; the message lists valid choices."""


def size_pair(text: str) -> int | tuple[int, int]:
    """Parses "224" or "224,192" (height, width) for --image-size / --patch-size."""
    parts = [p for p in text.replace("x", ",").split(",") if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or H,W, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    raise argparse.ArgumentTypeError(f"expected N or H,W, got {text!r}")


def randaugment(text: str) -> tuple[int, float] | None:
    """Parses --randaugment "N,M" (ops per image, magnitude in [0, 1]) or "off"."""
    if text.lower() in ("off", "none", "0"):
        return None
    try:
        n, m = text.split(",")
        return int(n), float(m)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,M such as 2,0.5; got {text!r}") from None


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--dataset and where its data lives."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="'digits' (embedded, default), an image folder "
                   "(one sub-folder per class), or a TFDS name such as cifar10")
    g.add_argument("--data-dir", help="TFDS data directory")
    g.add_argument("--val-fraction", type=float,
                   help="folders without a val/ split: share held out for validation (0.1)")
    g.add_argument("--test-fraction", type=float,
                   help="folders without a test/ split: share held out for test (0.2)")
    g.add_argument("--split-seed", type=int,
                   help="seed of the held-out validation/test shares (0); keep it fixed")
    g.add_argument("--batch-size", type=int, help="global batch size")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model and the architecture overrides named like ViT()'s arguments."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="variant name, e.g. ViTB16, ViTS16, ViTTi16, or a later "
                   "ViT: DINOv2S14, DINOv2S14Reg4, SigLIPB16, MAEB16, DeiT3S16, ... "
                   "(default: ViTB16; a small custom ViT for digits)")
    g.add_argument("--image-size", type=size_pair, help="input resolution, N or H,W")
    g.add_argument("--patch-size", type=size_pair, help="patch size, N or H,W")
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--num-layers", type=int)
    g.add_argument("--num-heads", type=int)
    g.add_argument("--mlp-dim", type=int)
    g.add_argument("--classifier", choices=CLASSIFIERS)
    g.add_argument("--position-embedding", choices=POSITION_EMBEDDINGS)
    g.add_argument("--representation-size", type=int)
    g.add_argument("--dropout-rate", type=float)
    g.add_argument("--attention-dropout-rate", type=float)
    g.add_argument("--stochastic-depth-rate", type=float)
    g.add_argument("--include-preprocessing", type=_bool,
                   help="true: the model takes [0,255] pixels (default); false: [-1,1]")
    g.add_argument("--remat", action="store_true", default=argparse.SUPPRESS,
                   help="rematerialise the encoder blocks: recompute their activations in "
                   "the backward pass (much less memory, about one more forward pass per step)")


def add_fit_options(p: argparse.ArgumentParser) -> None:
    """Optimisation, schedule, augmentation and run-control options."""
    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the training split")
    length.add_argument("--steps", type=int, help="total optimizer steps (instead of --epochs)")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--optimizer", choices=("adamw", "sgd"))
    g.add_argument("--weight-decay", type=float, help="decoupled weight decay (train 0.1, "
                   "digits 0.3; finetune 0)")
    g.add_argument("--weight-decay-on", choices=("kernels", "all"),
                   help="kernels (default): only weight matrices decay, not biases, norms, "
                   "position embeddings or tokens (big_vision's rule); all: every variable")
    g.add_argument("--layer-decay", type=float, metavar="FACTOR",
                   help="layer-wise learning-rate decay for fine-tuning, e.g. 0.75: block i of L "
                   "learns at FACTOR^(L-i) x lr, the embeddings at FACTOR^(L+1), the head at lr "
                   "(off)")
    g.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    g.add_argument("--beta-1", type=float)
    g.add_argument("--beta-2", type=float)
    g.add_argument("--clipnorm", type=float, help="global gradient-norm clip (1.0); 0 disables")
    g.add_argument("--decay", choices=("cosine", "linear"), help="decay after warmup")
    g.add_argument("--warmup-steps", type=int, help="linear warmup steps "
                   "(default: 10%% of the run, at most 10k train / 500 finetune)")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--ema", type=float, metavar="MOMENTUM",
                   help="keep an exponential moving average of the weights (e.g. 0.999) "
                   "and use it as the final model; 0 = off")

    a = p.add_argument_group("augmentation")
    a.add_argument("--crop-min-area", type=float,
                   help="inception crop's smallest area share (paper 0.05); 1 disables the crop")
    a.add_argument("--flip", type=_bool, help="random horizontal flips (default: on, off for digits)")
    a.add_argument("--randaugment", type=randaugment, help="N,M: Keras RandAugment (off)")
    a.add_argument("--mixup", type=float, help="MixUp alpha (0 = off)")
    a.add_argument("--cutmix", type=float, help="CutMix alpha (0 = off)")
    a.add_argument("--augment", action="append", metavar="LAYER",
                   help="an augmentation layer applied to training batches in tf.data, by class "
                   "path with optional keyword arguments, e.g. keras_cv.layers.AugMix or "
                   "'keras_cv.layers.RandAugment(magnitude=0.3)' (keras-cv: the cv extra) or "
                   "keras.layers.RandomErasing; repeat for several")

    r = p.add_argument_group("run")
    r.add_argument("--output", help="run directory (checkpoints, logs, metrics.json)")
    r.add_argument("--resume", action="store_true", default=argparse.SUPPRESS,
                   help="continue the interrupted run in --output from its last completed epoch")
    r.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also save the whole model to OUTPUT/checkpoint.keras every N epochs "
                   "(1; the --resume state is committed after every epoch regardless)")
    r.add_argument("--steps-per-execution", type=int, metavar="N",
                   help="training steps run per call into the compiled function (Keras' "
                   "steps_per_execution; 1; must divide the steps of an epoch). Larger values "
                   "save the per-step dispatch cost of small models; batch-level callbacks "
                   "then see every N-th batch")
    r.add_argument("--seed", type=int, help="seed of initialisation, shuffling and augmentation")
    precision = r.add_mutually_exclusive_group()
    precision.add_argument("--mixed-precision", nargs="?", const="auto", choices=MIXED_PRECISION,
                           help="compute in float16 (GPU) / bfloat16 (CPU); 'auto' picks")
    precision.add_argument("--dtype", dest="mixed_precision", type=_dtype_policy,
                           metavar="{float32,mixed_bfloat16,mixed_float16}",
                           help="the Keras dtype policy, another spelling of --mixed-precision "
                           "(LayerNorm statistics, softmax and the head stay float32)")
    r.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress output")


def add_saved_model_options(p: argparse.ArgumentParser) -> None:
    """Options of evaluate/predict: which saved model."""
    p.add_argument("--output", help="run directory written by train/finetune "
                   "(its model.keras and config.json are used)")
    p.add_argument("--model-path", help="a saved .keras model (default: OUTPUT/model.keras)")


def add_keep_aspect_option(p: argparse.ArgumentParser) -> None:
    """--keep-aspect of evaluate/predict (applications/any_size.py)."""
    p.add_argument("--keep-aspect", action="store_true",
                   help="a model of any image size: each image at its own aspect ratio, the "
                   "shorter side at the model's size, both sides rounded to the patch")


def _dtype_policy(text: str) -> str | None:
    """--dtype float32 | mixed_bfloat16 | mixed_float16 (or bfloat16/float16) -> --mixed-precision."""
    name = text.lower().removeprefix("mixed_")
    if name == "float32":
        return None
    if name not in MIXED_PRECISION:
        raise argparse.ArgumentTypeError(
            f"expected float32, mixed_bfloat16 or mixed_float16; got {text!r}")
    return name


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
