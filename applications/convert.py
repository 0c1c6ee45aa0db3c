"""`keras-vit convert SRC DST.weights.h5 --model VARIANT`: any supported checkpoint -> Keras weights.

SRC is a checkpoint path (official / big_vision `.npz`, HF transformers directory or
`.safetensors` / `.bin`, timm `.safetensors` / `.bin` / `.pth`) or a registry name for the
variant (`imagenet`, `imagenet21k`, ...; see `keras_vit.list_weights`). The model is built at
the checkpoint's own resolution unless `--image-size` says otherwise (then the position
embedding is resampled), loaded through `keras_vit`'s checked loader, and saved with
`model.save_weights`. The command prints the constructor call that rebuilds the same model for
`weights="DST.weights.h5"` (a `.weights.h5` file stores no architecture).

    keras-vit convert ./vit-base-patch16-224 vit_b16_hf.weights.h5 --model ViTB16
    keras-vit convert imagenet vit_b16.weights.h5 --model ViTB16 --image-size 224
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_GELU = {"auto": None, "tanh": True, "erf": False}


def add_parser(subparsers):
    """Adds the `convert` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint (official/big_vision .npz, HF, timm, registry name) to "
             "a Keras .weights.h5",
        description=__doc__.split("\n\n")[0],
    )
    configure_parser(p)
    return p


def configure_parser(p):
    p.add_argument("src", metavar="SRC", help="checkpoint path or registry name (with --model)")
    p.add_argument("dst", metavar="DST", help="output file, ending in .weights.h5")
    p.add_argument("--model", required=True, metavar="VARIANT",
                   help="architecture: ViTTi16, ViTS16, ViTS32, ViTB8, ViTB16, ViTB32, ViTL16, "
                        "ViTL32, ViTH14, ViTR50B16 (also 'B/16', 'ViT-B_16', ...), or a later "
                        "ViT: DINOv2S14/B14/L14 (+Reg4), SigLIPB16, SigLIPSo400m14, "
                        "MAEB16/L16/H14, DeiT3S16/B16/L16")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: the checkpoint's native resolution)")
    p.add_argument("--no-top", action="store_true",
                   help="drop pre_logits and the classifier (include_top=False)")
    p.add_argument("--classes", type=int, default=None,
                   help="head width (default: the checkpoint's; other values need --head new)")
    p.add_argument("--head", choices=("checkpoint", "new"), default=None,
                   help="'new': keep everything but the classifier, add a zero-initialised one")
    p.add_argument("--gelu", choices=tuple(_GELU), default="auto",
                   help="GELU of the model: auto (what the weights were trained with), "
                        "tanh (official), erf (HF/timm)")
    p.add_argument("--pos-embed-resample", default=None,
                   choices=("official", "bicubic", "bicubic_no_antialias", "dinov2"),
                   help="resampling when --image-size differs (default: the source's own)")
    p.add_argument("--patch-size", type=int, default=None,
                   help="another patch size than the variant's (needs --patch-embed-resample)")
    p.add_argument("--patch-embed-resample", choices=("pi", "pi_bicubic"), default=None,
                   help="how the patch embedding is resampled to --patch-size: FlexiViT's "
                        "PI-resize of a bilinear (pi) or bicubic (pi_bicubic) patch resize")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    return p


def _checkpoint_facts(src, arch):
    """(native image size, head classes, representation size) of a file or registry entry."""
    from keras_vit.formats import read_checkpoint
    from keras_vit.weights import loading

    if os.path.exists(src):
        ckpt = read_checkpoint(src, num_heads=arch["num_heads"])
        if ckpt.format == "keras":
            raise ValueError(f"{src} is already a Keras weights file.")
        return loading.native_image_size(ckpt, arch), ckpt.num_classes, ckpt.head_is_zero
    entry = loading.registry_entry(src, arch)
    return entry.resolution, entry.num_classes, not entry.head_usable


def run(args) -> int:
    """Runs `convert` for parsed `args`; returns the exit code (errors go to stderr)."""
    try:
        return _run(args)
    except (ValueError, OSError) as error:
        print(f"keras-vit convert: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, ValueError) else EXIT_FAILURE


def _run(args) -> int:
    import keras_vit
    from keras_vit.weights.registry import canonical_variant

    if not args.dst.endswith(".weights.h5"):
        raise ValueError(f"DST must end with .weights.h5 (Keras' weights format), got {args.dst!r}.")
    if os.path.exists(args.dst) and not args.overwrite:
        raise ValueError(f"{args.dst} exists; pass --overwrite to replace it.")
    variant = canonical_variant(args.model)
    arch = {**keras_vit.VARIANTS, **keras_vit.FAMILY_VARIANTS}[variant]
    native, ckpt_classes, zero_head = _checkpoint_facts(args.src, arch)
    include_top = not args.no_top
    head = args.head
    if include_top and ckpt_classes is None and head is None and args.classes is None:
        # A backbone (DINOv2, SigLIP, MAE): nothing to classify with; its features are kept.
        print(f"{args.src} has no classification head: writing the backbone (include_top=False).")
        include_top = False
    if include_top and head is None and zero_head:
        raise ValueError(
            f"{args.src} has a zeroed ImageNet-21k head that is no classifier: pass --no-top, "
            "or --head new --classes K."
        )
    classes = args.classes if args.classes is not None else (ckpt_classes or 1000)
    kwargs = dict(
        include_top=include_top,
        weights=args.src,
        classes=classes,
        classifier_activation=None,
        head=head,
        gelu_approximate=_GELU[args.gelu],
        pos_embed_resample=args.pos_embed_resample,
    )
    if args.patch_size is not None:
        kwargs.update(patch_size=args.patch_size, patch_embed_resample=args.patch_embed_resample)
    elif args.patch_embed_resample is not None:
        raise ValueError("--patch-embed-resample applies with --patch-size only.")
    image_size = args.image_size or native
    if image_size:
        kwargs["image_size"] = image_size
    if arch.get("classifier") == "map" and not include_top:
        kwargs["pooling"] = "map"  # SigLIP's pooled output is part of its backbone
    model = getattr(keras_vit, variant)(**kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    model.save_weights(args.dst, overwrite=True)

    blocks = [layer for layer in model.layers if isinstance(layer, keras_vit.TransformerBlock)]
    rebuild = dict(
        image_size=model.input_shape[1],
        patch_size=args.patch_size,
        include_top=include_top,
        pooling=kwargs.get("pooling"),
        classes=classes if include_top else None,
        representation_size=(model.get_layer("pre_logits").units
                             if "pre_logits" in {l.name for l in model.layers} else None),
        gelu_approximate=blocks[0].gelu_approximate,
    )
    shown = ", ".join(f"{k}={v!r}" for k, v in rebuild.items() if v is not None)
    print(f"Saved {args.dst} ({len(model.weights)} arrays, {model.count_params():,} parameters).")
    print(f"Rebuild with: keras_vit.{variant}({shown}, weights={args.dst!r})")
    return EXIT_OK


def main(argv=None) -> int:
    """Standalone entry point: `python -m applications.convert SRC DST --model VARIANT`."""
    parser = configure_parser(argparse.ArgumentParser(prog="keras-vit convert",
                                                      description=__doc__.split("\n\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
