"""`keras-vit export MODEL --format {saved_model,onnx,litert}[,...] [OUT]`: models ready to serve.

MODEL is a `.keras` file or a run directory of `keras-vit train/finetune`, trained on any
backend. The signature takes float32 images (B, H, W, C) in [0, 255] (or [-1, 1] for models
built with include_preprocessing=False) and returns the head's output (`--outputs logits` or
`probabilities` to choose).
"""

from __future__ import annotations

import os

EXIT_OK = 0


def add_parser(subparsers):
    from keras_vit.export import FORMATS, OUTPUTS

    p = subparsers.add_parser("export", help="export a model to SavedModel, ONNX or LiteRT",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="a .keras file or a run directory")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="output file (.onnx, .tflite) or folder (SavedModel); default: in the "
                   "run directory (model.onnx, model.tflite, saved_model/)")
    p.add_argument("--format", required=True, type=_formats, metavar="{" + ",".join(FORMATS) + "}",
                   help="one format, or several separated by commas (then without OUT)")
    p.add_argument("--outputs", default="model", choices=OUTPUTS,
                   help="'model': the head as trained; or force logits / probabilities")
    return p


def _formats(text):
    import argparse

    from keras_vit.export import FORMATS

    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(text)}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(chosen))


def run(args, log=print) -> int:
    from applications.options import UsageError
    from keras_vit.export import export_models

    from keras_vit.export import check_path, default_path

    path = os.path.join(args.model, "model.keras") if os.path.isdir(args.model) else args.model
    if not os.path.isfile(path):
        raise UsageError(f"No saved model at {path!r}.")
    if args.out and len(args.format) > 1:
        raise UsageError("OUT names one export; with several formats leave it out (each goes "
                         "beside the model: model.onnx, model.tflite, saved_model/).")
    directory = os.path.dirname(os.path.abspath(path))
    paths = {f: args.out or default_path(directory, f) for f in args.format}
    try:
        for format, out in paths.items():
            check_path(out, format)
    except ValueError as error:
        raise UsageError(str(error)) from None
    export_models(path, paths, outputs=args.outputs)
    for format, out in paths.items():
        log(f"wrote {out} ({format})")
    return EXIT_OK
