"""`keras-vit fewshot MODEL --dataset D --shots 1,5,10,25`: the paper's few-shot linear accuracy.

Frozen features of MODEL (a `.keras` file or a run directory of `keras-vit train/finetune`;
a `keras-vit pretrain` backbone too) on the dataset's training split (the shots are drawn
from it) and test split (the accuracy is measured on it): the closed-form regularised least
squares onto {-1, 1}^K targets for each shot count, over several draws of the shots (mean and
standard deviation), as big_vision's `fewshot_lsr` evaluator (regulariser 2^10, 3 seeds);
beside it a logistic-regression linear probe on the whole training split and DINO's k-NN
accuracy (k = 20, temperature 0.07). Prints a table and writes it as JSON with `--json FILE`.
"""

from __future__ import annotations

import os
import time

EXIT_OK = 0


def add_parser(subparsers):
    from keras_vit.evaluation import KNN_K, KNN_TEMPERATURE, L2_REG
    from keras_vit.layers.pooling import POOLINGS

    p = subparsers.add_parser("fewshot", help="few-shot linear, linear-probe and k-NN accuracy "
                              "of a model's frozen features", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="a .keras file or a run directory")
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--data-dir")
    p.add_argument("--shots", default="1,5,10,25", help="images per class, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="draws of the shots (3)")
    p.add_argument("--l2-reg", type=float, default=L2_REG,
                   help="ridge penalty of the least squares (big_vision: 1024)")
    p.add_argument("--layer", type=int, help="an encoder block's output (from 0; negative from "
                   "the end) instead of the model's own representation")
    p.add_argument("--pooling", choices=POOLINGS, help="pooling of the tokens (default: the "
                   "class token if the model has one, else the average)")
    p.add_argument("--norm", action="store_true",
                   help="with --layer: apply the final LayerNorm to the block's tokens")
    p.add_argument("--knn-k", type=int, default=KNN_K, help="k-NN neighbours (20; 0: skip)")
    p.add_argument("--knn-temperature", type=float, default=KNN_TEMPERATURE)
    p.add_argument("--probe-c", type=float, default=1.0,
                   help="inverse regularisation of the linear probe (1; 0: skip the probe)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    return p


def parse_shots(text: str) -> tuple[int, ...]:
    from applications.options import UsageError

    try:
        shots = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        shots = ()
    if not shots or min(shots) < 1:
        raise UsageError(f"--shots {text!r} is invalid; give positive integers such as 1,5,10,25.")
    return tuple(sorted(set(shots)))


def run(args, log=print) -> int:
    import keras
    import numpy as np

    import tf_data
    from applications import saved
    from applications.options import UsageError
    from keras_vit import evaluation

    shots = parse_shots(args.shots)
    for name, ok, valid in (("seeds", args.seeds >= 1, ">= 1"),
                            ("l2-reg", args.l2_reg > 0, "> 0"),
                            ("knn-k", args.knn_k >= 0, ">= 0"),
                            ("knn-temperature", args.knn_temperature > 0, "> 0"),
                            ("probe-c", args.probe_c >= 0, ">= 0"),
                            ("batch-size", args.batch_size >= 1, ">= 1")):
        if not ok:
            raise UsageError(f"--{name} {getattr(args, name.replace('-', '_'))} is invalid; "
                             f"must be {valid}.")
    is_file = os.path.isfile(args.model)
    if not is_file and not os.path.isdir(args.model):
        raise UsageError(f"No model at {args.model!r} (give a .keras file or a run directory).")
    loaded = saved.load(None if is_file else args.model, args.model if is_file else None)
    dataset = args.dataset or loaded.run.get("dataset")
    if not dataset:
        raise UsageError("The model has no run config.json; pass --dataset.")
    try:
        representation = evaluation.representation_model(
            loaded.model, layer=args.layer, pooling=args.pooling, norm=args.norm)
    except ValueError as e:
        raise UsageError(str(e)) from e
    source = tf_data.load_source(
        dataset, data_dir=args.data_dir or loaded.run.get("data_dir"),
        val_fraction=loaded.run.get("val_fraction", 0.1),
        test_fraction=loaded.run.get("test_fraction", 0.2),
        split_seed=loaded.run.get("split_seed", 0))
    config = tf_data.PipelineConfig(image_size=loaded.image_size, batch_size=args.batch_size,
                                    include_preprocessing=loaded.include_preprocessing)
    start = time.time()
    features = {role: evaluation.extract(
        representation, tf_data.build_dataset(source, role, config, training=False))
        for role in ("train", "test")}
    (train_x, train_y), (test_x, test_y) = features["train"], features["test"]
    counts = np.bincount(train_y, minlength=source.num_classes)
    if max(shots) > counts.min():
        raise UsageError(f"--shots {max(shots)} is more than the {int(counts.min())} training "
                         f"images of class {source.class_names[int(counts.argmin())]!r}; use "
                         f"at most {int(counts.min())}.")
    result = evaluation.fewshot_accuracy(train_x, train_y, test_x, test_y, shots, args.seeds,
                                         args.l2_reg, source.num_classes)
    report = {
        "model": loaded.path, "dataset": dataset, "backend": keras.backend.backend(),
        "layer": args.layer, "pooling": args.pooling, "norm": args.norm,
        "feature_dim": int(train_x.shape[1]), "train_images": len(train_y),
        "test_images": len(test_y), "l2_reg": args.l2_reg, "seeds": args.seeds,
        "fewshot": {str(s): r for s, r in result.items()},
    }
    if args.probe_c > 0:
        report["linear_probe"], _ = evaluation.linear_probe(train_x, train_y, test_x, test_y,
                                                            C=args.probe_c)
    if args.knn_k > 0:
        report["knn"] = evaluation.knn_accuracy(train_x, train_y, test_x, test_y, args.knn_k,
                                                args.knn_temperature)
        report["knn_k"], report["knn_temperature"] = args.knn_k, args.knn_temperature
    report["seconds"] = round(time.time() - start, 1)
    log(table(report))
    if args.json:
        from applications.run_files import write_json_atomic

        write_json_atomic(args.json, report)
    return EXIT_OK


def table(report: dict) -> str:
    """The report as a markdown table (accuracies in %)."""
    lines = [f"{report['model']} on {report['dataset']} ({report['train_images']} training, "
             f"{report['test_images']} test images; {report['feature_dim']}-d features)", "",
             "| evaluation | accuracy (%) |", "|---|---|"]
    for shots, r in report["fewshot"].items():
        runs = ", ".join(f"{100 * a:.1f}" for a in r["accuracies"])
        lines.append(f"| {shots}-shot linear, {len(r['accuracies'])} seeds | "
                     f"{100 * r['mean']:.2f} +- {100 * r['std']:.2f} ({runs}) |")
    if "linear_probe" in report:
        lines.append(f"| linear probe (logistic regression) | {100 * report['linear_probe']:.2f} |")
    if "knn" in report:
        lines.append(f"| {report['knn_k']}-NN (DINO, T={report['knn_temperature']:g}) | "
                     f"{100 * report['knn']:.2f} |")
    return "\n".join(lines)

