"""`keras-vit export MODEL --format {saved_model,onnx,litert} OUT`: a model ready to serve.

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
    p.add_argument("out", metavar="OUT", help="output file (.onnx, .tflite) or folder (SavedModel)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--outputs", default="model", choices=OUTPUTS,
                   help="'model': the head as trained; or force logits / probabilities")
    return p


def run(args, log=print) -> int:
    from applications.options import UsageError
    from keras_vit.export import export_model

    path = os.path.join(args.model, "model.keras") if os.path.isdir(args.model) else args.model
    if not os.path.isfile(path):
        raise UsageError(f"No saved model at {path!r}.")
    export_model(path, args.out, args.format, outputs=args.outputs)
    log(f"wrote {args.out} ({args.format})")
    return EXIT_OK
