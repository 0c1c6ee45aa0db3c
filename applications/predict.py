"""`keras-vit predict IMAGE...`: the top-5 classes of each image."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

import tf_data
from applications import any_size, saved


def run(args, log=print) -> int:
    """Prints the top-k labels and probabilities per image.

    Unreadable images are reported and skipped.

    Returns:
        0 when every image was read, 1 otherwise.
    """
    loaded = saved.load(args.output, args.model_path)
    keep_aspect = getattr(args, "keep_aspect", False)
    if keep_aspect:
        short, multiple = any_size.check_model(loaded)
    names = loaded.class_names()
    k = min(args.top, loaded.num_classes)
    images, paths, failed = [], [], []
    for path in args.images:
        try:
            image = tf_data.decode_image(tf.io.read_file(path))
        except (tf.errors.OpError, ValueError) as e:
            failed.append(path)
            reason = str(e).splitlines()[0].split("}} ")[-1].split(" [Op:")[0]
            log(f"{path}: cannot read image ({reason}); skipped")
            continue
        # The evaluation preprocessing: resize the whole image (or keep its aspect), then scale.
        if keep_aspect:
            image = any_size.resize_keeping_aspect(image, short, multiple)
        else:
            image = tf.image.resize(tf.cast(image, tf.float32), loaded.image_size)
        images.append(tf_data.scale_for_model(tf.clip_by_value(image, 0, 255),
                                              loaded.include_preprocessing))
        paths.append(path)
    results = []
    if images:
        probs = _predict(loaded.model, images)
        for path, p in zip(paths, probs):
            top = np.argsort(-p)[:k]
            results.append({
                "image": path,
                "top": [{"label": names[i], "index": int(i), "probability": float(p[i])}
                        for i in top],
            })
    for r in results:
        if args.json:
            log(json.dumps(r))
        else:
            ranked = ", ".join(f"{t['label']} ({t['probability']:.3f})" for t in r["top"])
            log(f"{r['image']}: {ranked}")
    return 1 if failed else 0


def _predict(model, images):
    """Probabilities of images that may differ in size: one batch per size, in input order."""
    probs = [None] * len(images)
    by_size = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(i)
    for indices in by_size.values():
        batch = tf.stack([images[i] for i in indices]).numpy()
        for i, p in zip(indices, np.asarray(model.predict(batch, verbose=0))):
            probs[i] = p
    return probs
