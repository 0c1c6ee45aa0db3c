"""`keras-vit`: train, fine-tune, evaluate and predict with Vision Transformers.

    keras-vit train    --dataset digits --output runs/digits
    keras-vit finetune --dataset cifar10 --model ViTB16 --weights ViT-B_16.npz
    keras-vit evaluate --output runs/digits [--split test]
    keras-vit predict  --output runs/digits image.png ...
    keras-vit fewshot  runs/digits --shots 1,5,10,25

The backend is chosen with the KERAS_BACKEND environment variable
(tensorflow, jax or torch). Exit codes: 0 success, 1 failure, 2 bad input
(the message lists valid choices), 3 training stopped on a NaN loss.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from applications import options

EXIT_USAGE = 2
# What installs TensorFlow for the programs: the plain packages (the tf extra's), or the extra
# from a clone (the distribution, keras3-vit, is not on the package index yet).
TF_INSTALL = ('pip install "tensorflow>=2.21" tensorflow-datasets tensorboard (or, in a clone '
              'of keras-vit: pip install -c constraints.txt ".[tf,jax]")')

# Subcommands living in their own module, each with `add_parser(subparsers)` and `run(args)`.
MODULE_COMMANDS = ("pretrain", "ablate", "visualize", "export", "convert", "fewshot")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-vit",
        description=__doc__.split("\n\n")[0],
        epilog="Backend: set KERAS_BACKEND=tensorflow|jax|torch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_text in (
        ("train", "train from scratch (paper's pre-training recipe: AdamW, warmup + decay)"),
        ("finetune", "fine-tune pretrained weights (paper's recipe: SGD momentum, new head)"),
    ):
        p = sub.add_parser(name, help=help_text, argument_default=argparse.SUPPRESS)
        options.add_data_options(p)
        options.add_model_options(p)
        options.add_fit_options(p)
        from applications import distributed  # noqa: PLC0415 (keeps --help light)

        distributed.add_options(p)
        if name == "finetune":
            src = p.add_mutually_exclusive_group()
            src.add_argument("--weights", help="pretrained weights: an official .npz, a "
                             ".weights.h5 or .keras file, or a name in $KERAS_VIT_WEIGHTS")
            src.add_argument("--init", help="a saved .keras model to start from")

    ev = sub.add_parser("evaluate", help="top-1/top-5 accuracy of a saved model on a split")
    options.add_saved_model_options(ev)
    ev.add_argument("--dataset", help="default: the dataset the model was trained on")
    ev.add_argument("--data-dir")
    ev.add_argument("--split", default="test", choices=("train", "validation", "test"))
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--verbose", type=int, choices=(0, 1, 2))
    options.add_keep_aspect_option(ev)

    pr = sub.add_parser("predict", help="top-5 labels of images")
    options.add_saved_model_options(pr)
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--top", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="one JSON object per image")
    options.add_keep_aspect_option(pr)

    import importlib

    for name in MODULE_COMMANDS:
        importlib.import_module(f"applications.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line `argv` (default: sys.argv[1:]); returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ logs quiet
    with _native_stderr_silenced():  # the parsers import keras, and so TensorFlow on its backend
        parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "export" and args.out is None and len(extra) == 1 \
            and not extra[0].startswith("-"):
        # `export MODEL --format F OUT`: argparse gives an optional positional its (empty)
        # value at MODEL, before it reaches OUT.
        args.out, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with _native_stderr_silenced():
            import tensorflow as tf  # (tf.data feeds every backend)

            tf.config.list_physical_devices()  # probes CUDA here, where its notices are silenced
    except ImportError:
        print(f"keras-vit {args.command}: error: the keras-vit programs read data with tf.data "
              "and need TensorFlow, which is not installed here (the library itself does not): "
              + TF_INSTALL, file=sys.stderr)
        return EXIT_USAGE
    import tf_data  # after parsing: --help needs no TensorFlow

    try:
        if args.command in ("train", "finetune"):
            return _fit(args)
        if args.command in MODULE_COMMANDS:
            import importlib

            return importlib.import_module(f"applications.{args.command}").run(args)
        if args.command == "evaluate":
            from applications import evaluate

            return evaluate.run(args)
        from applications import predict

        return predict.run(args)
    except (options.UsageError, tf_data.DataError) as e:
        print(f"keras-vit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


@contextlib.contextmanager
def _native_stderr_silenced():
    """Discards what C++ code writes to the process's stderr (file descriptor 2) meanwhile.

    TensorFlow's start-up lines on a machine without a GPU ("Could not find cuda drivers",
    "failed call to cuInit", absl's "All log messages before absl::InitializeLog()") are
    written by C++ logging that ignores TF_CPP_MIN_LOG_LEVEL; a CPU user of every backend saw
    them before each command's output. Python exceptions are unaffected: they are raised, and
    printed after the descriptor is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fit(args: argparse.Namespace) -> int:
    from applications import config as config_lib
    from applications import distributed, training

    explicit = {k: v for k, v in vars(args).items() if k != "command"}
    resume = explicit.pop("resume", False)
    batch_size_given = "batch_size" in explicit
    distribution = distributed.Options.pop_from(explicit)  # per process; not in config.json
    if resume:
        if "output" not in explicit:
            raise options.UsageError("--resume needs --output DIR of the run to continue.")
        if os.path.exists(os.path.join(explicit["output"], config_lib.CONFIG_FILE)):
            config = training.resume_config(explicit["output"], explicit)
            batch_size_given = True  # the batch size its config.json records
        else:
            print(f"--resume: no run in {explicit['output']} yet; starting a new one.")
            config = config_lib.resolve(args.command, explicit)
    else:
        config = config_lib.resolve(args.command, explicit)
    _validate(config)
    training.check_not_usage(config)
    return training.run(config, resume=resume, distribution=distribution,
                        batch_size_given=batch_size_given)


def _validate(config) -> None:
    """Range checks of numeric options, with the valid range in the message."""
    checks = [
        ("batch_size", config.batch_size >= 1, ">= 1"),
        ("checkpoint_every", config.checkpoint_every >= 1, ">= 1"),
        ("steps_per_execution", config.steps_per_execution >= 1, ">= 1"),
        ("lr", config.lr > 0, "> 0"),
        ("weight_decay", config.weight_decay >= 0, ">= 0"),
        ("layer_decay", config.layer_decay is None or 0 < config.layer_decay <= 1, "in (0, 1]"),
        ("crop_min_area", 0 < config.crop_min_area <= 1, "in (0, 1]"),
        ("mixup", config.mixup >= 0, ">= 0"),
        ("cutmix", config.cutmix >= 0, ">= 0"),
        ("dropout_rate", 0 <= config.dropout_rate < 1, "in [0, 1)"),
    ]
    for name, ok, valid in checks:
        if not ok:
            raise options.UsageError(
                f"--{name.replace('_', '-')} {getattr(config, name)!r} is invalid; must be {valid}."
            )


if __name__ == "__main__":
    sys.exit(main())
