"""The ops of keras_vit's TensorFlow graphs (no XLA), to tell a code change from timing noise.

Writes a histogram of ViT-S/16's training-gradient and inference graphs, every function in the
graph's library included, each op keyed by its type, attributes and input count (constant
values, names and custom-gradient ids left out). Two checkouts whose histograms are equal run
the same kernels in the same number, so a throughput difference between them is not the
model's code:

    PYTHONPATH=/path/to/old KERAS_BACKEND=tensorflow python benchmarks/tf_graph_ops.py old.json
    PYTHONPATH=. KERAS_BACKEND=tensorflow python benchmarks/tf_graph_ops.py new.json
    python benchmarks/tf_graph_ops.py --compare old.json new.json
"""

import argparse
import collections
import json
import os
import re
import sys

_SKIPPED_ATTRS = ("value", "_class", "_read_only_resource_inputs", "f", "config_proto",
                  "_XlaMustCompile", "shared_name", "_output_shapes")


def _key(node):
    attrs = [f"{k}={str(node.attr[k]).strip()}".replace("\n", " ")
             for k in sorted(node.attr) if k not in _SKIPPED_ATTRS]
    key = f"{node.op}|{';'.join(attrs)}|inputs={len(node.input)}"
    return re.sub(r"CustomGradient-\d+", "CustomGradient", key)


def histogram(concrete):
    graph_def = concrete.graph.as_graph_def()
    counts = collections.Counter(_key(n) for n in graph_def.node)
    for function in graph_def.library.function:
        counts.update(_key(n) for n in function.node_def)
    return counts


def write(path, batch_size):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import keras_vit  # noqa: PLC0415

    model = keras_vit.ViT(image_size=224, patch_size=16, hidden_size=384, num_layers=12,
                          num_heads=6, mlp_dim=1536, classes=1000, classifier_activation=None)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    images = tf.TensorSpec((batch_size, 224, 224, 3))

    @tf.function(jit_compile=False)
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function(jit_compile=False)
    def infer(x):
        return model(x, training=False)

    result = {"keras_vit": os.path.dirname(keras_vit.__file__),
              "train": histogram(train.get_concrete_function(
                  images, tf.TensorSpec((batch_size,), tf.int32))),
              "infer": histogram(infer.get_concrete_function(images))}
    with open(path, "w") as f:
        json.dump(result, f, indent=0, sort_keys=True)
    print(json.dumps({"keras_vit": result["keras_vit"],
                      **{k: sum(result[k].values()) for k in ("train", "infer")}}))


def compare(old_path, new_path):
    old, new = (json.load(open(p)) for p in (old_path, new_path))
    same = True
    for graph in ("train", "infer"):
        a, b = old[graph], new[graph]
        differences = [(k, a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))
                       if a.get(k, 0) != b.get(k, 0)]
        print(f"{graph}: {sum(a.values())} ops -> {sum(b.values())}; "
              f"{len(differences)} kinds differ")
        for key, before, after in differences:
            print(f"  {before:5d} -> {after:5d}  {key[:160]}")
        same &= not differences
    return same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="OUT.json, or with --compare OLD.json NEW.json")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.compare:
        if len(args.paths) != 2:
            parser.error("--compare takes OLD.json NEW.json")
        return 0 if compare(*args.paths) else 1
    if len(args.paths) != 1:
        parser.error("one output path")
    write(args.paths[0], args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
