"""`keras-vit visualize MODEL IMAGE... --output DIR`: the paper's Fig. 6-7 for a model.

MODEL is a saved `.keras` model or a run directory of `keras-vit train/finetune`. Writes into
DIR: `mean_attention_distance.png` (Fig. 7 right), `position_similarity.png` (Fig. 7 centre,
for learned absolute embeddings), `embedding_filters.png` (Fig. 7 left), and per image a
rollout overlay (`rollout_<name>.png`, Fig. 6) and the last layer's class-token attention per
head (`heads_<name>.png`), plus `analysis.json` with the numbers behind the plots.
"""

from __future__ import annotations

import json
import os

import numpy as np

EXIT_OK, EXIT_FAILURE = 0, 1


def add_parser(subparsers):
    p = subparsers.add_parser("visualize", help="attention maps, rollout, attention distance, "
                              "position similarity and filters of a model, as PNGs",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="a .keras file or a run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--output", required=True, help="folder for the figures")
    p.add_argument("--format", default="png", choices=("png", "svg"))
    return p


def load_images(paths, size, include_preprocessing, log=print):
    """Decodes, resizes (the evaluation preprocessing) and scales images; skips unreadable ones."""
    import tensorflow as tf

    import tf_data

    images, names = [], []
    for path in paths:
        try:
            image = tf_data.decode_image(tf.io.read_file(path))
        except (tf.errors.OpError, ValueError):
            log(f"{path}: cannot read image; skipped")
            continue
        image = tf.clip_by_value(tf.image.resize(tf.cast(image, tf.float32), size), 0, 255)
        images.append(image.numpy())
        names.append(os.path.splitext(os.path.basename(path))[0])
    if not images:
        return None, None, names
    raw = np.stack(images)
    scaled = raw if include_preprocessing else raw / 127.5 - 1.0
    return raw, scaled, names


def run(args, log=print) -> int:
    from applications import saved
    from keras_vit import analysis
    from keras_vit.analysis import plots

    model_path = args.model if os.path.isfile(args.model) else None
    loaded = saved.load(None if model_path else args.model, model_path)
    model = loaded.model
    raw, images, names = load_images(args.images, loaded.image_size, loaded.include_preprocessing, log)
    if images is None:
        log("No readable image.")
        return EXIT_FAILURE
    os.makedirs(args.output, exist_ok=True)
    ext = args.format
    out = lambda name: os.path.join(args.output, f"{name}.{ext}")
    written = []

    rows, cols, prefix, pixels = analysis.token_layout(model, loaded.image_size)
    attention = analysis.attention_maps(model, images)
    distance = analysis.mean_attention_distance(attention, rows, cols, pixels, prefix)
    written.append(plots.plot_mean_attention_distance(distance, out("mean_attention_distance"),
                                                      image_size=max(loaded.image_size)))
    summary = {"mean_attention_distance_pixels": distance.round(3).tolist()}
    try:
        similarity = analysis.position_embedding_similarity(model)
        written.append(plots.plot_position_similarity(similarity, out("position_similarity")))
    except ValueError as e:  # relative / no position embedding
        log(f"position similarity skipped: {e}")
    tiles, explained = analysis.patch_embedding_filters(model)
    written.append(plots.plot_filters(tiles, out("embedding_filters"), explained))
    summary["filter_explained_variance"] = explained.round(4).tolist()

    rollout = analysis.rollout_maps(model, images, attention=attention)
    probs = model.predict(images, verbose=0)
    class_names = loaded.class_names()
    for i, name in enumerate(names):
        label = class_names[int(np.argmax(probs[i]))]
        written.append(plots.plot_attention_overlay(raw[i], rollout[i], out(f"rollout_{name}"),
                                                    title=f"predicted: {label}"))
    if prefix:
        heads = analysis.last_layer_class_attention(model, images, attention=attention)
        for i, name in enumerate(names):
            written.append(plots.plot_head_maps(heads[i], out(f"heads_{name}")))
    with open(os.path.join(args.output, "analysis.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for path in written:
        log(f"wrote {path}")
    return EXIT_OK
